"""Colour: synthetic images are far more saturated than photographs.

The DFQ-ViT images of the ImageNet ViT-Tiny spread their three channels by 0.53 per pixel on average
(max − min, pixel range 0-1), the tilted-gradient ones by 0.61, where photographs spread them by 0.20:
a photograph's colour varies mostly along the grey axis. The colour covariance of natural images used
in feature visualisation (Olah et al., 2017) has its two chroma axes' standard deviations at about 0.28
and 0.13 of the luminance's. Synthesis that moves luminance and chroma equally fills the chroma with
whatever the classifier answers to.

`scale_chroma` splits an image (or an update of one) into its grey part, the mean of its channels in
pixel space, and the rest, and scales the rest. Images here are in the model's normalised input
((pixel − mean) / std per channel), so the split is made in pixel space and mapped back.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch


def _per_channel(values: Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def scale_chroma(field: torch.Tensor, scale: float, std: Sequence[float]) -> torch.Tensor:
    """`field` (N, C, H, W), normalised images or a change to them, with its chroma (each pixel's deviation
    from its channels' mean, in pixel space) multiplied by `scale`; the grey part kept. scale = 1 returns
    `field`. A change needs only the std; for images themselves pass them minus the normalised zero pixel
    (see `image_chroma_scaled`)."""
    if scale == 1 or field.shape[1] == 1:
        return field
    s = _per_channel(std, field)
    pixels = field * s
    grey = pixels.mean(1, keepdim=True)
    return (grey + scale * (pixels - grey)) / s


def image_chroma_scaled(images: torch.Tensor, scale: float, mean: Sequence[float],
                        std: Sequence[float]) -> torch.Tensor:
    """Normalised `images` with their chroma scaled by `scale` about each pixel's grey (pixel space)."""
    if scale == 1 or images.shape[1] == 1:
        return images
    zero = -_per_channel(mean, images) / _per_channel(std, images)  # pixel value 0 in the normalised input
    return scale_chroma(images - zero, scale, std) + zero


def channel_spread(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> float:
    """Mean over pixels of max − min across channels, in pixel units (0-1 range): 0.20 for the ImageNet
    `calib/` photographs, 0.53 for DFQ-ViT images of the ViT-Tiny."""
    pixels = images.detach().float() * _per_channel(std, images.float()) + _per_channel(mean, images.float())
    return float((pixels.amax(1) - pixels.amin(1)).mean())
