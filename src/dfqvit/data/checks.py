"""What a calibration image tensor must be before any work uses it: a float N×C×H×W tensor of
the model's input size whose values are finite and of the size a normalised image can have.

An image set read from disk (a shard, a synthetic.pt) can hold anything: an Inf or NaN pixel
calibrates every scale to Inf (top-1 at chance, KL NaN, and exit 0), values a million times too
large silently saturate every quantizer. Both are refused here, in one line.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from ..errors import DataError

MARGIN = 4.0  # allowed: |x| ≤ MARGIN·(largest |normalised pixel|) + NOISE_SIGMAS (Gaussian-noise sets)
NOISE_SIGMAS = 6.0


def value_bound(mean: Sequence[float], std: Sequence[float]) -> float:
    """The largest |value| accepted for images normalised with `mean` / `std`."""
    extreme = max(max(abs((0 - m) / s), abs((1 - m) / s)) for m, s in zip(mean, std))
    return MARGIN * extreme + NOISE_SIGMAS


def image_tensor_problem(images: Any, input_size: Sequence[int] | None, bound: float | None) -> str | None:
    """Why `images` cannot be calibration images (None when they can)."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        kind = f"a {images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) \
            else type(images).__name__
        return f"expected a float tensor N×C×H×W of images, found {kind}"
    if input_size is not None and tuple(images.shape[1:]) != tuple(input_size):
        return f"images are {tuple(images.shape[1:])}, the model takes {tuple(input_size)}"
    if images.numel() and not torch.isfinite(images).all():
        bad = int((~torch.isfinite(images)).sum())
        return f"{bad} value(s) are NaN or Inf"
    if bound is not None and images.numel():
        largest = float(images.abs().max())
        if largest > bound:
            return (f"values reach {largest:.3g}, beyond any normalised image (|x| ≤ {bound:.3g} for this model's "
                    f"mean/std): not images in the model's input space")
    return None


def check_image_tensor(images: Any, source: str, input_size: Sequence[int] | None = None,
                       bound: float | None = None) -> torch.Tensor:
    problem = image_tensor_problem(images, input_size, bound)
    if problem:
        raise DataError(f"{source}: {problem}")
    return images
