"""Quantizer presets: named combinations of the quantizer options and the reconstruction budget.

`basic` is the quantizer of the literature's data-free baselines (min-max per-channel
weights rounded to nearest, percentile per-tensor activations, log2 softmax). `strong`
adds what the real-data PTQ methods do (RepQ-ViT's reparameterization and log√2 softmax,
PTQ4ViT's twin-uniform post-GELU and output-aware range search, MSE-searched GPTQ
weights); `strong+recon` adds block reconstruction.
The README's quantizer table measures each part and the presets.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError
from .quant.config import QuantConfig


@dataclass(frozen=True)
class Preset:
    name: str
    quant: dict[str, Any] = field(default_factory=dict)  # QuantConfig fields
    reconstruct_steps: int = 0  # per block; 0 = no block reconstruction
    description: str = ""


STRONG = {"reparam": "postln", "softmax_quantizer": "auto", "gelu_quantizer": "twin", "act_search": "output",
          "weight_observer": "mse", "weight_rounding": "gptq"}
PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("basic", {}, 0, "min-max per-channel weights (nearest), percentile per-tensor activations, log2 softmax"),
    Preset("strong", STRONG, 0,
           "RepQ-ViT post-LayerNorm reparameterization, log√2 softmax (log2 below 4 bits), twin-uniform post-GELU, output-error "
           "Linear-input ranges, MSE-searched GPTQ weights"),
    Preset("strong+recon", STRONG, 100,
           "strong + 100 steps of block reconstruction per block"),
)}
DEFAULT_PRESET = "strong"


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' (choose from {', '.join(PRESETS)})")
    return PRESETS[name]


def quant_config(preset: str, **overrides: Any) -> QuantConfig:
    """The preset's QuantConfig with explicit overrides (None means: the preset's value)."""
    fields = {**get_preset(preset).quant, **{k: v for k, v in overrides.items() if v is not None}}
    return QuantConfig(**fields)
