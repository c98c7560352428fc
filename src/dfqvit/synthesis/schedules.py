"""Crop-scale schedules: the lower bound δ_t of the random-resized-crop scale range [δ_t, 1].

Easy-to-Hard (DFQ-ViT) decays δ_t by a cosine from δ_u to δ_l: large crops (global
shape) early, small crops (local detail) late. Hard-to-Easy is its mirror, for ablation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class CropSchedule:
    kind: str = "none"  # none | fixed | e2h | h2e
    upper: float = 1.0
    lower: float = 0.08

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULES:
            raise ConfigError(f"unknown crop schedule '{self.kind}' (choose from {', '.join(SCHEDULES)})")
        if not 0.0 < self.lower <= self.upper <= 1.0:
            raise ConfigError(f"crop bounds must satisfy 0 < lower <= upper <= 1, got {self.lower}, {self.upper}")

    def lower_bound(self, t: int, total: int) -> float | None:
        """δ_t for iteration t of `total`; None means no crop at all."""
        if self.kind == "none":
            return None
        if self.kind == "fixed":
            return self.lower
        frac = min(max(t / max(total, 1), 0.0), 1.0)
        if self.kind == "h2e":
            frac = 1.0 - frac
        return self.lower + (self.upper - self.lower) * (1.0 + math.cos(math.pi * frac)) / 2.0


SCHEDULES = ("none", "fixed", "e2h", "h2e")


def crop_theta(n: int, scale: tuple[float, float], gen: torch.Generator,
               ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """The random draws of a random-resized-crop of `n` images: affine matrices (n, 2, 3), on the CPU."""
    area = torch.empty(n).uniform_(scale[0], scale[1], generator=gen)
    log_r = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - h)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
    return theta


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device`; to a GPU from pinned memory without waiting (a pageable copy
    would sync with the GPU every step)."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def apply_crop(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Crop each image by its affine matrix and resize it back to the input size (differentiable):
    what F.affine_grid + F.grid_sample (bilinear, reflection padding, align_corners=False) give for
    axis-aligned crops (theta [[w, 0, cx], [0, h, cy]], the only kind drawn here), computed as two
    matrix products, rows then columns.

    Why not grid_sample itself: its CUDA backward adds the gradient with atomics, so on a GPU two
    runs of a cropping method (dfq-vit, sardfq) were not the same images — Adam turns the last-bit
    differences into sign flips of near-zero gradients (measured on an H100: ViT-Tiny dfq-vit, two
    eager runs apart by the full pixel range after 40 iterations). Interpolation matrices make the
    backward two matmuls as well: the same bits on every run."""
    height, width = x.shape[2:]
    theta = theta.double()  # coordinates of up to a few hundred pixels: float64 keeps them exact to 1e-13
    rows = _axis_interpolation(theta[:, 1, 1], theta[:, 1, 2], height).to(x.dtype)  # (n, H_out, H_in)
    cols = _axis_interpolation(theta[:, 0, 0], theta[:, 0, 2], width).to(x.dtype)  # (n, W_out, W_in)
    return rows.unsqueeze(1) @ x @ cols.transpose(1, 2).unsqueeze(1)


def _axis_interpolation(scale: torch.Tensor, shift: torch.Tensor, size: int) -> torch.Tensor:
    """grid_sample's bilinear weights along one axis, as a matrix (n, size_out, size_in): output
    pixel j samples normalised coordinate scale·x_j + shift, x_j = (2j + 1)/size − 1 (affine_grid,
    align_corners=False); reflected about −½ and size − ½, clipped to [0, size − 1] like grid_sample."""
    j = torch.arange(size, device=scale.device, dtype=scale.dtype)
    src = scale[:, None] * ((2 * j + 1) / size - 1) + shift[:, None]
    u = ((src + 1) * size - 1) / 2  # pixel coordinate
    span = float(size)  # reflection about −½ and size − ½: period 2·size
    folded = (u + 0.5).abs()
    extra, flips = torch.fmod(folded, span), torch.floor(folded / span)
    u = torch.where(flips % 2 == 0, extra - 0.5, span - extra - 0.5).clamp(0, size - 1)
    left = u.floor()
    frac = u - left
    left = left.long()
    weights = torch.zeros(*u.shape, size + 1, device=u.device, dtype=u.dtype)  # a spare column for left + 1 = size
    weights.scatter_(2, left.unsqueeze(2), (1 - frac).unsqueeze(2))
    weights.scatter_(2, (left + 1).unsqueeze(2), frac.unsqueeze(2))  # another column: no sum, no atomics
    return weights[..., :size]


def jitter_flip_index(height: int, width: int, max_shift: int, gen: torch.Generator,
                      flip: bool = True) -> torch.Tensor | None:
    """PSAQ-ViT's augmentation drawn as a permutation of the H·W pixel positions: one random roll
    and an optional horizontal flip (None: neither can happen). `apply_permutation` with it gives
    exactly torch.roll then torch.flip; as a tensor it can change between replays of a CUDA graph."""
    if max_shift <= 0 and not flip:
        return None
    rows, cols = torch.arange(height), torch.arange(width)
    if max_shift > 0:
        dx, dy = torch.randint(-max_shift, max_shift + 1, (2,), generator=gen).tolist()
        rows, cols = (rows - dy) % height, (cols - dx) % width  # torch.roll: out[i] = x[(i − shift) mod n]
    if flip and torch.rand(1, generator=gen).item() < 0.5:
        cols = cols.flip(0)
    return (rows[:, None] * width + cols[None, :]).flatten()


def apply_permutation(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Move every image's pixels by a flat position permutation (one gather; its gradient is exact)."""
    return x.flatten(2).index_select(2, index).view_as(x)
