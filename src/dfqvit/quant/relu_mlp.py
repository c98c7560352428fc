"""APHQ-ViT's MLP reconstruction: every block's GELU replaced by a ReLU, its fc1/fc2 re-fitted in float.

At ≤ 4 bits the fc2 input is the hardest activation to quantize: GELU packs its negatives into a
thin tail next to zero while the positives span a wide range, so a uniform grid wastes codes on
one side or clips the other. A ReLU MLP has no negative tail at all, and when its two Linear
layers are fitted (in float, before any quantizer is calibrated) to reproduce the GELU MLP's
output on the calibration images, the block computes nearly the same function with an fc2
input a plain uniform grid suits. The fit is per block, on the float model's own MLP inputs,
with the squared error of the MLP output as objective (APHQ-ViT weights it by its
average-perturbation Hessian; here block reconstruction, which may follow, does the weighting).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..models.attention import find_blocks
from ..passes import StopForward, run_with_hooks


@dataclass(frozen=True)
class ReluFitOptions:
    steps: int = 300  # per block
    lr: float = 1e-3  # Adam, on fc1 and fc2 weights and biases (ImageNet ViT-Tiny, 128 real images: 1e-4 underfits)
    tokens: int = 4096  # tokens per step, drawn from every calibration image's tokens
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.tokens < 1:
            raise ConfigError(f"ReLU-MLP fit needs steps >= 0 and tokens >= 1, got {self.steps} and {self.tokens}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError(f"ReLU-MLP fit learning rate must be > 0 and finite, got {self.lr}")


def mlp_of(block: nn.Module) -> nn.Module | None:
    """The block's MLP when it is the fc1 → act → fc2 kind (timm's Mlp, which every adapter builds)."""
    mlp = getattr(block, "mlp", None)
    return mlp if mlp is not None and all(hasattr(mlp, n) for n in ("fc1", "act", "fc2")) else None


def swap_gelu_for_relu(model: nn.Module) -> int:
    """Replace the GELU of every block's MLP by a ReLU (in place); return how many were replaced."""
    swapped = 0
    for _, block in find_blocks(model):
        mlp = mlp_of(block)
        if mlp is not None and isinstance(mlp.act, nn.GELU):
            mlp.act = nn.ReLU()
            swapped += 1
    return swapped


def _mlp_io(model: nn.Module, mlp: nn.Module, images: torch.Tensor,
            batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What `mlp` receives and returns when `model` runs on `images`, as (tokens, channels) rows."""
    ins: list[torch.Tensor] = []
    outs: list[torch.Tensor] = []

    def grab(_m, args, out):
        ins.append(args[0].detach().flatten(0, -2).clone())
        outs.append(out.detach().flatten(0, -2).clone())
        raise StopForward

    run_with_hooks(model, images, batch_size, forward_hooks=[(mlp, grab)])
    return torch.cat(ins), torch.cat(outs)


def _mlp_pairs(qmodel: nn.Module, fp_model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """The (quantized, float) MLPs of the blocks the two models share, where both are fc1 → act → fc2 MLPs."""
    pairs = [(mlp_of(qb), mlp_of(fb)) for (_, qb), (_, fb) in zip(find_blocks(qmodel), find_blocks(fp_model))]
    return [(q, f) for q, f in pairs if q is not None and f is not None]


def _relative_error(mlp: nn.Module, x: torch.Tensor, target: torch.Tensor, rows: int = 8192) -> float:
    """mean((mlp(x) − target)²) / mean(target²), in slices of `rows` tokens."""
    with torch.no_grad():
        err = sum((mlp(x[i:i + rows]) - target[i:i + rows]).pow(2).sum() for i in range(0, len(x), rows))
        return (err / target.pow(2).sum().clamp_min(1e-30)).item()


def mlp_output_errors(qmodel: nn.Module, fp_model: nn.Module, images: torch.Tensor,
                      batch_size: int = 32) -> list[float]:
    """Per block, `qmodel`'s MLP output error relative to the mean square of `fp_model`'s, both MLPs fed the
    float model's MLP inputs for `images` (how well a ReLU MLP stands in for the GELU one there)."""
    return [_relative_error(q_mlp, *_mlp_io(fp_model, fp_mlp, images, batch_size))
            for q_mlp, fp_mlp in _mlp_pairs(qmodel, fp_model)]


def fit_relu_mlps(qmodel: nn.Module, fp_model: nn.Module, images: torch.Tensor, options: ReluFitOptions,
                  batch_size: int = 32, progress: bool = True) -> list[dict[str, float]]:
    """Fit each ReLU MLP of `qmodel` (quantizers still in float mode) to the GELU MLP of `fp_model` at the
    same block, on the float model's MLP inputs for `images`. Returns, per block, the MLP output's mean
    squared error relative to the target's mean square, before and after the fit."""
    gen = torch.Generator().manual_seed(options.seed)
    losses = []
    for q_mlp, fp_mlp in tqdm(_mlp_pairs(qmodel, fp_model), desc="relu mlp", disable=not progress, leave=False):
        if not isinstance(q_mlp.act, nn.ReLU):
            continue
        x, target = _mlp_io(fp_model, fp_mlp, images, batch_size)
        scale = target.pow(2).mean().clamp_min(1e-30)
        before = _relative_error(q_mlp, x, target)
        params = [p for layer in (q_mlp.fc1, q_mlp.fc2) for p in _float_params(layer)]
        for p in params:
            p.requires_grad_(True)
        optim = torch.optim.Adam(params, lr=options.lr)
        try:
            with torch.enable_grad():
                for _ in range(options.steps):
                    idx = torch.randint(len(x), (min(options.tokens, len(x)),), generator=gen).to(x.device)
                    loss = (q_mlp(x[idx]) - target[idx]).pow(2).mean() / scale
                    optim.zero_grad(set_to_none=True)
                    loss.backward()
                    optim.step()
        finally:
            for p in params:
                p.requires_grad_(False)
        losses.append({"before": before, "after": _relative_error(q_mlp, x, target)})
    return losses


def _float_params(layer: nn.Module) -> list[nn.Parameter]:
    """A Linear's weight and bias, through a quantization wrapper if there is one."""
    inner = getattr(layer, "inner", layer)
    return [p for p in (inner.weight, inner.bias) if p is not None]
