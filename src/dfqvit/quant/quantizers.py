"""Fake quantizers: round to a b-bit grid in the forward pass, let gradients through (STE).

`UniformQuantizer` is affine (scale, zero point), per tensor or per channel.
`Log2Quantizer` puts softmax probabilities on powers of two, where most of their
mass lies, so 4 bits keep the small probabilities a uniform grid would zero out.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import BitsError
from .observers import Observer, make_observer

MIN_BITS, MAX_BITS = 2, 8
EPS = 1e-8


def check_bits(bits: int, what: str = "bits") -> int:
    if not isinstance(bits, int) or isinstance(bits, bool) or not MIN_BITS <= bits <= MAX_BITS:
        raise BitsError(f"{what} must be an integer in {MIN_BITS}..{MAX_BITS}, got {bits!r}")
    return bits


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return (x.round() - x).detach() + x


def affine_params(lo: torch.Tensor, hi: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point that map [lo, hi] (widened to hold 0) onto 0..2^b-1."""
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = ((hi - lo) / (2**bits - 1)).clamp(min=EPS)
    zero_point = torch.round(-lo / scale).clamp(0, 2**bits - 1)
    return scale, zero_point


def fake_quant_affine(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int) -> torch.Tensor:
    q = torch.clamp(round_ste(x / scale) + zero_point, 0, 2**bits - 1)
    return (q - zero_point) * scale


class UniformQuantizer(nn.Module):
    """Modes: 'float' (pass-through), 'observe' (feed the observer, pass-through), 'quant'."""

    def __init__(self, bits: int, observer: str = "minmax", channel_axis: int | None = None,
                 shape: tuple[int, ...] | None = None, percentile: float = 99.99) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        self.channel_axis = channel_axis
        pshape = [1]
        if channel_axis is not None:
            pshape = [1] * len(shape)
            pshape[channel_axis] = shape[channel_axis]
        self.scale = nn.Parameter(torch.ones(pshape), requires_grad=False)
        self.register_buffer("zero_point", torch.zeros(pshape))
        self.observer: Observer = make_observer(observer, channel_axis, percentile)
        self.mode = "float"

    def extra_repr(self) -> str:
        kind = "per-tensor" if self.channel_axis is None else f"per-channel(axis={self.channel_axis})"
        return f"bits={self.bits}, {kind}, mode={self.mode}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "quant":
            return fake_quant_affine(x, self.scale.clamp(min=EPS), self.zero_point, self.bits)
        if self.mode == "observe":
            self.observer.update(x)
        return x

    def _candidate(self, v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        s, z = affine_params(lo, hi, self.bits)
        return fake_quant_affine(v, s, z, self.bits)

    @torch.no_grad()
    def freeze(self) -> None:
        """Turn the observer's statistics into scale and zero point and switch to 'quant'."""
        if not self.observer.ready:
            raise RuntimeError("quantizer saw no data during calibration")
        lo, hi = self.observer.clip_range(self._candidate)
        scale, zp = affine_params(lo, hi, self.bits)
        self.scale.data.copy_(scale.reshape(self.scale.shape))
        self.zero_point.copy_(zp.reshape(self.zero_point.shape))
        self.mode = "quant"

    def integer(self, x: torch.Tensor) -> torch.Tensor:
        """The integer codes 0..2^b-1 that `forward` in 'quant' mode dequantizes."""
        return torch.clamp(torch.round(x / self.scale.clamp(min=EPS)) + self.zero_point, 0, 2**self.bits - 1)


class Log2Quantizer(nn.Module):
    """x̂ = s·2^(-q), q = round(-log2(x/s)) in 0..2^b-2; the last code stands for 0.

    For non-negative inputs (softmax output). `s` is the largest value observed.
    """

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        self.register_buffer("scale", torch.ones(1))
        self.observer = make_observer("minmax")
        self.mode = "float"
        self.channel_axis = None

    def extra_repr(self) -> str:
        return f"bits={self.bits}, log2, mode={self.mode}"

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(-torch.log2((x / self.scale).clamp(min=1e-30)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "quant":
            q = self.codes(x).clamp(min=0)
            deq = self.scale * torch.exp2(-q)
            deq = torch.where(q >= 2**self.bits - 1, torch.zeros_like(deq), deq)
            return (deq - x).detach() + x
        if self.mode == "observe":
            self.observer.update(x)
        return x

    @torch.no_grad()
    def freeze(self) -> None:
        if not self.observer.ready:
            raise RuntimeError("quantizer saw no data during calibration")
        self.scale.copy_(self.observer.max.clamp(min=EPS).reshape(1))
        self.mode = "quant"
