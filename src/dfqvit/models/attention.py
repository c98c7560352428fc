"""Attention with its inner steps exposed as named points.

timm's fused attention hides q·kᵀ, the softmax and attn·v. `ObservableAttention`
re-runs the same arithmetic with five identity modules in between:

    q_point, k_point   → inputs of q·kᵀ
    probs_point        → softmax output (attention probabilities, input of attn·v)
    v_point            → value input of attn·v
    head_output_point  → per-head attn·v output, (B, heads, N, head_dim)

Quantization replaces points with quantizers; synthesis and distillation read them
with forward hooks. The float sub-modules (qkv, proj, norms, rel-pos bias) stay the
ones of the wrapped timm module, so weights are shared, not copied.
"""
from __future__ import annotations

from typing import Iterator

import torch
import torch.nn as nn
from timm.models.swin_transformer import WindowAttention
from timm.models.vision_transformer import Attention

POINTS = ("q_point", "k_point", "probs_point", "v_point", "head_output_point")


class ObservableAttention(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        if not isinstance(inner, (Attention, WindowAttention)):
            raise TypeError(f"unsupported attention module {type(inner).__name__}")
        self.inner = inner
        self.is_window = isinstance(inner, WindowAttention)
        for name in POINTS:
            setattr(self, name, nn.Identity())

    @property
    def num_heads(self) -> int:
        return self.inner.num_heads

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        a = self.inner
        B, N, _ = x.shape
        if self.is_window:
            qkv = a.qkv(x).reshape(B, N, 3, a.num_heads, -1).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
        else:
            gate = a.gate(x).sigmoid() if getattr(a, "gate", None) is not None else None
            qkv = a.qkv(x).reshape(B, N, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            q, k = a.q_norm(q), a.k_norm(k)
        q = self.q_point(q * a.scale)
        k = self.k_point(k)
        attn = q @ k.transpose(-2, -1)
        if self.is_window:
            attn = attn + a._get_rel_pos_bias()
            if mask is not None:
                num_win = mask.shape[0]
                attn = attn.view(-1, num_win, a.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
                attn = attn.view(-1, a.num_heads, N, N)
        else:
            attn_mask = kwargs.get("attn_mask")
            if attn_mask is not None:
                attn = attn + attn_mask
        attn = self.probs_point(attn.softmax(dim=-1))
        out = self.head_output_point(attn @ self.v_point(v))
        out = out.transpose(1, 2).reshape(B, N, -1)
        if not self.is_window:
            out = a.norm(out)
            if gate is not None:
                out = out * gate
        return a.proj(out)


def make_observable(model: nn.Module) -> nn.Module:
    """Swap every timm attention module of `model` (in place) for an ObservableAttention."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, (Attention, WindowAttention)) and not isinstance(parent, ObservableAttention):
                setattr(parent, child_name, ObservableAttention(child))
    return model


def attention_modules(model: nn.Module) -> list[ObservableAttention]:
    return [m for m in model.modules() if isinstance(m, ObservableAttention)]


def find_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Transformer blocks in forward order: every module whose direct child `attn` is an attention."""
    blocks = []
    for name, module in model.named_modules():
        attn = getattr(module, "attn", None)
        if isinstance(attn, (Attention, WindowAttention, ObservableAttention)) and name:
            blocks.append((name, module))
    return blocks


class PointRecorder:
    """Collects the tensors flowing through a named point of every attention (keeps the graph)."""

    def __init__(self, model: nn.Module, point: str) -> None:
        self.values: list[torch.Tensor] = []
        self._handles = [
            getattr(m, point).register_forward_hook(lambda _m, _i, out: self.values.append(out))
            for m in attention_modules(model)
        ]
        if not self._handles:
            raise TypeError("model has no ObservableAttention; call make_observable first")

    def clear(self) -> None:
        self.values = []

    def remove(self) -> None:
        for h in self._handles:
            h.remove()

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(self.values)
