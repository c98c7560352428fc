"""Quantized layers as thin wrappers over the float ones (PTQ4ViT / RepQ-ViT style)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .quantizers import UniformQuantizer


class _QuantWeighted(nn.Module):
    def __init__(self, float_module: nn.Module, w_bits: int, a_bits: int, w_observer: str,
                 a_observer: str, percentile: float) -> None:
        super().__init__()
        self.inner = float_module
        self.input_quantizer = UniformQuantizer(a_bits, a_observer, percentile=percentile)
        self.weight_quantizer = UniformQuantizer(w_bits, w_observer, channel_axis=0,
                                                 shape=tuple(float_module.weight.shape), percentile=percentile)

    def calibrate_weight(self) -> None:
        """Weights need no data: observe them once and freeze."""
        self.weight_quantizer.observer.update(self.inner.weight)
        self.weight_quantizer.freeze()

    def quantized_weight(self) -> torch.Tensor:
        return self.weight_quantizer(self.inner.weight)


class QuantLinear(_QuantWeighted):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.input_quantizer(x), self.quantized_weight(), self.inner.bias)


class QuantConv2d(_QuantWeighted):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.inner
        return F.conv2d(self.input_quantizer(x), self.quantized_weight(), c.bias, c.stride, c.padding,
                        c.dilation, c.groups)
