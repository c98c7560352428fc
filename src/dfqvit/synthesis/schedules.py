"""Crop-scale schedules: the lower bound δ_t of the random-resized-crop scale range [δ_t, 1].

Easy-to-Hard (DFQ-ViT) decays δ_t by a cosine from δ_u to δ_l: large crops (global
shape) early, small crops (local detail) late. Hard-to-Easy is its mirror, for ablation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

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


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float], gen: torch.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Differentiable per-image random-resized-crop, resized back to the input size."""
    n = x.shape[0]
    area = torch.empty(n).uniform_(scale[0], scale[1], generator=gen)
    log_r = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    r = torch.exp(log_r)
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = (torch.rand(n, generator=gen) * 2 - 1) * (1 - w)
    cy = (torch.rand(n, generator=gen) * 2 - 1) * (1 - h)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w, cx, h, cy
    if x.is_cuda:  # from pinned memory without waiting: a pageable copy would sync with the GPU every step
        theta = theta.pin_memory().to(x.device, non_blocking=True)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def jitter_flip(x: torch.Tensor, max_shift: int, gen: torch.Generator, flip: bool = True) -> torch.Tensor:
    """PSAQ-ViT's augmentation: one random roll and an optional horizontal flip per step."""
    if max_shift > 0:
        dx, dy = torch.randint(-max_shift, max_shift + 1, (2,), generator=gen).tolist()
        x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    if flip and torch.rand(1, generator=gen).item() < 0.5:
        x = torch.flip(x, dims=(3,))
    return x
