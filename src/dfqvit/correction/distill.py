"""Distillation-based calibration: a short stage that learns step sizes (and optionally
weights) of the quantized model from the FP teacher, on synthetic images only.

Step sizes learn through the straight-through rounding of the quantizers (LSQ-style).
Terms: `logits` (KL to the teacher) and `attention` (MimiQ's head-wise structural
distillation: each head's attention map matched to the teacher's).
"""
from __future__ import annotations

import math

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..models.attention import PointRecorder
from ..quant.quantizers import EPS, UniformQuantizer
from ..quant.wrap import QuantizedViT

DISTILL_TERMS = ("logits", "attention")


@dataclass
class DistillOptions:
    steps: int = 200
    lr: float = 1e-2  # for step sizes, relative: each scale's lr is this times its initial size
    weight_lr: float = 0.0  # > 0 also learns weights
    batch_size: int = 32
    terms: tuple[str, ...] = ("logits",)
    attention_weight: float = 1.0
    temperature: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [t for t in self.terms if t not in DISTILL_TERMS]
        if bad:
            raise ConfigError(f"unknown distillation term '{bad[0]}' (choose from {', '.join(DISTILL_TERMS)})")
        if self.steps < 0:
            raise ConfigError(f"--distill-steps must be >= 0, got {self.steps}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError(f"--distill-lr must be > 0 and finite, got {self.lr}")
        if not math.isfinite(self.weight_lr) or self.weight_lr < 0:
            raise ConfigError(f"--distill-weight-lr must be >= 0 and finite, got {self.weight_lr}")
        if self.batch_size < 1:
            raise ConfigError(f"distillation batch size must be >= 1, got {self.batch_size}")


def step_keeping_scales_positive(optim: torch.optim.Optimizer, loss: torch.Tensor, scales: list[torch.Tensor]) -> None:
    """One optimiser step on learned step sizes (and whatever else learns), then keep every scale > 0."""
    optim.zero_grad(set_to_none=True)
    loss.backward()
    optim.step()
    with torch.no_grad():
        for s in scales:
            s.clamp_(min=EPS)


def head_wise_attention_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """KL(teacher ‖ student) per head and query row, averaged over blocks."""
    total = 0.0
    for s, t in zip(student, teacher):
        total = total + (t * (t.clamp(min=1e-12).log() - s.clamp(min=1e-12).log())).sum(-1).mean()
    return total / max(len(student), 1)


def distill(qmodel: QuantizedViT, teacher: nn.Module, images: torch.Tensor, options: DistillOptions,
            progress: bool = True) -> dict[str, float]:
    """Learn the quantized model's step sizes (and weights, if asked) in place; return last losses."""
    device = images.device
    scales = [q.scale for q in qmodel.quantizers() if isinstance(q, UniformQuantizer)]
    # Step sizes span orders of magnitude: give each one an lr proportional to its size.
    groups = [{"params": [s], "lr": options.lr * s.detach().abs().mean().item()} for s in scales]
    weights = [layer.inner.weight for layer in qmodel.weighted_layers()]
    if options.weight_lr > 0:
        groups.append({"params": weights, "lr": options.weight_lr})
    for p in qmodel.parameters():
        p.requires_grad_(False)
    for g in groups:
        for p in g["params"]:
            p.requires_grad_(True)
    optim = torch.optim.Adam(groups)
    gen = torch.Generator().manual_seed(options.seed)
    use_attn = "attention" in options.terms
    s_rec = PointRecorder(qmodel, "probs_point") if use_attn else None
    t_rec = PointRecorder(teacher, "probs_point") if use_attn else None
    last: dict[str, float] = {}
    teacher.eval()
    qmodel.eval()
    try:
        for _ in tqdm(range(options.steps), desc="distill", disable=not progress, leave=False):
            idx = torch.randperm(len(images), generator=gen)[:options.batch_size].to(device)
            x = images[idx]
            if torch.rand(1, generator=gen).item() < 0.5:
                x = torch.flip(x, dims=(3,))
            if use_attn:
                s_rec.clear()
                t_rec.clear()
            with torch.no_grad():
                t_logits = teacher(x)
            s_logits = qmodel(x)
            loss = 0.0
            if "logits" in options.terms:
                tt = options.temperature
                kl = F.kl_div(F.log_softmax(s_logits / tt, -1), F.softmax(t_logits / tt, -1),
                              reduction="batchmean") * tt * tt
                loss = loss + kl
                last["logits_kl"] = kl.item()
            if use_attn:
                att = head_wise_attention_loss(s_rec.values, [t.detach() for t in t_rec.values])
                loss = loss + options.attention_weight * att
                last["attention_kl"] = att.item()
            step_keeping_scales_positive(optim, loss, scales)
    finally:
        for r in (s_rec, t_rec):
            if r is not None:
                r.remove()
        for p in qmodel.parameters():
            p.requires_grad_(False)
    return last
