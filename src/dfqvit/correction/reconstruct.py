"""Block-wise reconstruction (BRECQ / QDrop family) on the calibration images.

For each transformer block in forward order, learn the rounding of its weights
(AdaRound: each weight rounds down or up by a learned soft gate h(V) ∈ [0, 1], pushed
to 0 or 1 by an annealed regulariser) and its activations' step sizes (LSQ), so that
the quantized block's output matches the float block's on the same images. The
quantized block's input mixes, element by element, the float and the quantized
model's inputs (QDrop), which flattens the loss landscape and generalises better to
images it did not see. After each block the rounding is made hard: the weights lie
exactly on the quantizer's grid and the artefact stores them as integer codes.

The objective is the block's squared output error, either plain (`mse`) or weighted per output
element (`fisher`) by how much the float model's prediction depends on it — the diagonal of the
Fisher information of the model's own, temperature-softened predictive distribution, averaged over
the images (the Hessian-weighted objectives of BRECQ / APHQ-ViT / FIMA-Q, in the form that needs no
labels). Plain MSE spends the rounding on every token alike; in a class-token model the last block's
patch tokens never reach the head at all. The third, `relative`, divides each token's squared error by
that float token's variance over channels — the error as the next LayerNorm reads it — so the few
massive-activation tokens of the deep blocks (two per image carry over half the residual energy in
ViT-Tiny from block 7) stop being the whole objective.
"""
from __future__ import annotations

import math

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import ConfigError
from ..models.attention import find_blocks
from ..passes import StopForward, run_with_hooks
from ..quant.modules import _QuantWeighted
from ..quant.quantizers import UniformQuantizer
from .distill import step_keeping_scales_positive

ZETA, GAMMA = 1.1, -0.1  # AdaRound's stretch of the sigmoid, so h reaches exactly 0 and 1
OBJECTIVES = ("mse", "fisher", "relative")


@dataclass
class ReconstructOptions:
    steps: int = 200  # per block
    lr: float = 1e-2  # AdaRound gate parameters (Adam)
    act_lr: float = 1e-3  # activation step sizes, relative to each scale's size
    batch_size: int = 32
    round_weight: float = 0.01  # λ of the rounding regulariser
    drop_prob: float = 0.5  # QDrop: probability of feeding the float input element
    warmup: float = 0.2  # fraction of steps without the regulariser
    seed: int = 0
    objective: str = "mse"  # "fisher": weighted by the float model's output sensitivity; "relative": per float token's variance
    fisher_temperature: float = 20.0  # softens the predictive distribution the labels are drawn from
    fisher_draws: int = 4  # labels drawn per image for the Fisher estimate
    first_blocks: int = 0  # reconstruct only the first N blocks (0 = all): on synthetic images the deep ones do not transfer
    fresh_views: bool = False  # every step a new random crop/flip of its images, block inputs recomputed (slower)

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ConfigError(f"reconstruct steps must be >= 0, got {self.steps}")
        if not (math.isfinite(self.lr) and math.isfinite(self.act_lr)) or self.lr <= 0 or self.act_lr < 0:
            raise ConfigError("reconstruct learning rates must be positive")
        if not 0.0 <= self.drop_prob <= 1.0:
            raise ConfigError(f"reconstruct drop probability must be in [0, 1], got {self.drop_prob}")
        if self.batch_size < 1:
            raise ConfigError(f"reconstruct batch size must be >= 1, got {self.batch_size}")
        if self.first_blocks < 0:
            raise ConfigError(f"reconstruct first blocks must be >= 0 (0 = all), got {self.first_blocks}")
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown reconstruction objective '{self.objective}' (choose from {', '.join(OBJECTIVES)})")
        if not (math.isfinite(self.fisher_temperature) and self.fisher_temperature > 0) or self.fisher_draws < 1:
            raise ConfigError("reconstruct Fisher temperature must be > 0 and its draws >= 1")


class AdaRoundWeight(nn.Module):
    """W_q = s·(clamp(floor(W/s) + h(V) + z, 0, 2^b−1) − z) with a learnable gate per weight."""

    def __init__(self, layer: _QuantWeighted) -> None:
        super().__init__()
        q = layer.weight_quantizer
        w = layer.inner.weight.detach()
        self.scale, self.zero_point, self.bits = q.scale.detach().clone(), q.zero_point.clone(), q.bits
        self.floor = torch.floor(w / self.scale)
        rest = (w / self.scale - self.floor).clamp(0.01, 0.99)
        self.v = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))  # h(v) = rest at the start

    def gate(self) -> torch.Tensor:
        return (torch.sigmoid(self.v) * (ZETA - GAMMA) + GAMMA).clamp(0, 1)

    def forward(self, _weight: torch.Tensor, hard: bool = False) -> torch.Tensor:
        h = (self.v >= 0).float() if hard else self.gate()
        codes = torch.clamp(self.floor + h + self.zero_point, 0, 2**self.bits - 1)
        return (codes - self.zero_point) * self.scale

    def regulariser(self, beta: float) -> torch.Tensor:
        return (1 - (2 * self.gate() - 1).abs().pow(beta)).sum()


