"""The noise baseline: calibration images drawn from N(0, 1) in the model's normalised space."""
from __future__ import annotations

import torch


def gaussian_noise_images(n: int, input_size: tuple[int, int, int], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((n, *input_size), generator=gen)
