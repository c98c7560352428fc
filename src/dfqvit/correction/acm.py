"""Activation Correction Matrix (DFQ-ViT).

ACM_i = mean over calibration images of (FP block-i output − quantized block-i output),
a tokens × channels map added back to the quantized block-i output at inference.
The matrices are computed block by block, each with the corrections of earlier blocks
already in place, so block i corrects the shift it actually sees at inference.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class CorrectedBlock(nn.Module):
    """A transformer block plus an optional additive correction of its output."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block
        self.register_buffer("correction", torch.zeros(0))

    def forward(self, *args, **kwargs):
        out = self.block(*args, **kwargs)
        if self.correction.numel():
            out = out + self.correction
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "correction"
        if key in state_dict:
            self.correction = torch.empty_like(state_dict[key])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


def corrected_indices(num_blocks: int, every: int) -> list[int]:
    """Blocks that get a matrix: every γ-th block (γ-1, 2γ-1, ...); γ = 0 means none."""
    if every < 0:
        raise ValueError("acm_every must be >= 0")
    if every == 0:
        return []
    return [i for i in range(num_blocks) if (i + 1) % every == 0]


def _block_outputs(blocks: list[nn.Module], model: nn.Module, images: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Sum over images of every block's output (accumulated in float64 for a stable mean)."""
    sums: list[torch.Tensor | None] = [None] * len(blocks)
    outs: list[torch.Tensor] = []
    handles = [b.register_forward_hook(lambda _m, _i, o: outs.append(o)) for b in blocks]
    try:
        for start in range(0, len(images), batch_size):
            outs.clear()
            model(images[start:start + batch_size])
            for i, o in enumerate(outs):
                s = o.detach().double().sum(0)
                sums[i] = s if sums[i] is None else sums[i] + s
    finally:
        for h in handles:
            h.remove()
    return sums


@torch.no_grad()
def block_gap(fp_blocks: list[nn.Module], fp_model: nn.Module, q_blocks: list[nn.Module], q_model: nn.Module,
              images: torch.Tensor, batch_size: int = 32) -> list[float]:
    """Mean absolute difference between FP and quantized block outputs, per block."""
    gaps = [0.0] * len(q_blocks)
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size]
        fp, q = [], []
        hf = [b.register_forward_hook(lambda _m, _i, o: fp.append(o)) for b in fp_blocks]
        hq = [b.register_forward_hook(lambda _m, _i, o: q.append(o)) for b in q_blocks]
        try:
            fp_model(x)
            q_model(x)
        finally:
            for h in hf + hq:
                h.remove()
        for i, (a, b) in enumerate(zip(fp, q)):
            gaps[i] += (a - b).abs().mean().item() * len(x)
    return [g / len(images) for g in gaps]


@torch.no_grad()
def compute_acm(fp_model: nn.Module, fp_blocks: list[nn.Module], q_model: nn.Module,
                q_blocks: list[CorrectedBlock], images: torch.Tensor, every: int = 1,
                batch_size: int = 32) -> list[int]:
    """Fill `q_blocks[i].correction` for the chosen blocks; return their indices."""
    chosen = corrected_indices(len(q_blocks), every)
    for b in q_blocks:
        b.correction = torch.zeros(0, device=images.device)
    if not chosen:
        return []
    fp_sums = _block_outputs(fp_blocks, fp_model, images, batch_size)
    for i in chosen:  # sequential: block i sees the corrections of blocks < i
        q_sum = _block_outputs([q_blocks[i]], q_model, images, batch_size)[0]
        q_blocks[i].correction = ((fp_sums[i] - q_sum) / len(images)).float()
    return chosen
