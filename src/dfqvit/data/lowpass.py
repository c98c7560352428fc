"""A Gaussian low-pass of the calibration images: synthetic images lack the spectrum of photographs.

Images optimised against a classifier are nearly white noise at high frequencies. The 32 DFQ-ViT
images of the ImageNet ViT-Tiny have a radially averaged power spectrum falling as f^-0.94 over
4-100 cycles per image, where its real `calib/` images fall as f^-2.68 (natural images: about f^-2);
their mean absolute difference between neighbouring pixels is 8× the photographs'. The first
blocks' MLPs answer with 1.5-2.3× the token norms real images give, and every activation range
calibrated on them is set for that. Blurring the images with σ = 1 pixel brings them towards the
photographs' spectrum while keeping what they show at the scale of a 16-pixel patch; the range
statistics then transfer (measured in docs/results.md). σ is in pixels of the model's input.
"""
from __future__ import annotations

import math

import torch


def low_pass(images: torch.Tensor, sigma: float, batch_size: int = 64) -> torch.Tensor:
    """`images` (N, C, H, W) blurred by a Gaussian of standard deviation `sigma` pixels (reflected at the
    borders; kernel out to 3σ); σ = 0 returns them unchanged."""
    if sigma <= 0:
        return images
    from torchvision.transforms.functional import gaussian_blur

    size = 2 * math.ceil(3 * sigma) + 1
    return torch.cat([gaussian_blur(images[i:i + batch_size], [size, size], [sigma, sigma])
                      for i in range(0, len(images), batch_size)])
