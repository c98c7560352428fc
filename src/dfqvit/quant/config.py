"""What to quantize and how: the one object that travels with a quantized model."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from ..errors import ConfigError
from .observers import OBSERVERS
from .quantizers import GELU_QUANTIZERS, SOFTMAX_QUANTIZERS, check_bits

WEIGHT_ROUNDINGS = ("nearest", "gptq")
REPARAMS = ("none", "postln", "all")  # all = post-LayerNorm + attention output (into the value rows)
ACT_SEARCHES = ("none", "output")
ACT_COMPENSATIONS = ("none", "ridge")  # ridge: closed-form activation-error compensation (quant/compensate.py)
MLP_ACTIVATIONS = ("gelu", "relu")  # relu: APHQ-ViT's MLP reconstruction (quant/relu_mlp.py)


@dataclass
class QuantConfig:
    w_bits: int = 4
    a_bits: int = 8
    head_bits: int = 8  # classifier weights and input
    embed_bits: int = 8  # patch-embedding conv weights and input
    softmax_bits: int | None = None  # attention-probability bits; None → a_bits
    weight_observer: str = "minmax"
    act_observer: str = "percentile"
    percentile: float = 99.99
    softmax_quantizer: str = "log2"  # log2 | logsqrt2 | auto (log√2 at ≥ 4 bits, else log2) | adalog | uniform
    gelu_quantizer: str = "uniform"  # fc2 input: uniform | twin | adalog | auto (adalog at ≤ 4 bits, else twin)
    reparam: str = "none"  # per-channel ranges folded into the float parameters: none | postln (RepQ-ViT) | all
    reparam_skip_blocks: int = 0  # the first N blocks keep per-tensor post-LayerNorm inputs (see quant/reparam.py)
    act_search: str = "none"  # none | output: Linear-input ranges chosen by the layer's output error
    weight_rounding: str = "nearest"  # nearest | gptq (second-order error compensation on the calibration images)
    gptq_damp: float = 0.01  # GPTQ's ridge on the input Hessian, a fraction of its mean diagonal
    act_compensation: str = "none"  # none | ridge: weights re-fitted to the rounded inputs before rounding (ERQ)
    calib_views: int = 1  # calibration views per image: 1 = the images; k > 1 adds k − 1 crops/flips of each
    calib_blur: float | str = 0.0  # Gaussian low-pass of the calibration images: σ in input pixels (0 = off), or
    #                                "auto": the smallest σ giving them a photograph's f^-2 spectrum (data/lowpass.py)
    mlp_activation: str = "gelu"  # relu: every MLP's GELU → ReLU, fc1/fc2 re-fitted in float on the calibration images

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
        for value, choices, what in ((self.softmax_quantizer, SOFTMAX_QUANTIZERS, "softmax quantizer"),
                                     (self.gelu_quantizer, GELU_QUANTIZERS, "GELU quantizer"),
                                     (self.weight_rounding, WEIGHT_ROUNDINGS, "weight rounding"),
                                     (self.reparam, REPARAMS, "reparameterization"),
                                     (self.act_search, ACT_SEARCHES, "activation range search"),
                                     (self.act_compensation, ACT_COMPENSATIONS, "activation-error compensation"),
                                     (self.mlp_activation, MLP_ACTIVATIONS, "MLP activation")):
            if value not in choices:
                raise ConfigError(f"unknown {what} '{value}' (choose from {', '.join(choices)})")
        blur = self.calib_blur
        is_sigma = isinstance(blur, (int, float)) and not isinstance(blur, bool) and 0.0 <= blur <= 16.0
        if blur != "auto" and not is_sigma:
            raise ConfigError(f"calibration blur must be 'auto' or a σ in [0, 16] pixels, got {self.calib_blur!r}")
        if not isinstance(self.calib_views, int) or self.calib_views < 1:
            raise ConfigError(f"calibration views per image must be an integer >= 1, got {self.calib_views}")
        if self.reparam_skip_blocks < 0:
            raise ConfigError(f"reparam-skip-blocks must be >= 0, got {self.reparam_skip_blocks}")
        if not (isinstance(self.gptq_damp, (int, float)) and 0.0 < self.gptq_damp < float("inf")):
            raise ConfigError(f"GPTQ damping must be > 0 and finite, got {self.gptq_damp}")
        if not 50.0 < self.percentile <= 100.0:
            raise ConfigError(f"percentile must be in (50, 100], got {self.percentile}")

    def parts(self) -> list[str]:
        """What this configuration does beyond the basic quantizer, for the report's parts list."""
        out = []
        if self.reparam != "none":
            out.append("reparameterized post-LayerNorm" + (" and attention-output" if self.reparam == "all" else "")
                       + " activations" + (f" (from block {self.reparam_skip_blocks})" if self.reparam_skip_blocks else ""))
        if self.act_search != "none":
            out.append(f"{self.act_search}-error activation ranges")
        if self.softmax_quantizer != "log2":
            out.append(f"{self.softmax_quantizer} softmax")
        if self.mlp_activation == "relu":
            out.append("ReLU MLPs fitted to the GELU ones (APHQ-ViT's MLP reconstruction)")
        if self.gelu_quantizer != "uniform":
            out.append(f"{self.gelu_quantizer} post-GELU")
        if self.act_compensation != "none":
            out.append(f"{self.act_compensation}-compensated weights (activation error)")
        if self.weight_rounding != "nearest":
            damp = f" (damping {self.gptq_damp:g})" if self.weight_rounding == "gptq" and self.gptq_damp != 0.01 else ""
            out.append(f"{self.weight_rounding} weights{damp}")
        if self.calib_blur == "auto":
            out.append("calibration images low-passed to a photograph's f^-2 spectrum (σ read off the images, for "
                       "patches of 8 px or more)")
        elif self.calib_blur > 0:
            out.append(f"calibration images low-passed (Gaussian σ {self.calib_blur:g} px)")
        if self.calib_views > 1:
            out.append(f"{self.calib_views} crop/flip calibration views per image")
        return out

    @property
    def label(self) -> str:
        return f"W{self.w_bits}A{self.a_bits}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "QuantConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
