"""Colour: synthetic images are far more saturated than photographs.

The DFQ-ViT images of the ImageNet ViT-Tiny spread their three channels by 0.53 per pixel on average
(max − min, pixel range 0-1), the tilted-gradient ones by 0.61, where photographs spread them by 0.20:
a photograph's colour varies mostly along the grey axis. The colour covariance of natural images used
in feature visualisation (Olah et al., 2017) has its two chroma axes' standard deviations at about 0.28
and 0.13 of the luminance's. Synthesis that moves luminance and chroma equally fills the chroma with
whatever the classifier answers to.

`scale_chroma` splits an image (or an update of one) into its grey part, the mean of its channels in
pixel space, and the rest, and scales the rest: by one factor, or by one per chroma axis, red-blue
(R − B) and green-magenta ((R + B)/2 − G), the axes of that covariance (0.28 and 0.13 of the
luminance). Synthesis with the 1/f-tilted gradient paints large magenta and green fields, the
weakest axis in photographs. Images here are in the model's normalised input ((pixel − mean) / std
per channel), so the split is made in pixel space and mapped back.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from .pixels import denormalise, per_channel

ChromaScale = float | tuple[float, float]  # one factor, or (red-blue, green-magenta)
# orthonormal axes of the plane of zero grey in RGB: red-blue, green-magenta (magenta positive)
CHROMA_AXES = ((2 ** -0.5, 0.0, -(2 ** -0.5)), (6 ** -0.5, -2 * 6 ** -0.5, 6 ** -0.5))


def chroma_scale_on(scale: ChromaScale) -> bool:
    """Whether `scale` changes anything (1, or (1, 1), is plain pixels)."""
    return any(s != 1 for s in scale) if isinstance(scale, (tuple, list)) else scale != 1


def chroma_scale_text(scale: ChromaScale) -> str:
    """How reports and tables name it: '0.3', or '0.28 red-blue, 0.13 green-magenta'."""
    if isinstance(scale, (tuple, list)):
        return f"{scale[0]:g} red-blue, {scale[1]:g} green-magenta"
    return f"{scale:g}"


def _scaled_chroma(chroma: torch.Tensor, scale: ChromaScale) -> torch.Tensor:
    if not isinstance(scale, (tuple, list)):
        return scale * chroma
    if chroma.shape[1] != 3:
        raise ValueError(f"a chroma scale per axis needs RGB images, got {chroma.shape[1]} channels")
    axes = torch.tensor(CHROMA_AXES, dtype=chroma.dtype, device=chroma.device)  # (2, 3)
    factors = torch.tensor(tuple(scale), dtype=chroma.dtype, device=chroma.device).view(1, 2, 1, 1)
    along = torch.einsum("nchw,kc->nkhw", chroma, axes) * factors  # the chroma is in the axes' plane
    return torch.einsum("nkhw,kc->nchw", along, axes)


def scale_chroma(field: torch.Tensor, scale: ChromaScale, std: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """`field` (N, C, H, W), normalised images or a change to them, with its chroma (each pixel's deviation
    from its channels' mean, in pixel space) multiplied by `scale`; the grey part kept. scale = 1 returns
    `field`. A change needs only the std; for images themselves pass them minus the normalised zero pixel
    (see `image_chroma_scaled`). A loop passes `std` as a tensor built once."""
    if not chroma_scale_on(scale) or field.shape[1] == 1:
        return field
    s = per_channel(std, field)
    pixels = field * s
    grey = pixels.mean(1, keepdim=True)
    return (grey + _scaled_chroma(pixels - grey, scale)) / s


def image_chroma_scaled(images: torch.Tensor, scale: ChromaScale, mean: Sequence[float],
                        std: Sequence[float]) -> torch.Tensor:
    """Normalised `images` with their chroma scaled by `scale` about each pixel's grey (pixel space)."""
    if not chroma_scale_on(scale) or images.shape[1] == 1:
        return images
    zero = -per_channel(mean, images) / per_channel(std, images)  # pixel value 0 in the normalised input
    return scale_chroma(images - zero, scale, std) + zero


def channel_spread(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> float:
    """Mean over pixels of max − min across channels, in pixel units (0-1 range): 0.20 for the ImageNet
    `calib/` photographs, 0.53 for DFQ-ViT images of the ViT-Tiny."""
    pixels = denormalise(images, mean, std)
    return float((pixels.amax(1) - pixels.amin(1)).mean())
