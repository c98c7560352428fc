"""A local Hugging Face `transformers` image-classification folder, as a timm model of the same arithmetic.

The folder (config.json, model.safetensors or its shard index, preprocessor_config.json) is read
directly: nothing is downloaded and no pickle is opened. Each supported architecture family has one
adapter (hf_vit: ViT and DeiT; hf_swin: Swin) that builds the timm module computing the same
function and renames the checkpoint's tensors onto it, so synthesis, every quantizer option,
corrections and the ONNX export see the timm blocks they were built for. Before the model is
returned, its logits on a probe batch are checked against transformers' own model (eager
attention) loaded offline from the same folder: a configuration option the mapping does not
reproduce is an error, not a silently different model. The artefact records config.json, so
`evaluate --quantized` rebuilds the model without the folder.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import CheckpointError, ConfigError
from . import hf_swin, hf_vit
from ..utils import read_json
from .hf_mapping import num_labels

# architecture (config.json "architectures") → (model_type, adapter); the tested ones
ARCHITECTURES = {
    "ViTForImageClassification": ("vit", hf_vit),
    "DeiTForImageClassification": ("deit", hf_vit),
    "SwinForImageClassification": ("swin", hf_swin),
}
ACTIVATIONS = {"gelu": "none", "gelu_new": "tanh", "gelu_pytorch_tanh": "tanh"}  # hidden_act → nn.GELU approximate
RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}  # PIL codes
PROBE_TOLERANCE = 1e-4  # max |Δlogit| relative to the largest logit: float32 reassociation, not a different model


def read_config(folder: str | Path) -> dict[str, Any]:
    """config.json of a transformers folder, checked to be a supported image classifier."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--model-dir {folder}: folder not found")
    path = folder / "config.json"
    if not path.is_file():
        raise ConfigError(f"--model-dir {folder} has no config.json: not a transformers model folder")
    config = read_json(path)
    architecture = architecture_of(config)
    model_type, _ = ARCHITECTURES[architecture]
    if config.get("model_type") != model_type:
        raise ConfigError(f"{path}: architecture {architecture} with model_type {config.get('model_type')!r} "
                          f"(expected {model_type!r})")
    act = config.get("hidden_act", "gelu")
    if act not in ACTIVATIONS:
        raise ConfigError(f"{path}: hidden_act {act!r} is not supported (supported: {', '.join(ACTIVATIONS)})")
    return config


def architecture_of(config: dict[str, Any]) -> str:
    names = config.get("architectures") or []
    known = [n for n in names if n in ARCHITECTURES]
    if not known:
        what = ", ".join(names) if names else f"model_type {config.get('model_type')!r} without architectures"
        raise ConfigError(f"config.json describes {what}, not a supported image classifier "
                          f"(supported: {', '.join(ARCHITECTURES)})")
    return known[0]


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The folder's safetensors weights (one file or a shard index), as float32."""
    from safetensors.torch import load_file

    single, index = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
            raise CheckpointError(f"{index} is not a safetensors shard index (no weight_map)") from None
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{folder}: shard(s) {', '.join(missing[:3])} named by {index.name} are missing")
    elif any((folder / n).is_file() for n in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack")):
        raise CheckpointError(f"{folder} has no model.safetensors: dfqvit reads safetensors only (a .bin is a pickle "
                              f"that can run code); convert it once with transformers: "
                              f"from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)")
    else:
        raise CheckpointError(f"{folder} holds no weights (no model.safetensors or model.safetensors.index.json)")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        try:
            state.update(load_file(str(f)))
        except Exception as exc:
            raise CheckpointError(f"{f} is truncated or not a safetensors file: {str(exc).splitlines()[0][:120]}") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def build_from_config(config: dict[str, Any]) -> nn.Module:
    """The timm module (untrained) that computes what the transformers config describes."""
    _, adapter = ARCHITECTURES[architecture_of(config)]
    try:
        net = adapter.build(config)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"config.json does not build a {architecture_of(config)}: {str(exc).splitlines()[0][:200]}") \
            from None
    eps = float(config.get("layer_norm_eps", 1e-12))
    approximate = ACTIVATIONS[config.get("hidden_act", "gelu")]
    for parent in net.modules():
        if isinstance(parent, nn.LayerNorm):
            parent.eps = eps  # transformers' eps (1e-12 for ViT/DeiT, 1e-5 for Swin), not timm's 1e-6
        for name, child in parent.named_children():
            if isinstance(child, nn.GELU):
                setattr(parent, name, nn.GELU(approximate=approximate))
    return net.eval()


