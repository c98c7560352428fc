"""Fake quantizers: round to a b-bit grid in the forward pass, let gradients through (STE).

- `UniformQuantizer`: affine (scale, zero point), per tensor or per channel.
- `LogQuantizer`: softmax probabilities on powers of 2 (log2) or of √2 (log√2, RepQ-ViT),
  where most of their mass lies, so few bits keep the small probabilities a uniform grid zeroes.
- `TwinUniformQuantizer`: post-GELU values (PTQ4ViT), one uniform grid for the small negative
  tail and one, 2^m times coarser, for the positive range.

Every quantizer has three modes: 'float' (pass-through), 'observe' (feed the observer,
pass-through), 'quant'. Without autograd, 'quant' runs an in-place kernel chain (about
3× faster than the autograd formula and bit-identical to it).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn

from ..errors import BitsError, ConfigError
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


def fake_quant_affine(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int,
                      inplace: bool = False) -> torch.Tensor:
    """(clamp(round(x / s) + z, 0, 2^b-1) - z)·s, differentiable in x and s (LSQ-style).

    x / s, rounded half to even, is ONNX QuantizeLinear's arithmetic, so an exported graph
    rounds as this does. Without autograd the chain runs in place, on `x` itself when
    `inplace` (a temporary the caller will not read again): allocating the output costs
    more than the arithmetic. Both paths agree bit for bit.
    """
    if not torch.is_grad_enabled() or not (x.requires_grad or scale.requires_grad):
        out = x.div_(scale) if inplace else x / scale
        if zero_point.numel() == 1:  # per tensor: scalar bounds are much cheaper than tensor ones
            z = zero_point.item()
            return out.round_().clamp_(-z, 2**bits - 1 - z).mul_(scale)
        return out.round_().clamp_(-zero_point, 2**bits - 1 - zero_point).mul_(scale)
    q = torch.clamp(round_ste(x / scale) + zero_point, 0, 2**bits - 1)
    return (q - zero_point) * scale


class UniformQuantizer(nn.Module):
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
        self._observer_args = (observer, channel_axis, percentile)
        self.observer: Observer = make_observer(*self._observer_args)
        self.mode = "float"
        self.inplace = False  # set by the wrapper where the input is a temporary nobody reads again

    def reset_observer(self) -> None:
        self.observer = make_observer(*self._observer_args)

    def extra_repr(self) -> str:
        kind = "per-tensor" if self.channel_axis is None else f"per-channel(axis={self.channel_axis})"
        return f"bits={self.bits}, {kind}, mode={self.mode}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "quant":
            return fake_quant_affine(x, self.scale.clamp(min=EPS), self.zero_point, self.bits,
                                     self.inplace and not self._forward_hooks)
        if self.mode == "observe":
            self.observer.update(x)
        return x

    def _candidate(self, v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        s, z = affine_params(lo, hi, self.bits)
        return fake_quant_affine(v, s, z, self.bits)

    @torch.no_grad()
    def set_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        scale, zp = affine_params(lo, hi, self.bits)
        self.scale.data.copy_(scale.reshape(self.scale.shape))
        self.zero_point.copy_(zp.reshape(self.zero_point.shape))
        self.mode = "quant"

    @torch.no_grad()
    def freeze(self) -> None:
        """Turn the observer's statistics into scale and zero point and switch to 'quant'."""
        if not self.observer.ready:
            raise RuntimeError("quantizer saw no data during calibration")
        self.set_range(*self.observer.clip_range(self._candidate))
        self.observer.release()

    def integer(self, x: torch.Tensor) -> torch.Tensor:
        """The integer codes 0..2^b-1 that `forward` in 'quant' mode dequantizes."""
        return torch.clamp(torch.round(x / self.scale.clamp(min=EPS)) + self.zero_point, 0, 2**self.bits - 1)


