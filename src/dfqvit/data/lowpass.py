"""A Gaussian low-pass of the calibration images: synthetic images may lack the spectrum of photographs.

Images optimised against a classifier can be nearly white noise at high frequencies. The 32 DFQ-ViT
images of the ImageNet ViT-Tiny have a radially averaged power spectrum falling as f^-0.94 over
4-100 cycles per image, where its real `calib/` images fall as f^-2.68 (photographs: about f^-2);
their mean absolute difference between neighbouring pixels is 8× the photographs'. The first
blocks' MLPs answer with 1.5-2.3× the token norms real images give, and every activation range
calibrated on them is set for that. Blurring the images takes that texture away and keeps what a
patch shows; the range statistics then transfer (measured in docs/results.md).

How much to blur is read off the images, not tuned on real data: `natural_sigma` takes the smallest
σ at which their spectrum falls at least as fast as a photograph's f^-2. Images that already do (the
CIFAR DeiT's DFQ-ViT images fall as f^-2.75) are left as they are. σ is in pixels of the model's input.
`auto_sigma` leaves models with patches under MIN_PATCH_PIXELS alone: there a pixel is a large part of
what one token sees, and the CIFAR Swin (2-pixel patches) lost with the low-pass its spectrum asked for.
"""
from __future__ import annotations

import math

import torch

NATURAL_SLOPE = -2.0  # power spectra of photographs fall about as f^-2 (scale invariance of natural images)
SIGMA_STEP, SIGMA_MAX = 0.05, 3.0  # the grid natural_sigma searches, in input pixels
SPECTRUM_IMAGES = 32  # how many of the images the spectrum is read from
MIN_PATCH_PIXELS = 8  # `auto` low-passes only for patches this wide or wider (measured: 16 gains, 2 loses)


def low_pass(images: torch.Tensor, sigma: float, batch_size: int = 64) -> torch.Tensor:
    """`images` (N, C, H, W) blurred by a Gaussian of standard deviation `sigma` pixels (reflected at the
    borders; kernel out to 3σ); σ = 0 returns them unchanged."""
    if sigma <= 0:
        return images
    from torchvision.transforms.functional import gaussian_blur

    size = 2 * math.ceil(3 * sigma) + 1
    return torch.cat([gaussian_blur(images[i:i + batch_size], [size, size], [sigma, sigma])
                      for i in range(0, len(images), batch_size)])


def radial_power(images: torch.Tensor) -> torch.Tensor:
    """Mean power of the grey (channel-mean) images' 2-D spectrum per integer radius in cycles per image,
    the constant term first. Square images; a per-channel affine normalisation only shifts it in log."""
    grey = images.detach().float().mean(1)
    grey = grey - grey.mean(dim=(1, 2), keepdim=True)
    power = torch.fft.fftshift(torch.fft.fft2(grey), dim=(-2, -1)).abs().pow(2).mean(0)
    h, w = power.shape
    yy, xx = torch.meshgrid(torch.arange(h) - h // 2, torch.arange(w) - w // 2, indexing="ij")
    radius = (yy**2 + xx**2).float().sqrt().round().long()
    top = min(h, w) // 2
    keep = radius <= top
    total = torch.zeros(top + 1).index_add_(0, radius[keep], power[keep].cpu())
    count = torch.zeros(top + 1).index_add_(0, radius[keep], torch.ones(int(keep.sum())))
    return total / count.clamp(min=1)


def spectral_slope(images: torch.Tensor, lowest: int = 4) -> float:
    """Least-squares slope of log power against log frequency, from `lowest` cycles per image to 90 % of the
    highest radius (~45 % of the sampling rate): about −2 for photographs."""
    power = radial_power(images)
    f = torch.arange(len(power)).float()
    highest = max(lowest + 2, int(0.9 * (len(power) - 1)))
    sel = (f >= lowest) & (f <= highest)
    a = torch.stack([f[sel].log(), torch.ones(int(sel.sum()))], 1)
    return float(torch.linalg.lstsq(a, power[sel].clamp(min=1e-30).log().unsqueeze(1)).solution[0])


def natural_sigma(images: torch.Tensor, target: float = NATURAL_SLOPE) -> float:
    """The smallest σ (on a 0.05-pixel grid up to 3) at which the first SPECTRUM_IMAGES images, low-passed,
    have a spectral slope at or below `target`: 0 for images that already fall like photographs."""
    sample = images[:SPECTRUM_IMAGES].detach().cpu().float()
    steps = round(SIGMA_MAX / SIGMA_STEP)
    for i in range(steps + 1):
        sigma = round(i * SIGMA_STEP, 2)
        if spectral_slope(low_pass(sample, sigma)) <= target:
            return sigma
    return SIGMA_MAX


def auto_sigma(images: torch.Tensor, patch_pixels: int | None) -> float:
    """What `--calib-blur auto` takes: `natural_sigma` of the images when the model's patches are at least
    MIN_PATCH_PIXELS wide (or unknown), else 0 (the texture is then at the scale a token reads)."""
    if patch_pixels is not None and patch_pixels < MIN_PATCH_PIXELS:
        return 0.0
    return natural_sigma(images)


def tilt_spectrum(field: torch.Tensor, alpha: float) -> torch.Tensor:
    """`field` (…, H, W) with each 2-D Fourier amplitude scaled by f^-alpha (f in cycles per image, at least 1;
    the constant term kept), rescaled to its original energy: only how the energy spreads over frequencies
    changes. alpha = 1 gives white noise a photograph's f^-2 power spectrum; alpha = 0 returns `field`."""
    if alpha == 0:
        return field
    h, w = field.shape[-2:]
    fy = torch.fft.fftfreq(h, device=field.device).mul(h).view(-1, 1)
    fx = torch.fft.rfftfreq(w, device=field.device).mul(w).view(1, -1)
    weight = (fy**2 + fx**2).sqrt().clamp(min=1.0).pow(-alpha)
    values = field.float()
    tilted = torch.fft.irfft2(torch.fft.rfft2(values) * weight, s=(h, w))
    dims = (-2, -1) if field.dim() < 3 else tuple(range(1, field.dim()))
    energy = values.pow(2).sum(dims, keepdim=True).sqrt()
    return (tilted * energy / tilted.pow(2).sum(dims, keepdim=True).sqrt().clamp(min=1e-30)).to(field.dtype)