def _block_inputs(model: nn.Module, block: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The inputs `block` receives when `model` runs on `images` (the forward stops there)."""
    got: list[torch.Tensor] = []

    def grab(_m, args):
        got.append(args[0].detach().clone())
        raise StopForward

    run_with_hooks(model, images, batch_size, pre_hooks=[(block, grab)])
    return torch.cat(got)


def fisher_weights(fp_model: nn.Module, fp_blocks: list[nn.Module], images: torch.Tensor, batch_size: int,
                   temperature: float, draws: int, gen: torch.Generator) -> list[torch.Tensor]:
    """Per block, E[(∂ log p_T(y|x) / ∂ z)²] over images x and labels y drawn from the float model's
    own p_T (its logits / temperature), for every element z of the block's output; averaged over the
    images (one weight per token and channel, as APHQ-ViT's mean Hessian) and scaled to mean 1, so
    the weighted loss keeps the plain one's size. This is the diagonal of the Fisher information,
    which equals the KL's Gauss-Newton Hessian: no labels, and no finite differences."""
    outs: dict[int, torch.Tensor] = {}

    def keep(i: int):
        def hook(_m, _args, out):
            outs[i] = out[0] if isinstance(out, tuple) else out
        return hook

    handles = [b.register_forward_hook(keep(i)) for i, b in enumerate(fp_blocks)]
    sums: list[torch.Tensor | None] = [None] * len(fp_blocks)
    try:
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].detach().clone().requires_grad_(True)  # a graph through activations
            with torch.enable_grad():
                logp = F.log_softmax(fp_model(x) / temperature, dim=-1)
                taps = [outs[i] for i in range(len(fp_blocks))]
                probs = logp.detach().exp().cpu()
                for d in range(draws):
                    y = torch.multinomial(probs, 1, generator=gen).to(logp.device)
                    grads = torch.autograd.grad(logp.gather(1, y).sum(), taps, retain_graph=d < draws - 1)
                    for i, g in enumerate(grads):
                        sq = g.detach().pow(2).sum(0)
                        sums[i] = sq if sums[i] is None else sums[i] + sq
    finally:
        for h in handles:
            h.remove()
    weights = []
    for s in sums:
        w = s / (len(images) * draws)
        weights.append(w / w.mean().clamp_min(1e-30))
    return weights


def token_weights(target: torch.Tensor, scale: float | None = None) -> tuple[torch.Tensor, float]:
    """1 / (each float output token's variance over channels), times `scale`, which makes the weights of
    the fixed target average 1 (returned, so fresh targets are weighted on the same scale)."""
    inv = 1.0 / target.float().var(-1, keepdim=True).clamp_min(1e-12)
    if scale is None:
        scale = 1.0 / inv.mean().item()
    return inv * scale, scale


def _act_scales(block: nn.Module) -> list[nn.Parameter]:
    return [m.scale for m in block.modules() if isinstance(m, UniformQuantizer) and m.channel_axis is None]


def reconstruct_block(q_block: nn.Module, fp_block: nn.Module, x_q: torch.Tensor, x_fp: torch.Tensor,
                      options: ReconstructOptions, gen: torch.Generator,
                      weight: torch.Tensor | None = None,
                      fresh_inputs: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None
                      ) -> dict[str, float]:
    """Learn one block's rounding and activation steps against its (optionally `weight`ed) squared
    output error; return that error per element before, at the end of training with soft rounding,
    and after the rounding is made hard. With `fresh_inputs` (sample indices → quantized and float
    block inputs of new views of those images) each step trains on inputs made for it; the errors
    reported stay those on `x_q` / `x_fp`."""
    with torch.no_grad():
        target = torch.cat([fp_block(x_fp[i:i + options.batch_size]) for i in range(0, len(x_fp), options.batch_size)])
    w = 1.0 if weight is None else weight.to(x_q.device)
    relative = options.objective == "relative"
    target_w, token_scale = token_weights(target) if relative else (1.0, None)

    def output_error() -> float:
        with torch.no_grad():
            outs = [q_block(x_q[i:i + options.batch_size]) for i in range(0, len(x_q), options.batch_size)]
            return ((torch.cat(outs) - target).pow(2) * w * target_w).mean().item()

    layers = [m for m in q_block.modules() if isinstance(m, _QuantWeighted)]
    before = output_error()
    for layer in layers:
        layer.weight_override = AdaRoundWeight(layer).to(x_q.device)
    scales = _act_scales(q_block)
    groups = [{"params": [layer.weight_override.v for layer in layers], "lr": options.lr}]
    if options.act_lr > 0:
        groups += [{"params": [s], "lr": options.act_lr * s.detach().abs().mean().item()} for s in scales]
    for g in groups:
        for p in g["params"]:
            p.requires_grad_(True)
    optim = torch.optim.Adam(groups)
    warm = int(options.warmup * options.steps)
    try:
        for step in range(options.steps):
            idx = torch.randperm(len(x_q), generator=gen)[:options.batch_size].to(x_q.device)
            if fresh_inputs is None:
                inp, inp_fp, want = x_q[idx], x_fp[idx], target[idx]
                want_w = target_w[idx] if relative else 1.0
            else:
                inp, inp_fp = fresh_inputs(idx)
                with torch.no_grad():
                    want = fp_block(inp_fp)
                want_w = token_weights(want, token_scale)[0] if relative else 1.0
            if options.drop_prob > 0:
                keep_fp = torch.rand(inp.shape, generator=gen).to(inp.device) < options.drop_prob
                inp = torch.where(keep_fp, inp_fp, inp)
            # BRECQ's weighting: squared error summed over a sample's outputs, averaged over samples
            loss = ((q_block(inp) - want).pow(2) * w * want_w).flatten(1).sum(1).mean()
            if step >= warm:
                beta = 20 + (2 - 20) * (step - warm) / max(options.steps - warm, 1)
                loss = loss + options.round_weight * sum(layer.weight_override.regulariser(beta) for layer in layers)
            step_keeping_scales_positive(optim, loss, scales)
        soft = output_error()
    finally:
        for g in groups:
            for p in g["params"]:
                p.requires_grad_(False)
        with torch.no_grad():
            for layer in layers:
                layer.inner.weight.copy_(layer.weight_override(layer.inner.weight, hard=True))
                layer.weight_override = None
    return {"before": before, "soft": soft, "after": output_error()}


def reconstruct(qmodel: nn.Module, fp_model: nn.Module, images: torch.Tensor, options: ReconstructOptions,
                progress: bool = True) -> list[dict[str, float]]:
    """Reconstruct every block (or the first `options.first_blocks`) of a calibrated quantized model in
    forward order (in place)."""
    gen = torch.Generator().manual_seed(options.seed)
    keep = options.first_blocks or None
    q_blocks = [b for _, b in find_blocks(qmodel)][:keep]
    fp_blocks = [b for _, b in find_blocks(fp_model)][:keep]
    weights: list[torch.Tensor | None] = [None] * len(fp_blocks)
    if options.objective == "fisher":
        weights = fisher_weights(fp_model, fp_blocks, images, options.batch_size, options.fisher_temperature,
                                 options.fisher_draws, gen)
    losses = []
    for qb, fb, w in tqdm(list(zip(q_blocks, fp_blocks, weights)), desc="reconstruct", disable=not progress, leave=False):
        x_q = _block_inputs(qmodel, qb, images, options.batch_size)
        x_fp = _block_inputs(fp_model, fb, images, options.batch_size)
        fresh = _fresh_view_inputs(qmodel, qb, fp_model, fb, images, options.batch_size, gen) \
            if options.fresh_views else None
        losses.append(reconstruct_block(qb, fb, x_q, x_fp, options, gen, w, fresh))
    return losses


def _fresh_view_inputs(qmodel: nn.Module, q_block: nn.Module, fp_model: nn.Module, fp_block: nn.Module,
                       images: torch.Tensor, batch_size: int, gen: torch.Generator
                       ) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """A step's block inputs from a new random crop/flip of each chosen image (the synthesis
    augmentations): a fixed few images seen through ever new views, instead of fixed inputs the
    rounding can fit exactly. Both models see the same view."""
    from ..data.views import random_views

    def inputs(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        views = random_views(images[idx], gen)
        with torch.no_grad():
            return _block_inputs(qmodel, q_block, views, batch_size), _block_inputs(fp_model, fp_block, views, batch_size)
    return inputs