class LogQuantizer(nn.Module):
    """x̂ = s·base^(-q), q = round(-log_base(x/s)) in 0..2^b-2; the last code stands for 0.

    For non-negative inputs (softmax output); `s` is the largest value observed.
    base 2: each value within a factor √2 (half an octave); base √2: within 2^¼,
    with twice the resolution over half the dynamic range.
    """

    def __init__(self, bits: int, base: str = "2") -> None:
        super().__init__()
        if base not in ("2", "sqrt2"):
            raise ConfigError(f"log quantizer base must be '2' or 'sqrt2', got {base!r}")
        self.bits = check_bits(bits)
        self.base = base
        self.steps_per_octave = 1 if base == "2" else 2
        self.register_buffer("scale", torch.ones(1))
        self.observer = make_observer("minmax")
        self.mode = "float"
        self.channel_axis = None
        self.inplace = False

    def extra_repr(self) -> str:
        return f"bits={self.bits}, log{'2' if self.base == '2' else '√2'}, mode={self.mode}"

    def codes(self, x: torch.Tensor, inplace: bool = False) -> torch.Tensor:
        """Codes 0..2^b-1 (the last one for zero)."""
        q = x.div_(self.scale) if inplace else x / self.scale
        q = q.log2_().mul_(-self.steps_per_octave).round_().clamp_(min=0)
        return q.clamp_(max=2**self.bits - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "quant":
            with torch.no_grad():
                q = self.codes(x.detach(), self.inplace and not x.requires_grad and not self._forward_hooks)
                q.masked_fill_(q >= 2**self.bits - 1, math.inf)
                deq = q.mul_(-1.0 / self.steps_per_octave).exp2_().mul_(self.scale)
            return deq if not x.requires_grad else (deq - x).detach() + x
        if self.mode == "observe":
            self.observer.update(x)
        return x

    @torch.no_grad()
    def freeze(self) -> None:
        if not self.observer.ready:
            raise RuntimeError("quantizer saw no data during calibration")
        self.scale.copy_(self.observer.max.clamp(min=EPS).reshape(1))
        self.mode = "quant"


class AdaptiveLogQuantizer(LogQuantizer):
    """A log quantizer for the softmax output whose base is chosen per layer (AdaLog's idea):
    x̂ = s·2^(-q/k), k steps per octave from STEPS by the squared error on the observed values.

    With 2^b − 1 codes the grid reaches s·2^(-(2^b−2)/k): k = 2 (log√2) at 4 bits stops at 2^-7,
    above a uniform attention row of 197 tokens (≈ 2^-7.6), which it rounds to zero; k = 1 (log2)
    reaches 2^-14 at half the resolution. The search takes what each layer's probabilities need.
    """

    STEPS = (1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
    SAMPLE = 1 << 14  # values kept per calibration batch for the search
    BATCHES = 32

    def __init__(self, bits: int) -> None:
        super().__init__(bits, "2")
        self.register_buffer("log_steps", torch.tensor([2.0]))
        self._samples: list[torch.Tensor] = []
        self._gen = torch.Generator().manual_seed(0)

    @property
    def steps_per_octave(self) -> float:  # LogQuantizer's codes() and forward() read it
        return float(self.log_steps)

    @steps_per_octave.setter
    def steps_per_octave(self, _value) -> None:
        pass  # set by the search (LogQuantizer.__init__ assigns its base's value)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, adaptive log (2^(1/{self.steps_per_octave:g})), mode={self.mode}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "observe" and len(self._samples) < self.BATCHES:
            flat = x.detach().reshape(-1)
            idx = torch.randint(flat.numel(), (min(self.SAMPLE, flat.numel()),), generator=self._gen)
            self._samples.append(flat[idx.to(flat.device)].float().cpu())
        return super().forward(x)

    def error(self, values: torch.Tensor, steps: float) -> float:
        top = 2**self.bits - 1
        q = (values / self.scale.cpu()).clamp(min=1e-30).log2().mul(-steps).round().clamp(0, top)
        deq = torch.where(q >= top, torch.zeros_like(q), torch.exp2(-q / steps) * self.scale.cpu())
        return (deq - values).pow(2).mean().item()

    @torch.no_grad()
    def freeze(self) -> None:
        super().freeze()
        if self._samples:
            values = torch.cat(self._samples)
            best = min(self.STEPS, key=lambda k: self.error(values, k))
            self.log_steps.fill_(best)
        self._samples = []


class TwinUniformQuantizer(nn.Module):
    """PTQ4ViT's twin uniform grid for post-GELU activations, b bits in all.

    Positive values: 2^(b-1) codes of step Δ+ over [0, hi]; negative values: 2^(b-1) codes
    of step Δ- = Δ+ / 2^m, the finest power-of-two fraction of Δ+ that still reaches the
    smallest value observed (GELU's minimum is about -0.17, so the tail keeps its shape).
    """

    def __init__(self, bits: int, observer: str = "percentile", percentile: float = 99.99) -> None:
        super().__init__()
        self.bits = check_bits(bits)
        self.register_buffer("pos_scale", torch.ones(1))
        self.register_buffer("neg_scale", torch.ones(1))
        self.observer = make_observer(observer, None, percentile)
        self.mode = "float"
        self.channel_axis = None

    def extra_repr(self) -> str:
        return f"bits={self.bits}, twin-uniform, mode={self.mode}"

    @property
    def half_levels(self) -> int:
        return 2 ** (self.bits - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "quant":
            n = self.half_levels
            if not torch.is_grad_enabled() or not x.requires_grad:  # one pass per region, no autograd graph
                pos = x.clamp(min=0).div_(self.pos_scale).round_().clamp_(max=n - 1).mul_(self.pos_scale)
                neg = x.clamp(max=0).div_(self.neg_scale).round_().clamp_(min=-n).mul_(self.neg_scale)
                return pos.add_(neg)
            pos = round_ste(x.clamp(min=0) / self.pos_scale).clamp(max=n - 1) * self.pos_scale
            neg = round_ste(x.clamp(max=0) / self.neg_scale).clamp(min=-n) * self.neg_scale
            return torch.where(x >= 0, pos, neg)
        if self.mode == "observe":
            self.observer.update(x)
        return x

    @torch.no_grad()
    def set_range(self, lo: torch.Tensor, hi: torch.Tensor) -> None:
        n = self.half_levels
        pos = (hi.clamp(min=EPS) / (n - 1)).reshape(1)
        needed = (-lo).clamp(min=EPS).reshape(1) / n  # the coarsest negative step that still reaches lo
        m = torch.floor(torch.log2(pos / needed)).clamp(min=0)
        self.pos_scale.copy_(pos)
        self.neg_scale.copy_(pos / 2**m)
        self.mode = "quant"

    @torch.no_grad()
    def freeze(self) -> None:
        if not self.observer.ready:
            raise RuntimeError("quantizer saw no data during calibration")
        lo, hi = self.observer.clip_range(self._candidate)
        self.set_range(lo.min(), hi.max())
        self.observer.release()

    def _candidate(self, v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        probe = TwinUniformQuantizer(self.bits).to(v.device)
        probe.set_range(lo.min(), hi.max())
        return probe(v)


class AdaptiveLogTwinQuantizer(TwinUniformQuantizer):
    """Post-GELU values with a log grid of searched base for the positive side (AdaLog's idea),
    the negative tail uniform as in the twin quantizer; b bits in all.

    Positive values: x̂ = hi·β^(-q), q = round(-log_β(x/hi)) in 0..2^(b-1)−2, and one code for 0
    (values below hi·β^-(2^(b-1)−1.5)). A base β near 1.6 keeps four times the twin grid's resolution
    for the many small activations and still reaches the few large ones: at 4 bits a uniform step of
    hi/7 rounds everything under hi/14 to zero. β is chosen from BASES by the squared error on the
    observed values; the output-error range search (act_search=output) then re-chooses β and hi
    together by the layer's output error.
    """

    BASES = (1.3, 1.45, 1.6, 1.8, 2.0, 2.5)

    def __init__(self, bits: int, observer: str = "percentile", percentile: float = 99.99) -> None:
        super().__init__(bits, observer, percentile)
        self.register_buffer("log_base", torch.tensor([1.6]))

    def extra_repr(self) -> str:
        return f"bits={self.bits}, adaptive-log positives (base {float(self.log_base):.2f}), mode={self.mode}"

    @property
    def top(self) -> torch.Tensor:
        return self.pos_scale * (self.half_levels - 1)  # set_range keeps the twin's pos_scale = hi / (n - 1)

    def _positive(self, x: torch.Tensor) -> torch.Tensor:
        n = self.half_levels
        top = self.top
        q = (x.clamp(min=0) / top).log_().mul_(-1.0 / math.log(float(self.log_base))).round_().clamp_(min=0)
        value = torch.pow(self.log_base, -q).mul_(top)
        return value.masked_fill_(q > n - 2, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode != "quant":
            return super().forward(x)
        n = self.half_levels
        with torch.no_grad():
            pos = self._positive(x.detach())
            neg = x.detach().clamp(max=0).div(self.neg_scale).round_().clamp_(min=-n).mul_(self.neg_scale)
            out = torch.where(x.detach() >= 0, pos, neg)
        return out if not x.requires_grad else (out - x).detach() + x

    @torch.no_grad()
    def set_base(self, base: float) -> None:
        self.log_base.fill_(float(base))

    @torch.no_grad()
    def freeze(self) -> None:
        if not self.observer.ready:
            raise RuntimeError("quantizer saw no data during calibration")
        lo, hi = self.observer.clip_range(self._candidate)
        values = self.observer.values().flatten() if hasattr(self.observer, "values") else None
        self.set_range(lo.min(), hi.max())
        if values is not None and values.numel():
            errors = {}
            for base in self.BASES:
                self.set_base(base)
                errors[base] = float((self.forward(values) - values).pow(2).mean())
            self.set_base(min(errors, key=errors.get))
        self.observer.release()

    def _candidate(self, v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        probe = AdaptiveLogTwinQuantizer(self.bits).to(v.device)
        probe.set_base(float(self.log_base))
        probe.set_range(lo.min(), hi.max())
        return probe(v)


def make_log2(bits: int, **_) -> LogQuantizer:
    return LogQuantizer(bits, "2")


def make_logsqrt2(bits: int, **_) -> LogQuantizer:
    return LogQuantizer(bits, "sqrt2")


def make_log_auto(bits: int, **_) -> LogQuantizer:
    """log√2 where its range still holds a softmax row (≥ 4 bits: down to 2^-7), log2 below: at 3 bits
    log√2 reaches only 2^-3 and zeroes almost every probability (CIFAR DeiT W4A3: 43.5 % vs 71.2 %)."""
    return LogQuantizer(bits, "sqrt2" if bits >= 4 else "2")


def make_uniform(bits: int, observer: str = "minmax", percentile: float = 99.99) -> UniformQuantizer:
    return UniformQuantizer(bits, observer, percentile=percentile)


def make_twin(bits: int, observer: str = "percentile", percentile: float = 99.99) -> TwinUniformQuantizer:
    return TwinUniformQuantizer(bits, observer, percentile)


def make_adalog(bits: int, observer: str = "percentile", percentile: float = 99.99) -> AdaptiveLogTwinQuantizer:
    return AdaptiveLogTwinQuantizer(bits, observer, percentile)


# Registered activation quantizers for the points that are far from uniform.
def make_log_adaptive(bits: int, **_) -> AdaptiveLogQuantizer:
    return AdaptiveLogQuantizer(bits)


SOFTMAX_QUANTIZERS: dict[str, Callable[..., nn.Module]] = {"log2": make_log2, "logsqrt2": make_logsqrt2,
                                                           "auto": make_log_auto, "uniform": make_uniform,
                                                           "adalog": make_log_adaptive}
def make_gelu_auto(bits: int, observer: str = "percentile", percentile: float = 99.99) -> nn.Module:
    """Adaptive-log positives at ≤ 4 bits, where a uniform positive grid of 2^(b-1) codes zeroes GELU's many
    small values (ImageNet ViT-Tiny W4A4, DFQ-ViT images, 300 sample/ images: 38.7 % vs twin 20.0 %);
    twin-uniform above, where it was measured and the log grid was not."""
    return make_adalog(bits, observer, percentile) if bits <= 4 else make_twin(bits, observer, percentile)


GELU_QUANTIZERS: dict[str, Callable[..., nn.Module]] = {"uniform": make_uniform, "twin": make_twin,
                                                        "adalog": make_adalog, "auto": make_gelu_auto}
QUANTIZER_TYPES = (UniformQuantizer, LogQuantizer, TwinUniformQuantizer)
