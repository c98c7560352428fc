"""Activation Correction Matrix (DFQ-ViT).

ACM_i = mean over calibration images of (FP block-i output − quantized block-i output),
a tokens × channels map added back to the quantized block-i output at inference.
The matrices are computed block by block, each with the corrections of earlier blocks
already in place, so block i corrects the shift it actually sees at inference.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..passes import run_with_hooks


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


@torch.no_grad()
def _outputs_per_batch(blocks: list[nn.Module], model: nn.Module, images: torch.Tensor,
                       batch_size: int) -> list[list[torch.Tensor]]:
    """Every chosen block's output, batch by batch: outs[batch][block]."""
    per_batch: list[list[torch.Tensor]] = []
    current: list[torch.Tensor] = []

    def end_of_batch(*_):
        per_batch.append(list(current))
        current.clear()

    run_with_hooks(model, images, batch_size, forward_hooks=[(b, lambda _m, _i, o: current.append(o.detach()))
                                                             for b in blocks] + [(model, end_of_batch)])
    return per_batch


@torch.no_grad()
def block_gap(fp_blocks: list[nn.Module], fp_model: nn.Module, q_blocks: list[nn.Module], q_model: nn.Module,
              images: torch.Tensor, batch_size: int = 32) -> list[float]:
    """Mean absolute difference between FP and quantized block outputs, per block."""
    gaps = [0.0] * len(q_blocks)
    for start in range(0, len(images), batch_size):
        x = images[start:start + batch_size]
        fp = _outputs_per_batch(fp_blocks, fp_model, x, len(x))[0]
        q = _outputs_per_batch(q_blocks, q_model, x, len(x))[0]
        for i, (a, b) in enumerate(zip(fp, q)):
            gaps[i] += (a - b).abs().mean().item() * len(x)
    return [g / len(images) for g in gaps]


def _mean(stats: dict) -> torch.Tensor:
    return stats["sum"] / stats["n"]


def _channel(stats: dict) -> torch.Tensor:
    """One value per channel: the mean shift averaged over tokens (robust to token-level mismatch)."""
    m = _mean(stats)
    return m.mean(dim=tuple(range(m.dim() - 1)), keepdim=True)


def _shrunk(stats: dict) -> torch.Tensor:
    """Each entry shrunk toward zero by its spread across images (positive-part James-Stein):
    m · max(0, 1 − var / (n·m²)); an entry the images disagree on is not trusted."""
    n, m = stats["n"], _mean(stats)
    var = (stats["sumsq"] / n - m * m).clamp(min=0)
    return m * (1 - var / (n * m * m).clamp(min=1e-30)).clamp(0, 1)


def _agree(stats: dict) -> torch.Tensor:
    """Only entries whose sign is the same on two disjoint halves of the images, averaged."""
    a, b = stats["sum_a"] / max(stats["n_a"], 1), stats["sum_b"] / max(stats["n_b"], 1)
    return torch.where(torch.sign(a) == torch.sign(b), (a + b) / 2, torch.zeros_like(a))


ACM_VARIANTS = {"mean": _mean, "channel": _channel, "shrunk": _shrunk, "agree": _agree}


@torch.no_grad()
def compute_acm(fp_model: nn.Module, fp_blocks: list[nn.Module], q_model: nn.Module,
                q_blocks: list[CorrectedBlock], images: torch.Tensor, every: int = 1,
                batch_size: int = 32, variant: str = "mean") -> list[int]:
    """Fill `q_blocks[i].correction` for the chosen blocks; return their indices.

    `variant`: 'mean' (DFQ-ViT's matrix), or one robust to a mismatch between calibration
    and real statistics: 'channel', 'shrunk', 'agree' (see the functions above).
    """
    chosen = corrected_indices(len(q_blocks), every)
    for b in q_blocks:
        b.correction = torch.zeros(0, device=images.device)
    if not chosen:
        return []
    reduce = ACM_VARIANTS[variant]
    fp_outs = _outputs_per_batch([fp_blocks[i] for i in chosen], fp_model, images, batch_size)
    half = len(images) // 2
    for k, i in enumerate(chosen):  # sequential: block i sees the corrections of blocks < i
        q_outs = _outputs_per_batch([q_blocks[i]], q_model, images, batch_size)
        stats = {"n": len(images), "sum": 0.0, "sumsq": 0.0, "sum_a": 0.0, "sum_b": 0.0, "n_a": half,
                 "n_b": len(images) - half}
        for b, start in enumerate(range(0, len(images), batch_size)):
            d = (fp_outs[b][k] - q_outs[b][0]).double()
            first = d[:max(0, min(len(d), half - start))]
            stats["sum"] = stats["sum"] + d.sum(0)
            stats["sumsq"] = stats["sumsq"] + (d * d).sum(0)
            stats["sum_a"] = stats["sum_a"] + first.sum(0)
            stats["sum_b"] = stats["sum_b"] + d[len(first):].sum(0)
        q_blocks[i].correction = reduce(stats).float()
    return chosen
