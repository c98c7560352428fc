"""The embedded default: a tiny timm VisionTransformer trained on scikit-learn's digits.

It ships inside the package so that `dfqvit run` works on a fresh machine with no
download and no data. `scripts/train_tiny.py` rebuilds the weights.
"""
from __future__ import annotations

from pathlib import Path

from timm.models.vision_transformer import VisionTransformer

TINY_MODEL_NAME = "tiny-vit-digits"
TINY_KWARGS = dict(
    img_size=32, patch_size=4, in_chans=3, num_classes=10, embed_dim=96, depth=4,
    num_heads=3, mlp_ratio=2.0, qkv_bias=True,
)
TINY_DATA_CONFIG = {
    "input_size": (3, 32, 32), "interpolation": "bilinear", "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5), "crop_pct": 1.0, "crop_mode": "center",
}
TINY_WEIGHTS = Path(__file__).parent / "weights" / "tiny_vit_digits.safetensors"


def build_tiny_vit() -> VisionTransformer:
    model = VisionTransformer(**TINY_KWARGS)
    model.pretrained_cfg = {**TINY_DATA_CONFIG, "num_classes": 10, "classifier": "head",
                            "first_conv": "patch_embed.proj", "architecture": TINY_MODEL_NAME}
    return model


def load_tiny_default() -> VisionTransformer:
    from safetensors.torch import load_file

    model = build_tiny_vit()
    model.load_state_dict(load_file(str(TINY_WEIGHTS)))
    return model.eval()
