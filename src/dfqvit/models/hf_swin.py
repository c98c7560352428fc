"""transformers Swin classifiers as timm SwinTransformers of the same arithmetic.

`SwinForImageClassification` and timm's SwinTransformer follow the original Swin code: the
same window partition, cyclic shift and −100 attention mask, the same relative-position
bias table and index, the same patch-merging order (x[0::2, 0::2], x[1::2, 0::2],
x[0::2, 1::2], x[1::2, 1::2]). Two differences of layout only: transformers keeps separate
query/key/value projections (timm stacks them into qkv), and it puts each stage's patch
merging at the end of stage i where timm puts it at the start of stage i+1.
"""
from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from .hf_mapping import map_checkpoint, num_labels

_BLOCK = r"swin\.encoder\.layers\.(\d+)\.blocks\.(\d+)\."
RENAMES = [
    (r"swin\.embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (r"swin\.embeddings\.norm\.(weight|bias)", r"patch_embed.norm.\1"),
    (_BLOCK + r"layernorm_before\.(weight|bias)", r"layers.\1.blocks.\2.norm1.\3"),
    (_BLOCK + r"layernorm_after\.(weight|bias)", r"layers.\1.blocks.\2.norm2.\3"),
    (_BLOCK + r"attention\.self\.relative_position_bias_table", r"layers.\1.blocks.\2.attn.relative_position_bias_table"),
    (_BLOCK + r"attention\.output\.dense\.(weight|bias)", r"layers.\1.blocks.\2.attn.proj.\3"),
    (_BLOCK + r"intermediate\.dense\.(weight|bias)", r"layers.\1.blocks.\2.mlp.fc1.\3"),
    (_BLOCK + r"output\.dense\.(weight|bias)", r"layers.\1.blocks.\2.mlp.fc2.\3"),
    # patch merging ends stage i in transformers and starts stage i+1 in timm
    (r"swin\.encoder\.layers\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)",
     lambda m: f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}.{m.group(3)}"),
    (r"swin\.layernorm\.(weight|bias)", r"norm.\1"),
    (r"classifier\.(weight|bias)", r"head.fc.\1"),
]
QKV = re.compile(_BLOCK + r"attention\.self\.(?P<part>query|key|value)\.(weight|bias)")
QKV_TARGET = r"layers.\1.blocks.\2.attn.qkv.\4"
# buffers timm recomputes (the same index: tested), and the pooler's nothing
UNUSED = re.compile(_BLOCK + r"attention\.self\.relative_position_index|swin\.pooler\.")


def timm_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    if config.get("use_absolute_embeddings"):
        raise ConfigError("config.json: Swin with use_absolute_embeddings=true has no timm counterpart; not supported")
    try:
        return {"img_size": config.get("image_size", 224), "patch_size": config.get("patch_size", 4),
                "in_chans": config.get("num_channels", 3), "num_classes": num_labels(config),
                "embed_dim": int(config["embed_dim"]), "depths": tuple(config["depths"]),
                "num_heads": tuple(config["num_heads"]), "window_size": int(config["window_size"]),
                "mlp_ratio": float(config.get("mlp_ratio", 4.0)), "qkv_bias": bool(config.get("qkv_bias", True)),
                "global_pool": "avg"}
    except KeyError as exc:
        raise ConfigError(f"config.json lacks the field {exc}") from None


def build(config: dict[str, Any]) -> nn.Module:
    from timm.models.swin_transformer import SwinTransformer

    return SwinTransformer(**timm_kwargs(config))


def to_timm(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(timm state dict, checkpoint keys that map to nothing)."""
    return map_checkpoint(state, RENAMES, QKV, QKV_TARGET, UNUSED)
