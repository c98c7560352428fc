"""Observers watch tensors during calibration and turn what they saw into a clipping range.

Kept apart from the quantizers (as in torch.ao): a quantizer knows how to round, an
observer knows which range is worth rounding into.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..errors import ConfigError

MAX_SAMPLES = 1 << 20  # values kept per tensor for percentile / MSE search


class Observer:
    """Tracks per-tensor (channel_axis None) or per-channel ranges."""

    def __init__(self, channel_axis: int | None = None) -> None:
        self.channel_axis = channel_axis
        self.min: torch.Tensor | None = None
        self.max: torch.Tensor | None = None

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float()
        if self.channel_axis is None:
            return x.reshape(1, -1)
        return x.transpose(0, self.channel_axis).reshape(x.shape[self.channel_axis], -1)

    def update(self, x: torch.Tensor) -> None:
        flat = self._flat(x)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
        self.min = lo if self.min is None else torch.minimum(self.min, lo)
        self.max = hi if self.max is None else torch.maximum(self.max, hi)
        self._keep(flat)

    def _keep(self, flat: torch.Tensor) -> None:
        pass

    def release(self) -> None:
        """Free what was kept for the range search, once the range is set."""

    @property
    def ready(self) -> bool:
        return self.min is not None

    def clip_range(self, fake_quant: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (low, high) per channel; `fake_quant(x, low, high)` lets a search try candidates."""
        return self.min, self.max


class MinMaxObserver(Observer):
    pass


class _SamplingObserver(Observer):
    """Keeps a bounded, deterministic sample of the values seen (all of them for weights)."""

    def __init__(self, channel_axis: int | None = None) -> None:
        super().__init__(channel_axis)
        self.samples: list[torch.Tensor] = []
        self._gen = torch.Generator().manual_seed(0)

    def _keep(self, flat: torch.Tensor) -> None:
        per_update = MAX_SAMPLES // 16
        if flat.shape[1] > per_update and self.channel_axis is None:
            idx = torch.randint(0, flat.shape[1], (per_update,), generator=self._gen).to(flat.device)
            flat = flat[:, idx]
        self.samples.append(flat)
        if self.channel_axis is None and sum(s.shape[1] for s in self.samples) > MAX_SAMPLES:
            self.samples = [torch.cat(self.samples, 1)[:, -MAX_SAMPLES:]]

    def values(self) -> torch.Tensor:
        return torch.cat(self.samples, dim=1)

    def release(self) -> None:
        self.samples = []


class PercentileObserver(_SamplingObserver):
    def __init__(self, channel_axis: int | None = None, percentile: float = 99.99) -> None:
        super().__init__(channel_axis)
        if not 50.0 < percentile <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], got {percentile}")
        self.percentile = percentile

    def clip_range(self, fake_quant):
        v = self.values()
        q = self.percentile / 100.0
        return torch.quantile(v, 1.0 - q, dim=1), torch.quantile(v, q, dim=1)


class MseObserver(_SamplingObserver):
    """Grid search over symmetric shrinkings of [min, max] for the least squared rounding error."""

    GRID = torch.linspace(0.3, 1.0, 71)

    def clip_range(self, fake_quant):
        v = self.values()
        best_err = torch.full((v.shape[0],), float("inf"), device=v.device)
        best_lo, best_hi = self.min.clone(), self.max.clone()
        for r in self.GRID.tolist():
            lo, hi = self.min * r, self.max * r
            err = (fake_quant(v, lo[:, None], hi[:, None]) - v).pow(2).mean(dim=1)
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best_lo = torch.where(better, lo, best_lo)
            best_hi = torch.where(better, hi, best_hi)
        return best_lo, best_hi


OBSERVERS = {"minmax": MinMaxObserver, "percentile": PercentileObserver, "mse": MseObserver}


def make_observer(kind: str, channel_axis: int | None = None, percentile: float = 99.99) -> Observer:
    if kind not in OBSERVERS:
        raise ConfigError(f"unknown observer '{kind}' (choose from {', '.join(OBSERVERS)})")
    if kind == "percentile":
        return PercentileObserver(channel_axis, percentile)
    return OBSERVERS[kind](channel_axis)
