"""What to quantize and how: the one object that travels with a quantized model."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import ConfigError
from .observers import OBSERVERS
from .quantizers import check_bits


@dataclass
class QuantConfig:
    w_bits: int = 4
    a_bits: int = 8
    head_bits: int = 8  # classifier weights and input
    embed_bits: int = 8  # patch-embedding conv weights and input
    softmax_bits: int | None = None  # log2 quantizer on attention probabilities; None → a_bits
    weight_observer: str = "minmax"
    act_observer: str = "percentile"
    percentile: float = 99.99

    def __post_init__(self) -> None:
        check_bits(self.w_bits, "weight bits")
        check_bits(self.a_bits, "activation bits")
        check_bits(self.head_bits, "head bits")
        check_bits(self.embed_bits, "patch-embedding bits")
        if self.softmax_bits is not None:
            check_bits(self.softmax_bits, "softmax bits")
        for obs in (self.weight_observer, self.act_observer):
            if obs not in OBSERVERS:
                raise ConfigError(f"unknown observer '{obs}' (choose from {', '.join(OBSERVERS)})")

    @property
    def label(self) -> str:
        return f"W{self.w_bits}A{self.a_bits}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QuantConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
