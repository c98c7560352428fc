"""transformers ViT and DeiT classifiers as timm VisionTransformers of the same arithmetic.

`ViTForImageClassification` and `DeiTForImageClassification` are pre-norm transformers with
separate query/key/value projections, a class token (DeiT: a class and a distillation token,
both before the patches, both with position embeddings) and a head on the class token after
the final LayerNorm. timm's VisionTransformer computes the same function with one fused qkv
projection (the three weights stacked) and, for DeiT, the distillation token in its register
slot (`reg_tokens=1`: timm puts it right after the class token and embeds its position too).
Mapping the checkpoint onto timm's module lets every stage of dfqvit run unchanged; the
loader checks the two models' logits agree before anything else runs.
"""
from __future__ import annotations

import re
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from .hf_mapping import map_checkpoint, num_labels

# checkpoint key (transformers' on-disk names, the same in transformers 4 and 5) → timm key
_LAYER = r"(?:vit|deit)\.encoder\.layer\.(\d+)\."
RENAMES = [
    (r"(?:vit|deit)\.embeddings\.cls_token", "cls_token"),
    (r"deit\.embeddings\.distillation_token", "reg_token"),
    (r"(?:vit|deit)\.embeddings\.position_embeddings", "pos_embed"),
    (r"(?:vit|deit)\.embeddings\.patch_embeddings\.projection\.(weight|bias)", r"patch_embed.proj.\1"),
    (_LAYER + r"layernorm_before\.(weight|bias)", r"blocks.\1.norm1.\2"),
    (_LAYER + r"layernorm_after\.(weight|bias)", r"blocks.\1.norm2.\2"),
    (_LAYER + r"attention\.output\.dense\.(weight|bias)", r"blocks.\1.attn.proj.\2"),
    (_LAYER + r"intermediate\.dense\.(weight|bias)", r"blocks.\1.mlp.fc1.\2"),
    (_LAYER + r"output\.dense\.(weight|bias)", r"blocks.\1.mlp.fc2.\2"),
    (r"(?:vit|deit)\.layernorm\.(weight|bias)", r"norm.\1"),
    (r"classifier\.(weight|bias)", r"head.\1"),
]
QKV = re.compile(_LAYER + r"attention\.attention\.(?P<part>query|key|value)\.(weight|bias)")
QKV_TARGET = r"blocks.\1.attn.qkv.\3"
UNUSED = re.compile(r"(?:vit|deit)\.pooler\.")  # ViTModel's pooler: not on the classification path


def timm_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """The VisionTransformer arguments that reproduce a ViT/DeiT config."""
    hidden, heads = int(config["hidden_size"]), int(config["num_attention_heads"])
    if hidden % heads:
        raise ConfigError(f"config.json: hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
    return {"img_size": config.get("image_size", 224), "patch_size": config.get("patch_size", 16),
            "in_chans": config.get("num_channels", 3), "num_classes": num_labels(config), "embed_dim": hidden,
            "depth": int(config["num_hidden_layers"]), "num_heads": heads,
            "mlp_ratio": int(config["intermediate_size"]) / hidden, "qkv_bias": bool(config.get("qkv_bias", True)),
            "class_token": True, "global_pool": "token", "reg_tokens": 1 if config["model_type"] == "deit" else 0}


def build(config: dict[str, Any]) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    try:
        return VisionTransformer(**timm_kwargs(config))
    except KeyError as exc:
        raise ConfigError(f"config.json lacks the field {exc}") from None


def to_timm(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """(timm state dict, checkpoint keys that map to nothing)."""
    return map_checkpoint(state, RENAMES, QKV, QKV_TARGET, UNUSED)


# timm key → transformers key below the model prefix (vit. / deit.), for from_timm
FROM_TIMM = {r"patch_embed\.proj\.(\w+)": r"embeddings.patch_embeddings.projection.\1",
             r"blocks\.(\d+)\.norm1\.(\w+)": r"encoder.layer.\1.layernorm_before.\2",
             r"blocks\.(\d+)\.norm2\.(\w+)": r"encoder.layer.\1.layernorm_after.\2",
             r"blocks\.(\d+)\.attn\.proj\.(\w+)": r"encoder.layer.\1.attention.output.dense.\2",
             r"blocks\.(\d+)\.mlp\.fc1\.(\w+)": r"encoder.layer.\1.intermediate.dense.\2",
             r"blocks\.(\d+)\.mlp\.fc2\.(\w+)": r"encoder.layer.\1.output.dense.\2",
             r"norm\.(\w+)": r"layernorm.\1"}


def from_timm(state: dict[str, torch.Tensor], model_type: str) -> dict[str, torch.Tensor]:
    """The inverse mapping: a timm ViT state dict under transformers' checkpoint names."""
    p = model_type
    fixed = {"cls_token": f"{p}.embeddings.cls_token", "reg_token": f"{p}.embeddings.distillation_token",
             "pos_embed": f"{p}.embeddings.position_embeddings"}
    out = {}
    for key, value in state.items():
        if key in fixed:
            out[fixed[key]] = value
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.attn\.qkv\.(weight|bias)", key)
        if m:
            for name, part in zip(("query", "key", "value"), value.chunk(3)):
                out[f"{p}.encoder.layer.{m.group(1)}.attention.attention.{name}.{m.group(2)}"] = part.contiguous()
            continue
        if re.fullmatch(r"head\.(weight|bias)", key):
            out["classifier." + key.split(".")[1]] = value
            continue
        for pattern, target in FROM_TIMM.items():
            if re.fullmatch(pattern, key):
                out[f"{p}." + re.sub(pattern, target, key)] = value
                break
        else:
            raise ConfigError(f"timm key '{key}' has no transformers counterpart")
    return out
