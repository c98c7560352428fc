"""Between the model's normalised input ((pixel − mean) / std per channel) and pixels in 0-1.

Saving images, measuring their colour and scaling it all need the same per-channel broadcast;
one place keeps them from drifting apart."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def per_channel(values: Sequence[float] | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`values` (one per channel) as a (1, C, 1, 1) tensor on `like`'s dtype and device (no copy when a
    tensor already is)."""
    return torch.as_tensor(values, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)


def denormalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised `images` (N, C, H, W) back in pixel units (0-1 for valid images), detached, float."""
    x = images.detach().float()
    return x * per_channel(std, x) + per_channel(mean, x)
