"""Loss terms for image synthesis, registered by name.

A term is `fn(ctx) -> scalar tensor`; a method is a dict of term names and weights.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..models.attention import ObservableAttention
from .kde import gaussian_kde
from .schedules import apply_crop, crop_theta, to_device


@dataclass
class SynthesisContext:
    """Everything a term may look at for one optimisation step."""

    model: nn.Module
    images: torch.Tensor  # the optimised images, before augmentation
    logits: torch.Tensor
    targets: torch.Tensor  # class indices (N,) or soft distributions (N, C)
    attention: list[ObservableAttention]  # in forward order
    head_outputs: list[torch.Tensor]  # per block: (B', heads, N, head_dim)
    probs: list[torch.Tensor]  # per block: (B', heads, N, N)
    gen: torch.Generator
    iteration: int
    total_iterations: int
    num_prefix_tokens: int = 1
    priors: torch.Tensor | None = None  # (N, grid_h, grid_w) attention priors, SARDFQ
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None
    extras: dict = field(default_factory=dict)
    view_logits: dict = field(default_factory=dict)  # VIEW_TERMS' logits, from the loop's one batched forward


LossTerm = Callable[[SynthesisContext], torch.Tensor]
LOSS_TERMS: dict[str, LossTerm] = {}
# Terms that keep state per batch (drawn once when a batch starts, stored in the checkpoint):
# name → prepare(gen, batch_size, input_size) -> tensor, readable in ctx.extras[name].
TERM_STATE: dict[str, Callable[[torch.Generator, int, tuple[int, int, int]], torch.Tensor]] = {}


@dataclass(frozen=True)
class ViewTerm:
    """How a term's extra views of the images are made: `draw(batch, gen)` takes the random draws
    (a host tensor), `apply(images, drawn)` makes the (V·B, C, H, W) views from them on the device.
    Apart, the draws can change between replays of a captured CUDA graph."""

    draw: Callable[[int, torch.Generator], torch.Tensor]
    apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# Terms that need the model's logits on extra views of the images. On BATCH_ON devices the loop
# runs those views in the same forward as the main view (one batched call, not one per view: a
# GPU step is bound by kernel launches) and hands the term their logits in ctx.view_logits[name];
# elsewhere, or evaluated on its own, such a term runs the model itself, one forward per view.
VIEW_TERMS: dict[str, ViewTerm] = {}


def register_term(name: str) -> Callable[[LossTerm], LossTerm]:
    def deco(fn: LossTerm) -> LossTerm:
        LOSS_TERMS[name] = fn
        return fn
    return deco


def get_term(name: str) -> LossTerm:
    if name not in LOSS_TERMS:
        raise ConfigError(f"unknown loss term '{name}' (registered: {', '.join(sorted(LOSS_TERMS))})")
    return LOSS_TERMS[name]


def _patch_tokens(ctx: SynthesisContext, i: int, t: torch.Tensor) -> torch.Tensor:
    """Drop class/register tokens, except in window attention, which has none."""
    return t if ctx.attention[i].is_window else t[..., ctx.num_prefix_tokens:, :]


# Devices on which work is batched into fewer, larger calls: the per-block terms run on all
# blocks at once, and VIEW_TERMS' extra views go through the main forward. On a GPU a ViT-Tiny
# step is bound by kernel launches, so batching wins; on the CPU it loses (measured: stacked
# tensors and a 3× batch leave the cache; SARDFQ's step 15 % slower), so there each block stays
# its own group of one and each view term runs its own forwards.
BATCH_ON = {"cuda"}


def _block_groups(ctx: SynthesisContext, tensors: list[torch.Tensor]) -> list[tuple[list[int], torch.Tensor]]:
    """Per-block tensors as (block indices, (K, ...) stack): stacked where shapes agree (every
    block of a ViT, each Swin stage) on BATCH_ON devices, else K = 1 per block. The terms
    give the same values either way (tested)."""
    if not tensors or tensors[0].device.type not in BATCH_ON:
        return [([i], t.unsqueeze(0)) for i, t in enumerate(tensors)]
    groups: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((tuple(t.shape), ctx.attention[i].is_window), []).append(i)
    return [(idx, torch.stack([tensors[i] for i in idx])) for idx in groups.values()]


def _stacked_patch_tokens(ctx: SynthesisContext) -> list[torch.Tensor]:
    """Head-averaged attn·v outputs, prefix tokens dropped, stacked per group: (K, B', N, d)."""
    return [_patch_tokens(ctx, idx[0], stacked.mean(dim=2)) for idx, stacked in _block_groups(ctx, ctx.head_outputs)]


def kde_entropy(samples: torch.Tensor, grid_points: int = 10) -> torch.Tensor:
    """Differential entropy per row of `samples` (B, M) from a Gaussian KDE (Scott's bandwidth).

    The density is evaluated on `grid_points` between each row's min and max and
    −∫ f log f is integrated with the trapezoid rule, as PSAQ-ViT does.
    """
    m = samples.shape[1]
    bandwidth = (samples.std(dim=1, keepdim=True).detach() * m ** (-1 / 5)).clamp(min=1e-4)
    lo, hi = samples.min(dim=1, keepdim=True).values.detach(), samples.max(dim=1, keepdim=True).values.detach()
    steps = torch.linspace(0, 1, grid_points, device=samples.device, dtype=samples.dtype)
    grid = lo + (hi - lo).clamp(min=1e-6) * steps  # (B, G)
    density = gaussian_kde(samples, grid, bandwidth) / (bandwidth * math.sqrt(2 * math.pi))
    integrand = -density * torch.log(density.clamp(min=1e-12))
    return torch.trapezoid(integrand, grid, dim=1)


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    """Half-precision (bf16/fp16) activations in float32 for the terms' sums; float32 and float64 as they are."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _upper_triangle(n: int, offset: int, device: torch.device) -> torch.Tensor:
    """Flat indices of an n×n matrix's upper triangle from diagonal `offset` (0: diagonal included)."""
    iu = torch.triu_indices(n, n, offset=offset, device=device)
    return iu[0] * n + iu[1]


def patch_similarity_entropies(tokens: torch.Tensor) -> torch.Tensor:
    """KDE entropy of pairwise cosine similarities of tokens (B, N, C), per image: (B,)."""
    t = F.normalize(tokens.float(), dim=-1)  # bf16 similarities near 1 would be steps of 0.004
    sim = t @ t.transpose(1, 2)
    # index_select, not sim[:, rows, cols]: its backward is an index_add, not a sorting index_put
    return kde_entropy(sim.flatten(1).index_select(1, _upper_triangle(sim.shape[1], 1, sim.device)))


def patch_similarity_entropy(tokens: torch.Tensor) -> torch.Tensor:
    """Mean KDE entropy of pairwise cosine similarities of tokens (B, N, C)."""
    return patch_similarity_entropies(tokens).mean()


@register_term("entropy")
def entropy_term(ctx: SynthesisContext) -> torch.Tensor:
    """PSAQ-ViT's idea, fast variant: −entropy (Scott bandwidth, upper triangle), summed over blocks."""
    total = 0.0
    for tokens in _stacked_patch_tokens(ctx):  # (K, B', N, d): every image of K blocks in one batch
        k, b = tokens.shape[:2]
        total = total - patch_similarity_entropies(tokens.flatten(0, 1)).view(k, b).mean(dim=1).sum()
    return total


PSAQ_BANDWIDTH = 0.01
PSAQ_GRID = 10
PSAQ_OFFSET = 1e-4


def psaq_entropy(sim: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
    """PSAQ-ViT's published estimate, per image: `sim` is (B, M) similarities, or (K, B, M) for
    K blocks at once; returns (B,) or (K, B). `counts` (M,): multiplicities of the similarities
    (see gaussian_kde), for a symmetric matrix given by its upper triangle.

    Gaussian KDE with a fixed bandwidth of 0.01, evaluated at 10 points from the batch's
    minimum to its maximum similarity (per block); entropy = trapezoid ∫ −(p + 1e-4)·log(p + 1e-4).
    """
    lo = sim.detach().amin(dim=(-2, -1), keepdim=True)
    hi = sim.detach().amax(dim=(-2, -1), keepdim=True)
    grid = torch.linspace(0, 1, PSAQ_GRID, device=sim.device, dtype=sim.dtype) * (hi - lo) + lo  # (..., 1, G)
    norm = 1.0 / math.sqrt(2 * math.pi * PSAQ_BANDWIDTH**2)
    density = gaussian_kde(sim, grid, PSAQ_BANDWIDTH, counts) * norm  # (..., B, G)
    p = density + PSAQ_OFFSET
    f = -p * torch.log(p)
    return ((f[..., 1:] + f[..., :-1]) * grid.diff(dim=-1)).sum(dim=-1) / 2


@register_term("entropy_psaq")
def psaq_entropy_term(ctx: SynthesisContext) -> torch.Tensor:
    """PSAQ-ViT exactly: full cosine-similarity matrix of the head-averaged attn·v output
    (class token dropped), fixed-bandwidth KDE entropy averaged over images, summed over blocks, negated.

    The matrix is symmetric, so its KDE is taken over the upper triangle and the diagonal with
    the off-diagonal pairs counted twice: the full matrix's values and gradients at half the work."""
    total = 0.0
    for tokens in _stacked_patch_tokens(ctx):  # (K, B', N, d)
        t = F.normalize(_at_least_float32(tokens), dim=-1)
        n = t.shape[-2]
        upper = _upper_triangle(n, 0, t.device)
        counts = torch.where(upper % (n + 1) == 0, 1.0, 2.0)  # the diagonal once, the rest twice
        sim = (t @ t.transpose(-1, -2)).flatten(2).index_select(-1, upper)  # (K, B', N(N+1)/2)
        total = total - psaq_entropy(sim, counts).mean(dim=1).sum()
    return total


@register_term("class")
def class_term(ctx: SynthesisContext) -> torch.Tensor:
    """Cross-entropy to one-hot or soft targets."""
    return F.cross_entropy(ctx.logits.float(), ctx.targets)


@register_term("tv")
def total_variation_term(ctx: SynthesisContext) -> torch.Tensor:
    x = ctx.images
    return (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean() + (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean()


def psaq_tv(x: torch.Tensor) -> torch.Tensor:
    """PSAQ-ViT's (DeepInversion's) TV prior: ‖Δx‖₂ over the batch, summed over 4 directions."""
    d1 = x[:, :, :, :-1] - x[:, :, :, 1:]
    d2 = x[:, :, :-1, :] - x[:, :, 1:, :]
    d3 = x[:, :, 1:, :-1] - x[:, :, :-1, 1:]
    d4 = x[:, :, :-1, :-1] - x[:, :, 1:, 1:]
    return torch.norm(d1) + torch.norm(d2) + torch.norm(d3) + torch.norm(d4)


def _psaq_tv_target(gen: torch.Generator, batch: int, input_size: tuple[int, int, int]) -> torch.Tensor:
    """v ~ U[2500, 3000], drawn once per batch; PSAQ's values hold for 32 images of 3×224×224, and the
    norm grows with the square root of the element count, so other shapes scale v by that root."""
    v = 2500 + 500 * torch.rand(1, generator=gen)
    return v * math.sqrt(batch * math.prod(input_size) / (32 * 3 * 224 * 224))


@register_term("tv_psaq")
def psaq_tv_term(ctx: SynthesisContext) -> torch.Tensor:
    """|TV(x) − v|: keeps the images' total variation near PSAQ-ViT's target instead of at zero."""
    return (psaq_tv(ctx.images) - ctx.extras["tv_psaq"].to(ctx.images.device)).abs().squeeze()


TERM_STATE["tv_psaq"] = _psaq_tv_target


def head_disagreement(per_head: torch.Tensor) -> torch.Tensor:
    """Mean pairwise cosine distance between heads, per query: per_head is (B, H, N, C)."""
    return head_disagreements(per_head[None])[0]


def head_disagreements(per_head: torch.Tensor) -> torch.Tensor:
    """head_disagreement of K blocks at once: per_head is (K, B, H, N, C); returns (K,)."""
    heads = per_head.shape[2]
    if heads < 2:
        return per_head.new_zeros(per_head.shape[0])
    u = F.normalize(_at_least_float32(per_head), dim=-1)
    summed = u.sum(dim=2).pow(2).sum(dim=-1)  # ‖Σ_h u_h‖² = H + Σ_{h≠h'} cos
    mean_cos = (summed - heads) / (heads * (heads - 1))
    return (1.0 - mean_cos).flatten(1).mean(dim=1)


def _proj_weight(attn: ObservableAttention) -> torch.Tensor:
    """The attention's output projection weight (C, H·d)."""
    proj = attn.inner.proj
    return getattr(proj, "inner", proj).weight  # QuantLinear wraps the Linear


def projected_head_disagreements(weights: torch.Tensor, head_out: torch.Tensor) -> torch.Tensor:
    """head_disagreements of each head's contribution to the block output — attn·v of head h
    through its slice W_h of the output projection — for K blocks: weights (K, C, H·d), head_out
    (K, B, H, N, d); returns (K,).

    Heads' raw outputs live in different value sub-spaces; through the projection they share the
    model space, where comparing them means something. The H projected heads (K, B, H, N, C) are
    never built: ‖W_h o_h‖² = o_h·(W_hᵀW_h)o_h, and Σ_h W_h o_h/‖W_h o_h‖ is the projection of the
    rescaled heads — tensors H times smaller, the same values (tested against the direct form).
    """
    k, b, h, n, d = head_out.shape
    o = _at_least_float32(head_out)
    if h < 2:
        return o.new_zeros(k)
    w = weights.to(o.dtype)
    w_heads = w.reshape(k, w.shape[1], h, d).transpose(1, 2)  # (K, H, C, d): W_h
    gram = w_heads.transpose(-1, -2) @ w_heads  # (K, H, d, d): W_hᵀW_h
    squared = ((o @ gram.unsqueeze(1)) * o).sum(dim=-1)  # (K, B, H, N): ‖W_h o_h‖²
    unit = o * squared.clamp(min=1e-24).rsqrt().unsqueeze(-1)  # o_h/max(‖W_h o_h‖, 1e-12), as F.normalize
    summed = (unit.permute(0, 1, 3, 2, 4).reshape(k, b * n, h * d) @ w.transpose(1, 2)).pow(2).sum(dim=-1)
    mean_cos = (summed - h) / (h * (h - 1))  # ‖Σ_h u_h‖² = H + Σ_{h≠h'} cos
    return (1.0 - mean_cos).mean(dim=1)


@register_term("head_agreement")
def head_agreement_term(ctx: SynthesisContext) -> torch.Tensor:
    """MimiQ: the heads' attention outputs for each query patch should agree."""
    total = 0.0
    for idx, stacked in _block_groups(ctx, ctx.head_outputs):  # (K, B', H, N, d)
        weights = torch.stack([_proj_weight(ctx.attention[i]) for i in idx])
        total = total + projected_head_disagreements(weights, stacked).sum()
    return total / max(len(ctx.head_outputs), 1)


def random_attention_priors(n: int, grid: tuple[int, int], gen: torch.Generator, max_blobs: int = 3) -> torch.Tensor:
    """SARDFQ-style structure priors: 1..max_blobs Gaussian blobs over the patch grid, summing to 1."""
    gh, gw = grid
    ys = torch.arange(gh).float()[:, None] / max(gh - 1, 1)
    xs = torch.arange(gw).float()[None, :] / max(gw - 1, 1)
    priors = torch.zeros(n, gh, gw)
    for i in range(n):
        blobs = int(torch.randint(1, max_blobs + 1, (1,), generator=gen))
        for _ in range(blobs):
            cy, cx = torch.rand(2, generator=gen).tolist()
            sigma = 0.1 + 0.2 * torch.rand(1, generator=gen).item()
            priors[i] += torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2))
    priors = priors + 1e-3
    return priors / priors.sum(dim=(1, 2), keepdim=True)


def prior_distance(ctx: SynthesisContext) -> torch.Tensor:
    """KL(prior ‖ class-token attention), averaged over blocks."""
    if ctx.priors is None:
        raise ConfigError("attention priors were not generated for this run")
    if any(a.is_window for a in ctx.attention) or ctx.num_prefix_tokens < 1:
        raise ConfigError("attention-prior alignment needs a class token (ViT/DeiT); window attention (Swin) is not supported")
    prior = ctx.priors.flatten(1).to(ctx.logits.device)
    if any(p.shape[-1] - ctx.num_prefix_tokens != prior.shape[1] for p in ctx.probs):
        raise ConfigError("attention priors do not match the patch grid")
    total = 0.0
    cls_rows = [p[:, :, 0, ctx.num_prefix_tokens:] for p in ctx.probs]  # class-token attention, per head
    for _, rows in _block_groups(ctx, cls_rows):  # (K, B, H, N_patches)
        rows = rows.mean(dim=2)
        a = rows / rows.sum(dim=-1, keepdim=True).clamp(min=1e-12)
        kl = (prior * (prior.clamp(min=1e-12).log() - a.clamp(min=1e-12).log())).sum(-1).mean(dim=1)  # (K,)
        total = total + kl.sum()
    return total / len(ctx.probs)


register_term("attention_prior")(prior_distance)


MULTI_SEMANTIC_CROPS = 2
MULTI_SEMANTIC_SCALE = (0.25, 0.6)


def multi_semantic_draws(n: int, gen: torch.Generator) -> torch.Tensor:
    """The crop matrices of MULTI_SEMANTIC_CROPS random-resized crops of n images, crop-major."""
    return torch.cat([crop_theta(n, MULTI_SEMANTIC_SCALE, gen) for _ in range(MULTI_SEMANTIC_CROPS)])


def multi_semantic_crops(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """The crops of `multi_semantic_draws`, crop-major, one apply_crop per crop (a single one over
    repeated images would sum the crops' gradients in another order and change the images' last bits)."""
    return torch.cat([apply_crop(images, t) for t in theta.chunk(MULTI_SEMANTIC_CROPS)])


def multi_semantic_views(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """SARDFQ's local crops: MULTI_SEMANTIC_CROPS random-resized crops of every image, crop-major."""
    return multi_semantic_crops(images, to_device(multi_semantic_draws(len(images), gen), images.device))


@register_term("multi_semantic")
def multi_semantic_term(ctx: SynthesisContext) -> torch.Tensor:
    """SARDFQ: several local crops of each image must each carry the target class (the mean of
    the crops' cross-entropies: all crops are one batch of equal parts)."""
    logits = ctx.view_logits.get("multi_semantic")
    if logits is None:  # one forward per crop
        views = multi_semantic_views(ctx.images, ctx.gen).chunk(MULTI_SEMANTIC_CROPS)
        logits = torch.cat([ctx.model(v) for v in views])
    repeats = logits.shape[0] // ctx.targets.shape[0]
    return F.cross_entropy(logits.float(), ctx.targets.repeat(repeats, *[1] * (ctx.targets.dim() - 1)))


VIEW_TERMS["multi_semantic"] = ViewTerm(multi_semantic_draws, multi_semantic_crops)


def make_targets(n: int, num_classes: int, gen: torch.Generator, soft: bool = False) -> torch.Tensor:
    """Targets spread over the classes; soft ones put 50-90% on the main class, the rest on 3 others."""
    if n <= num_classes:
        idx = torch.randperm(num_classes, generator=gen)[:n]
    else:
        idx = torch.cat([torch.randperm(num_classes, generator=gen) for _ in range(-(-n // num_classes))])[:n]
    if not soft:
        return idx
    t = torch.zeros(n, num_classes)
    main = 0.5 + 0.4 * torch.rand(n, generator=gen)
    t[torch.arange(n), idx] = main
    for i in range(n):
        others = torch.randperm(num_classes, generator=gen)
        others = others[others != idx[i]][:3]
        w = torch.rand(len(others), generator=gen)
        t[i, others] += (1 - main[i]) * w / w.sum()
    return t


# The terms defined here: they read only the step's tensors (not ctx.iteration or ctx.gen on the
# batched path), so a step made of them can be replayed as a CUDA graph (see graphs.py).
BUILT_IN_TERMS = frozenset(LOSS_TERMS)