def data_config_from_processor(folder: Path, image_size: tuple[int, int], channels: int) -> dict[str, Any]:
    """timm's eval preprocessing equal to the folder's image processor (resize, crop, mean/std)."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        raise ConfigError(f"{folder} has no preprocessor_config.json, so its resize, crop and mean/std are unknown: "
                          f"save the model's image processor beside it (processor.save_pretrained(DIR))")
    p = read_json(path)
    if p.get("do_rescale", True) and not math.isclose(float(p.get("rescale_factor", 1 / 255)), 1 / 255, rel_tol=1e-6):
        raise ConfigError(f"{path}: rescale_factor {p.get('rescale_factor')} is not 1/255; not supported")
    if not p.get("do_rescale", True):
        raise ConfigError(f"{path}: do_rescale=false (pixels fed as 0..255) is not supported")
    normalize = p.get("do_normalize", True)
    mean = tuple(float(v) for v in p.get("image_mean", (0.5,) * 3)) if normalize else (0.0,) * channels
    std = tuple(float(v) for v in p.get("image_std", (0.5,) * 3)) if normalize else (1.0,) * channels
    interpolation = RESAMPLE.get(int(p.get("resample", 2)), "bilinear")
    size = p.get("size") or {}
    crop = p.get("crop_size") if p.get("do_center_crop") else None
    if isinstance(size, int):
        size = {"height": size, "width": size}
    if crop is not None and isinstance(crop, int):
        crop = {"height": crop, "width": crop}
    if "height" in size and "width" in size:  # resized to exactly H×W (aspect ratio not kept), then maybe cropped
        out = (crop["height"], crop["width"]) if crop else (size["height"], size["width"])
        ratio = (size["height"] / out[0], size["width"] / out[1])
        if not math.isclose(*ratio, rel_tol=1e-6):
            raise ConfigError(f"{path}: resize {size} with crop {crop} crops the two sides by different ratios")
        crop_pct, mode = (out[0] / (size["height"] + 0.5) if crop else 1.0), "squash"  # +0.5: floor(out/pct) = H
    elif "shortest_edge" in size and crop:  # shorter side resized, aspect kept, centre crop
        out = (crop["height"], crop["width"])
        crop_pct, mode = out[0] / (size["shortest_edge"] + 0.5), "center"
        if out[0] != out[1]:
            raise ConfigError(f"{path}: a non-square centre crop {crop} after a shortest-edge resize is not supported")
    else:
        raise ConfigError(f"{path}: preprocessing size {size} (crop {crop}) does not give a fixed image size; "
                          f"not supported")
    if tuple(out) != tuple(image_size):
        raise ConfigError(f"{path} makes {out[0]}×{out[1]} images, the model's config expects "
                          f"{image_size[0]}×{image_size[1]}")
    return {"input_size": (channels, *out), "interpolation": interpolation, "mean": mean, "std": std,
            "crop_pct": crop_pct, "crop_mode": mode}


def class_names_of(config: dict[str, Any], num_classes: int) -> list[str] | None:
    """id2label in index order; None for transformers' placeholder names (LABEL_0, ...)."""
    labels = config.get("id2label") or {}
    try:
        names = [str(labels[k]) for k in sorted(labels, key=int)]
    except (ValueError, TypeError):
        raise ConfigError("config.json: id2label keys are not class indices") from None
    if sorted(int(k) for k in labels) != list(range(len(labels))) or len(names) != num_classes:
        return None
    return None if all(n == f"LABEL_{i}" for i, n in enumerate(names)) else names


