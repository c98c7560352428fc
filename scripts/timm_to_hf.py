"""Write a timm ViT (a dfqvit model config) as a transformers ViTForImageClassification folder.

    python scripts/timm_to_hf.py --model-config ../shared/imagenet/vit_tiny_patch16_224.json --out /tmp/vit-tiny-hf

The weight mapping is dfqvit.models.hf_vit's, run backwards (from_timm): the fused qkv
projection is split into query/key/value, timm's blocks.i.{norm1, attn.proj, norm2, mlp.fc1,
mlp.fc2} become encoder.layer.i.{layernorm_before, attention.output.dense, layernorm_after,
intermediate.dense, output.dense}, head becomes classifier. config.json carries timm's
LayerNorm eps (1e-6; transformers' ViT default is 1e-12) and id2label (ImageNet-1k
descriptions for a 1000-class head); preprocessor_config.json carries the data config
(shortest edge floor(224 / crop_pct), centre crop, bicubic, mean/std). Needs transformers.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from dfqvit.models import LoadedModel, load_model_config
from dfqvit.models.hf_vit import from_timm

RESAMPLE = {"nearest": 0, "bilinear": 2, "bicubic": 3}


def convert(loaded: LoadedModel, out: Path) -> Path:
    """The transformers folder of a timm VisionTransformer with one class token and no register tokens."""
    from safetensors.torch import save_file
    from timm.models.vision_transformer import VisionTransformer
    from transformers import ViTConfig

    net = loaded.model
    if not isinstance(net, VisionTransformer) or net.num_prefix_tokens != 1 or net.global_pool != "token":
        raise SystemExit("only a timm VisionTransformer with a class token and token pooling converts to ViT")
    block = net.blocks[0]
    num_classes = net.num_classes
    if num_classes == 1000:
        from timm.data import ImageNetInfo

        info = ImageNetInfo()
        labels = {i: info.index_to_description(i) for i in range(1000)}
    else:
        labels = {i: (loaded.class_names or [f"LABEL_{j}" for j in range(num_classes)])[i] for i in range(num_classes)}
    config = ViTConfig(hidden_size=net.embed_dim, num_hidden_layers=len(net.blocks), num_attention_heads=block.attn.num_heads,
                       intermediate_size=block.mlp.fc1.out_features, image_size=list(net.patch_embed.img_size),
                       patch_size=net.patch_embed.patch_size[0], num_channels=net.patch_embed.proj.in_channels,
                       qkv_bias=block.attn.qkv.bias is not None, layer_norm_eps=block.norm1.eps, hidden_act="gelu",
                       id2label=labels, label2id={v: k for k, v in labels.items()},
                       architectures=["ViTForImageClassification"])
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    state = {k: v.contiguous() for k, v in from_timm(net.state_dict(), "vit").items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    cfg = loaded.data_config
    _, h, w = cfg["input_size"]
    if cfg.get("crop_mode", "center") != "center" or h != w:
        raise SystemExit(f"data config {cfg}: only a square centre crop converts")
    processor = {"image_processor_type": "BitImageProcessor", "do_resize": True,
                 "size": {"shortest_edge": math.floor(h / cfg.get("crop_pct", 0.875))},
                 "resample": RESAMPLE[cfg.get("interpolation", "bicubic")], "do_center_crop": True,
                 "crop_size": {"height": h, "width": w}, "do_rescale": True, "rescale_factor": 1 / 255,
                 "do_normalize": True, "image_mean": list(cfg["mean"]), "image_std": list(cfg["std"]),
                 "do_convert_rgb": True}
    (out / "preprocessor_config.json").write_text(json.dumps(processor, indent=2) + "\n")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-config", required=True, help="dfqvit model-config JSON of a timm ViT")
    p.add_argument("--out", required=True, help="folder to write (config.json, model.safetensors, preprocessor_config.json)")
    a = p.parse_args()
    print(f"wrote {convert(load_model_config(a.model_config), Path(a.out))}")


if __name__ == "__main__":
    main()
