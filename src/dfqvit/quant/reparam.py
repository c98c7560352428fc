"""Scale reparameterization of post-LayerNorm activations (RepQ-ViT).

The inputs of qkv, fc1 and Swin's patch-merging reduction come straight out of a
LayerNorm, and their channels span ranges that differ by orders of magnitude: one
per-tensor scale wastes most codes. Calibrate them per channel (scale s_c, zero point
z_c), then fold the per-channel part into the float parameters so that inference
quantizes per tensor with s̃ = mean(s), z̃ = round(mean(z)):

    r1 = s / s̃,  r2 = z − z̃
    LayerNorm:  γ' = γ / r1,          β' = (β + s·r2) / r1
    Linear:     W' = W · diag(r1),    b' = b − W (s·r2)

The float function is unchanged (W'y' + b' = Wy + b), and the per-tensor quantizer
on y' rounds exactly as the per-channel one would on y.

The same idea applies to the input of each attention's output projection (the attn·v
output, whose channels are the heads' value channels): its per-channel scale goes into
the value rows of qkv, because attention mixes tokens, not channels (scale only: see
`_Fold.value_scale`); the per-tensor range is then calibrated as usual.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..passes import run_with_hooks
from .modules import QuantLinear
from .observers import make_observer
from .quantizers import UniformQuantizer, affine_params


def _window_padding(block: nn.Module) -> bool:
    """Swin pads windows with zeros after norm1; a folded LayerNorm would change those zeros' meaning."""
    res, win = getattr(block, "input_resolution", None), getattr(block, "window_size", None)
    if res is None or win is None:
        return False
    win = (win, win) if isinstance(win, int) else win
    return any(r % w for r, w in zip(res, win))


def reparam_pairs(model: nn.Module, skip_blocks: int = 0,
                  only_blocks: int | None = None) -> list[tuple[nn.LayerNorm, QuantLinear]]:
    """(LayerNorm, the Linear that reads it) pairs that can be folded, none of the first
    `skip_blocks` transformer blocks (and, with `only_blocks`, none after the first that many)."""
    pairs, block = [], -1
    for module in model.modules():
        candidates = []
        is_block = hasattr(module, "norm1") and hasattr(module, "attn")
        block += is_block
        if is_block and (block < skip_blocks or (only_blocks is not None and block >= only_blocks)):
            continue
        if not is_block and only_blocks is not None and block >= only_blocks - 1:
            continue  # a Swin patch merging after the last block asked for
        if is_block and not _window_padding(module):
            candidates.append((module.norm1, getattr(getattr(module.attn, "inner", module.attn), "qkv", None)))
        if hasattr(module, "norm2") and hasattr(getattr(module, "mlp", None), "fc1"):
            candidates.append((module.norm2, module.mlp.fc1))
        if hasattr(module, "norm") and hasattr(module, "reduction"):  # Swin patch merging
            candidates.append((module.norm, module.reduction))
        for norm, linear in candidates:
            if (isinstance(norm, nn.LayerNorm) and norm.elementwise_affine and isinstance(linear, QuantLinear)
                    and linear.inner.bias is not None and isinstance(linear.input_quantizer, UniformQuantizer)):
                pairs.append((norm, linear))
    return pairs


def attention_output_pairs(model: nn.Module) -> list[tuple[nn.Module, QuantLinear]]:
    """(attention, its proj) pairs whose proj input can be folded into the value rows of qkv."""
    from ..models.attention import ObservableAttention

    pairs = []
    for m in model.modules():
        if not isinstance(m, ObservableAttention):
            continue
        a = m.inner
        proj, qkv = a.proj, a.qkv
        plain = isinstance(getattr(a, "norm", nn.Identity()), nn.Identity) and getattr(a, "gate", None) is None
        if plain and isinstance(proj, QuantLinear) and isinstance(qkv, QuantLinear) and qkv.inner.bias is not None \
                and isinstance(proj.input_quantizer, UniformQuantizer) and proj.inner.bias is not None:
            pairs.append((m, proj))
    return pairs


class _Fold:
    """Where a per-channel scale r1 and shift s·r2 go: the producer's output rows, the consumer's columns."""

    @staticmethod
    def layernorm(norm: nn.LayerNorm, s: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor) -> None:
        norm.bias.copy_((norm.bias + s * r2) / r1)
        norm.weight.div_(r1)

    @staticmethod
    def value_scale(attn: nn.Module, s: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor) -> None:
        """attn·v mixes tokens, not channels, so scaling a value channel by 1/r1 scales the same
        channel of proj's input: fold into the value rows of qkv. Scale only: a shift would need
        every attention row to sum to one, which quantized probabilities do not."""
        qkv = attn.inner.qkv.inner
        c = s.numel()
        qkv.bias[2 * c:3 * c].div_(r1)
        qkv.weight[2 * c:3 * c].div_(r1[:, None])


    @staticmethod
    def consumer(linear: QuantLinear, s: torch.Tensor, r1: torch.Tensor, r2: torch.Tensor) -> None:
        w = linear.inner.weight
        linear.inner.bias.copy_(linear.inner.bias - w @ (s * r2))
        w.mul_(r1[None, :])


@torch.no_grad()
def reparameterize(qmodel: nn.Module, images: torch.Tensor, batch_size: int = 32,
                   attention_output: bool = True, skip_blocks: int = 0, only_blocks: int | None = None) -> int:
    """Calibrate post-LayerNorm inputs per channel and fold the scales; return how many layers were folded.

    Runs on the float path (quantizers in 'float' mode), before the other observers, so
    that they see the folded model. The first `skip_blocks` blocks keep per-tensor inputs:
    their channel scales follow the images' low-level statistics, which synthetic images get
    wrong, and folded into qkv / fc1 the wrong scales misplace the weights' 4-bit grid (measured
    on the ImageNet ViT-Tiny: block 0 alone costs ~5 points at W4A8 with DFQ-ViT images).
    """
    pairs = [(norm, linear, _Fold.layernorm, True) for norm, linear in reparam_pairs(qmodel, skip_blocks, only_blocks)]
    if attention_output:
        pairs += [(attn, proj, _Fold.value_scale, False) for attn, proj in attention_output_pairs(qmodel)]
    if not pairs:
        return 0
    observers = [make_observer(linear.input_quantizer._observer_args[0], -1, linear.input_quantizer._observer_args[2])
                 for _, linear, _, _ in pairs]
    run_with_hooks(qmodel, images, batch_size, pre_hooks=[(linear, lambda _m, args, o=obs: o.update(args[0]))
                                                          for (_, linear, _, _), obs in zip(pairs, observers)])
    for (producer, linear, fold, shifts), obs in zip(pairs, observers):
        quantizer = linear.input_quantizer
        probe = UniformQuantizer(quantizer.bits)
        lo, hi = obs.clip_range(lambda v, a, b: probe._candidate(v, a, b))
        s, z = affine_params(lo, hi, quantizer.bits)
        s_t, z_t = s.mean(), z.mean().round()
        r1, r2 = s / s_t, (z - z_t if shifts else torch.zeros_like(z))
        fold(producer, s, r1, r2)
        _Fold.consumer(linear, s, r1, r2)
        obs.release()
        if shifts:  # the folded input rounds per tensor exactly as the per-channel quantizer would
            quantizer.scale.data.fill_(s_t.item())
            quantizer.zero_point.fill_(z_t.item())
            quantizer.mode = "quant"
        # else: channels now have equal widths but different offsets; calibration sets the range
    return len(pairs)
