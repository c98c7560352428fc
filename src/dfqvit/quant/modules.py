"""Quantized layers as thin wrappers over the float ones (PTQ4ViT / RepQ-ViT style).

The fake-quantized weight is computed once and cached; it is recomputed only when the
weight or its quantizer's parameters change (tensor version counters tell), or while
they learn (reconstruction, distillation), so inference costs one matmul per layer.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .quantizers import UniformQuantizer


class _QuantWeighted(nn.Module):
    def __init__(self, float_module: nn.Module, w_bits: int, input_quantizer: nn.Module, w_observer: str,
                 percentile: float) -> None:
        super().__init__()
        self.inner = float_module
        self.input_quantizer = input_quantizer
        self.weight_quantizer = UniformQuantizer(w_bits, w_observer, channel_axis=0,
                                                 shape=tuple(float_module.weight.shape), percentile=percentile)
        self.weight_override: nn.Module | None = None  # e.g. AdaRound's soft rounding while it learns
        self._cache: tuple[tuple, torch.Tensor] | None = None

    def calibrate_weight(self) -> None:
        """Weights need no data: observe them once and freeze."""
        self.weight_quantizer.reset_observer()  # the weight may have changed since (reparameterization)
        self.weight_quantizer.observer.update(self.inner.weight)
        self.weight_quantizer.freeze()
        self._cache = None

    def _cache_key(self) -> tuple:
        w, q = self.inner.weight, self.weight_quantizer
        return (w.data_ptr(), w._version, q.scale.data_ptr(), q.scale._version, q.zero_point._version, q.mode)

    def quantized_weight(self) -> torch.Tensor:
        if self.weight_override is not None:
            return self.weight_override(self.inner.weight)
        q, w = self.weight_quantizer, self.inner.weight
        if q.mode != "quant" or (torch.is_grad_enabled() and (w.requires_grad or q.scale.requires_grad)):
            self._cache = None
            return q(w)
        key = self._cache_key()
        if self._cache is None or self._cache[0] != key:
            with torch.no_grad():
                self._cache = (key, q(w))
        return self._cache[1]


class QuantLinear(_QuantWeighted):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.input_quantizer(x), self.quantized_weight(), self.inner.bias)


class QuantConv2d(_QuantWeighted):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.inner
        return F.conv2d(self.input_quantizer(x), self.quantized_weight(), c.bias, c.stride, c.padding,
                        c.dilation, c.groups)