def _image_size(config: dict[str, Any]) -> tuple[int, int]:
    s = config.get("image_size", 224)
    return (int(s), int(s)) if isinstance(s, int) else (int(s[0]), int(s[1]))


def load_hf_folder(folder: str | Path, data_config: dict[str, Any] | None = None, verify: bool = True) -> tuple[
        nn.Module, dict[str, Any], dict[str, Any], list[str] | None]:
    """(timm model with the folder's weights, config.json, data config, class names)."""
    folder = Path(folder)
    config = read_config(folder)
    architecture = architecture_of(config)
    _, adapter = ARCHITECTURES[architecture]
    state, left = adapter.to_timm(read_weights(folder))
    if left:
        raise CheckpointError(f"{folder}: {len(left)} tensor(s) of the file have no place in a {architecture} "
                              f"({', '.join(left[:3])}{', …' if len(left) > 3 else ''})")
    net = build_from_config(config)
    own = net.state_dict()
    head = "head.fc.weight" if "head.fc.weight" in own else "head.weight"
    if head in state and head in own and state[head].shape[0] != own[head].shape[0]:
        raise CheckpointError(f"{folder}: config.json has {own[head].shape[0]} labels (id2label), the classifier "
                              f"in the weights has {state[head].shape[0]} outputs")
    from .loading import describe_mismatch

    expected = {k: v for k, v in own.items() if not k.endswith(("relative_position_index", "attn_mask"))}
    missing = [k for k in expected if k not in state]
    if missing or any(tuple(state[k].shape) != tuple(v.shape) for k, v in expected.items()):
        raise CheckpointError(f"{folder}: the weights do not fit its config.json ({architecture}): "
                              f"{describe_mismatch(expected, state)}")
    net.load_state_dict(state, strict=False)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{folder}: non-finite (NaN or Inf) values in {len(bad)} tensor(s): {', '.join(bad[:3])}")
    channels = int(config.get("num_channels", 3))
    cfg = data_config or data_config_from_processor(folder, _image_size(config), channels)
    if verify:
        check_against_transformers(folder, net, _image_size(config), channels)
    return net, config, cfg, class_names_of(config, num_labels(config))


def check_against_transformers(folder: Path, net: nn.Module, size: tuple[int, int], channels: int) -> float:
    """Max |Δlogit| / max |logit| between `net` and transformers' own model of `folder` on a
    seeded probe batch; raises when above PROBE_TOLERANCE. Needs the `hf` extra."""
    try:
        from transformers import AutoModelForImageClassification
        from transformers.utils import logging as hf_logging
    except ImportError:
        raise ConfigError("--model-dir needs transformers to check the model it maps: pip install -e \".[hf]\"") from None
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        reference = AutoModelForImageClassification.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True, attn_implementation="eager").eval()
    except Exception as exc:
        raise CheckpointError(f"transformers cannot load {folder}: {str(exc).splitlines()[0][:200]}") from None
    probe = torch.randn(2, channels, *size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = reference(pixel_values=probe).logits.float()
        got = net(probe).float()
    if got.shape != want.shape:
        raise CheckpointError(f"{folder}: the mapped model gives {tuple(got.shape)} logits, transformers "
                              f"{tuple(want.shape)}")
    error = ((got - want).abs().max() / want.abs().max().clamp(min=1e-6)).item()
    if not error <= PROBE_TOLERANCE:
        raise CheckpointError(f"{folder}: the timm mapping of this {type(reference).__name__} computes something "
                              f"else (relative logit error {error:.2e} on a probe batch); a config option is not "
                              f"reproduced")
    return error
