"""Quantizer presets: named combinations of the quantizer options and the reconstruction budget.

`basic` is the quantizer of the literature's data-free baselines (min-max per-channel weights rounded to
nearest, percentile per-tensor activations, log2 softmax). `strong` adds what the real-data PTQ methods do
(RepQ-ViT's reparameterization and log√2 softmax, PTQ4ViT's twin-uniform post-GELU — AdaLog's adaptive-log
grid at ≤ 4 bits, which lifted the ImageNet ViT-Tiny's data-free W4A4 from 20.2 to 35.7 % — and output-aware
range search, MSE-searched GPTQ weights); `strong+recon` adds Fisher-weighted block reconstruction (real W4A4
57.6 → 62.4 %; with plain MSE, its objective until 2026-12-02, 57.8), `strong-synthetic+recon` adds plain-MSE
reconstruction to `strong-synthetic` in the first 6 blocks only, each step on a new crop/flip of the images
(ImageNet ViT-Tiny, 32 DFQ-ViT images, W4A4: 39.0 → 46.0 % on the same images, 43.4 on fixed inputs, 42.6 with
3 blocks; W4A8 72.6 → 74.7; all 12 blocks on fixed inputs collapse W4A4 to 20.0). `strong-synthetic` is
`strong` without GPTQ and without reparameterizing the first block, the two parts that trust statistics
synthetic images get wrong: GPTQ fits the rounding to the calibration images' input covariance, and the first
block's post-LayerNorm channel scales follow low-level image statistics (measured on the ImageNet ViT-Tiny at
W4A8 with DFQ-ViT images: GPTQ −0.8 points where real images gain 2.5; block 0's scales −4.3 points; see
docs/results.md); it also calibrates on 4 crop/flip views of each image (32 DFQ-ViT images: W4A4 35.7 → 39.0
%, W4A8 70.4 → 72.0, W8A8 80.2 → 81.0, KL 7-17 % lower at every width; until 2026-12-02 only at ≤ 4-bit
activations), and since 2026-12-07 it low-passes the calibration images first (`calib_blur` auto,
data/lowpass.py: the σ that gives them a photograph's f^-2 spectrum, none for patches under 8 pixels; ImageNet
DFQ-ViT images carry 10-17× a photograph's power at the highest frequencies, σ 0.7: W4A4 with the
reconstruction preset 45.0 → 50.5 and 45.1 → 50.4 % on two sets). `strong-synthetic+recon-relative`
reconstructs every block instead, on fixed inputs, each token's error divided by its float variance, so the
massive-activation tokens of the deep blocks no longer dominate the loss: at 4-bit weights with 8-bit
activations it wins on the ImageNet ViT-Tiny (three DFQ-ViT sets, W4A8 73.2 → 75.3, 74.3 → 77.1, 74.3 → 74.1
%, KL 6-9 % lower in each) and costs the CIFAR models little (KL +3-9 %, ~0.004 either way), at 4-bit
activations it loses (ImageNet W4A4 45.1 → 42.6 and 45.0 → 44.7, the CIFAR Swin 75.9 → 74.6). `auto`, the
default, picks `strong` for real calibration images and `strong-synthetic` for everything else, and at ≤ 4-bit
weights or activations their reconstruction presets (`strong+recon`; with synthetic images
`strong-synthetic+recon` at ≤ 4-bit activations, `strong-synthetic+recon-relative` at 4-bit weights over wider
activations). The README's quantizer table measures each part and the presets.
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
    reconstruct: dict[str, Any] = field(default_factory=dict)  # ReconstructOptions fields besides steps and seed


STRONG = {"reparam": "postln", "softmax_quantizer": "auto", "gelu_quantizer": "auto", "act_search": "output",
          "weight_observer": "mse", "weight_rounding": "gptq"}
# strong without the two parts synthetic images mislead, with 4 calibration views per image, on the images
# low-passed to a photograph's f^-2 spectrum (synthetic images can be near white at the pixel scale; data/lowpass.py)
STRONG_SYNTHETIC = {**STRONG, "weight_rounding": "nearest", "reparam_skip_blocks": 1, "calib_views": 4,
                    "calib_blur": "auto"}
PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("basic", {}, 0, "min-max per-channel weights (nearest), percentile per-tensor activations, log2 softmax"),
    Preset("strong", STRONG, 0,
           "RepQ-ViT post-LayerNorm reparameterization, log√2 softmax (log2 below 4 bits), twin-uniform post-GELU "
           "(adaptive-log at ≤ 4 bits), output-error Linear-input ranges, MSE-searched GPTQ weights"),
    Preset("strong+recon", STRONG, 100,
           "strong + 100 steps of Fisher-weighted block reconstruction per block (lr 0.1)",
           reconstruct={"objective": "fisher", "lr": 0.1}),
    Preset("strong-synthetic", STRONG_SYNTHETIC, 0,
           "strong without GPTQ (MSE-searched weights rounded to nearest) and without reparameterizing block 0, "
           "4 crop/flip calibration views per image, the images low-passed to an f^-2 spectrum: for synthetic "
           "calibration images"),
    Preset("strong-synthetic+recon", STRONG_SYNTHETIC, 100,
           "strong-synthetic + 100 steps of block reconstruction in each of the first 6 blocks, each step on a new "
           "crop/flip of the images (deeper, where massive activations dominate the output error, it does not "
           "transfer from synthetic images)",
           reconstruct={"first_blocks": 6, "fresh_views": True}),
    Preset("strong-synthetic+recon-relative", STRONG_SYNTHETIC, 100,
           "strong-synthetic + 100 steps of block reconstruction in every block on fixed inputs, each token's "
           "error relative to its float variance: for 4-bit weights with activations above 4 bits",
           reconstruct={"first_blocks": 0, "fresh_views": False, "objective": "relative"}),
)}
AUTO = "auto"  # strong with real images, strong-synthetic otherwise; +recon at ≤ 4-bit weights or activations
# (synthetic images at 4-bit weights over wider activations: every block with the relative objective, below)
# measured (docs/results.md): ImageNet ViT-Tiny, synthetic W4A4 39.0 → 46.0 %, W4A8 72.6 → 74.7 (KL -17 %), the
# CIFAR DeiT and Swin W4A8 KL -20 %; real W4A4 57.6 → 62.4, W4A8 75.3 → 76.8, the CIFAR DeiT the same within chance;
# the embedded digits model W4A8 KL halved. At W6A6 it costs (DFQ-ViT images 77.0 → 75.7 %, same KL).
AUTO_RECON_MAX_BITS = 4
# synthetic images, ≤ 4-bit weights, activations above 4 bits: every block, relative objective (ImageNet W4A8
# against strong-synthetic+recon on three DFQ-ViT sets: 73.2 → 75.3, 74.3 → 77.1, 74.3 → 74.1 %, KL -6, -9, -8 %;
# the CIFAR DeiT and Swin within chance, KL +3 to +9 % of ~0.004); at ≤ 4-bit activations it loses (ImageNet
# W4A4 KL +1 and +4 %, the CIFAR models +7 to +20 %), so those keep the first 6 blocks (docs/results.md)
AUTO_SYNTHETIC_WEIGHT_ONLY = "strong-synthetic+recon-relative"
# real images `strong+recon` takes when the count is not given: reconstruction wants more than the papers' 32
# (ImageNet W4A4 62.4 → 68.9 %, 256 images 68.1; W4A8 KL -23 %; the CIFAR DeiT W4A4 KL -12 %)
RECON_REAL_IMAGES = 128
DEFAULT_PRESET = AUTO


def resolve_preset(name: str, real_images: bool, *, w_bits: int = 8, a_bits: int = 8) -> str:
    """The preset `name` stands for: `auto` depends on whether the calibration images are real and on
    the bits (block reconstruction at ≤ 4-bit weights or activations: every block, Fisher-weighted,
    with real images; with synthetic ones the first 6 blocks at ≤ 4-bit activations, every block with the
    relative objective when only the weights are that low)."""
    if name == AUTO:
        low = min(w_bits, a_bits) <= AUTO_RECON_MAX_BITS
        if real_images:
            return "strong+recon" if low else "strong"
        if a_bits <= AUTO_RECON_MAX_BITS:
            return "strong-synthetic+recon"
        return AUTO_SYNTHETIC_WEIGHT_ONLY if low else "strong-synthetic"
    get_preset(name)
    return name


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}' (choose from {', '.join([*PRESETS, AUTO])}; {AUTO} needs "
                          "resolve_preset)")
    return PRESETS[name]


def quant_config(preset: str, **overrides: Any) -> QuantConfig:
    """The preset's QuantConfig with explicit overrides (None means: the preset's value)."""
    p = get_preset(preset)
    return QuantConfig(**{**p.quant, **{k: v for k, v in overrides.items() if v is not None}})
