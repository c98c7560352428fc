"""Methods are data: which loss terms with which weights, which crop schedule, which
label kind, and which correction runs after calibration. Adding one copies no loop."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..data.colour import ChromaScale, chroma_scale_on
from ..errors import ConfigError


def _json_scale(scale: ChromaScale) -> float | list[float]:
    return list(scale) if isinstance(scale, (tuple, list)) else scale


@dataclass(frozen=True)
class Method:
    name: str
    terms: dict[str, float] = field(default_factory=dict)  # empty: no synthesis (Gaussian noise)
    schedule: str = "none"  # crop schedule, see schedules.py
    soft_labels: bool = False
    acm_every: int = 0  # γ of the Activation Correction Matrix; 0 = off
    acm_variant: str = "mean"  # see correction/acm.py: mean | channel | shrunk | agree
    distill_steps: int = 0  # distillation-based calibration after the observers; 0 = off
    distill_terms: tuple[str, ...] = ("logits",)
    source: str = "synthetic"  # synthetic | noise | real: where calibration images come from
    rounds: tuple[int, ...] = ()  # PSAQ-style rounds: max roll jitter (pixels at 224 px) per round, each
    #                               `iterations` long with a fresh Adam and lr schedule; () = one round
    lowpass: float = 0.0  # σ (input pixels) of a Gaussian the images pass through before the model sees them,
    #                       and are saved through: images with a photograph's falling spectrum (data/lowpass.py)
    gradient_tilt: float = 0.0  # α: each step's image gradient has its Fourier amplitudes scaled by f^-α (energy
    #                             kept) before Adam, so large structures grow as fast as pixel texture (α = 1:
    #                             a white gradient becomes pink, a photograph's f^-2 power); 0 = plain pixels
    chroma_scale: ChromaScale = 1.0  # each step's change to the images, and the starting noise, has its chroma
    #                                  (each pixel's deviation from its grey) scaled by this, or by (red-blue,
    #                                  green-magenta): colour varies less than brightness, as in photographs
    #                                  (data/colour.py); 1 = plain pixels
    description: str = ""

    @property
    def synthesizes(self) -> bool:
        return bool(self.terms)

    def with_options(self, **overrides: Any) -> "Method":
        """A copy with user overrides (None means keep the preset's value)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "terms": dict(self.terms), "schedule": self.schedule,
                "soft_labels": self.soft_labels, "acm_every": self.acm_every, "acm_variant": self.acm_variant,
                "distill_steps": self.distill_steps, "distill_terms": list(self.distill_terms),
                "rounds": list(self.rounds), **({"lowpass": self.lowpass} if self.lowpass else {}),
                **({"gradient_tilt": self.gradient_tilt} if self.gradient_tilt else {}),
                **({"chroma_scale": _json_scale(self.chroma_scale)} if chroma_scale_on(self.chroma_scale) else {})}


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}' (choose from {', '.join(METHODS)})")
    return METHODS[name]


register_method(Method("noise", source="noise", description="Gaussian noise as calibration images (baseline)"))
register_method(Method("real", source="real", description="real images as calibration data (reference)"))
register_method(Method("psaq", {"entropy_psaq": 1.0, "class": 1.0, "tv_psaq": 0.05}, schedule="none",
                       rounds=(15, 30),
                       description="PSAQ-ViT as published: fixed-bandwidth KDE entropy + CE + 0.05·|TV − v|, "
                                   "two rounds (jitter ±15 then ±30 px at 224)"))
register_method(Method("psaq-lite", {"entropy": 1.0, "class": 1.0}, schedule="none",
                       description="PSAQ-ViT's idea, one round: Scott-bandwidth entropy (upper triangle) + CE"))
register_method(Method("dfq-vit", {"entropy": 1.0, "class": 1.0, "tv": 0.05}, schedule="e2h", acm_every=1,
                       description="DFQ-ViT: PSAQ terms + TV with Easy-to-Hard crops, then ACM"))
# DFQ-ViT's loss over steps shaped like a photograph: large structures grow as fast as texture (gradient tilt 1)
# and colour moves a third as much as brightness (chroma 0.3). Measured on the ImageNet ViT-Tiny (two sets):
# W4A4 +3.2 / +3.9 points, KL lower at every bit width; the CIFAR DeiT and Swin lose nothing (docs/results.md)
register_method(Method("dfq-vit-natural", {"entropy": 1.0, "class": 1.0, "tv": 0.05}, schedule="e2h", acm_every=1,
                       gradient_tilt=1.0, chroma_scale=0.3,
                       description="DFQ-ViT with natural-image priors: 1/f-tilted steps, chroma 0.3, then ACM"))
register_method(Method("mimiq", {"head_agreement": 1.0, "class": 1.0, "tv": 0.05}, schedule="none",
                       distill_steps=200, distill_terms=("logits", "attention"),
                       description="MimiQ: inter-head attention agreement, then head-wise attention distillation"))
register_method(Method("sardfq", {"entropy": 1.0, "attention_prior": 1.0, "multi_semantic": 1.0, "class": 1.0,
                                  "tv": 0.05}, schedule="none", soft_labels=True,
                       description="SARDFQ: attention priors + multi-semantic crops + soft labels"))

# `dfqvit run` without --method and `api.synthesize` without a method: W4A4 +3-4 points over dfq-vit on two
# ImageNet sets, KL lower in every ImageNet cell
DEFAULT_METHOD = "dfq-vit-natural"
