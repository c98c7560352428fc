"""scikit-learn's handwritten digits as 3×32×32 images, with a fixed train / held-out split."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

HELD_OUT_FRACTION = 0.2
SPLIT_SEED = 0


def _digits_as_images() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)  # N×1×8×8 in [0, 1]
    x = F.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)
    return x.repeat(1, 3, 1, 1), torch.from_numpy(d.target.astype(np.int64))


def digits_split(split: str, normalize: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """`split` is 'train' or 'heldout'; images are normalised with mean = std = 0.5 unless asked not to."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', not {split!r}")
    x, y = _digits_as_images()
    order = np.random.default_rng(SPLIT_SEED).permutation(len(y))
    n_held = int(round(len(y) * HELD_OUT_FRACTION))
    idx = order[:n_held] if split == "heldout" else order[n_held:]
    idx = torch.from_numpy(np.sort(idx))
    x, y = x[idx], y[idx]
    if normalize:
        x = (x - 0.5) / 0.5
    return x, y
