"""Build a timm model by name (with architecture overrides, or from a model-config JSON) and
fill it from a local weights file; never from a hub."""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import CheckpointError, ConfigError, UnknownModelError
from ..utils import read_json
from .tiny import TINY_DATA_CONFIG, TINY_MODEL_NAME, load_tiny_default

# Names exercised end to end by the tests or benchmarks, with the overrides known to work.
KNOWN_MODELS = {
    "deit_tiny_patch16_224": "img_size, patch_size, num_classes (CIFAR DeiT: img_size=32,patch_size=4,num_classes=10)",
    "deit_small_patch16_224": "img_size, patch_size, num_classes",
    "deit_base_patch16_224": "img_size, patch_size, num_classes",
    "vit_tiny_patch16_224": "img_size, patch_size, num_classes (the ImageNet ViT-Tiny of ../shared/imagenet)",
    "vit_small_patch16_224": "img_size, patch_size, num_classes",
    "vit_base_patch16_224": "img_size, patch_size, num_classes",
    "swin_tiny_patch4_window7_224": "img_size, patch_size, window_size, embed_dim, depths, num_heads, num_classes "
                                    "(CIFAR Swin: img_size=32,patch_size=2,window_size=4,embed_dim=48,num_classes=10)",
    "swin_small_patch4_window7_224": "img_size, window_size, num_classes",
}
DATA_CONFIG_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


@dataclass
class LoadedModel:
    """A float model plus what is needed to rebuild it and to feed it images."""

    model: nn.Module
    name: str  # timm name, TINY_MODEL_NAME, or "custom"
    data_config: dict[str, Any]
    arch_kwargs: dict[str, Any] = field(default_factory=dict)  # the --model-args overrides
    class_names: list[str] | None = None  # index → name, when known (model config, --class-names)
    hf_config: dict[str, Any] | None = None  # config.json of a transformers folder (--model-dir), which rebuilds it

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model, "num_classes", 0) or _head_out_features(self.model))


def _head_out_features(model: nn.Module) -> int:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else 0


def parse_model_args(text: str | None) -> dict[str, Any]:
    """`img_size=32,patch_size=4,depths=[2,2,6,2],qkv_bias=false` → a dict of Python values.

    Values are read as Python literals (int, float, bool, None, lists, tuples); `true`/`false`
    are accepted; anything else stays a string.
    """
    if not text:
        return {}
    items, depth, current = [], 0, ""
    for ch in text:
        depth += ch in "[(" and 1 or 0
        depth -= ch in "])" and 1 or 0
        if ch == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += ch
    items.append(current)
    out: dict[str, Any] = {}
    for item in filter(None, (i.strip() for i in items)):
        key, sep, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if not sep or not key.isidentifier():
            raise ConfigError(f"--model-args: '{item}' is not KEY=VALUE")
        lowered = {"true": "True", "false": "False", "none": "None"}.get(raw.lower(), raw)
        try:
            value = ast.literal_eval(lowered)
        except (ValueError, SyntaxError):
            value = raw
        out[key] = list(value) if isinstance(value, tuple) else value
    return out


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a weights file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif path.suffix == ".npz":
            return {"__npz__": path}  # handled by timm's own npz loader
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # corrupt, truncated, text, or not a weights file at all
        raise CheckpointError(f"checkpoint {path} is not a readable weights file (expected a .pth/.pt written by "
                              f"torch.save, a .safetensors or a timm .npz; is it truncated or a text file?)") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model", "model_ema"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} holds no state dict (name → tensor)")
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}  # float16 files → float32


def describe_mismatch(own: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """Missing / unexpected keys and the first shape mismatch, in one line."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:3])}"
                     f"{', …' if len(unexpected) > 3 else ''})")
    for k, v in own.items():
        if k in state and tuple(state[k].shape) != tuple(v.shape):
            parts.append(f"first shape mismatch: '{k}' is {tuple(state[k].shape)} in the file, {tuple(v.shape)} in the model")
            break
    return "; ".join(parts) or "the tensors do not fit"


def _create(name: str, model_args: dict[str, Any]) -> nn.Module:
    import timm

    if not timm.is_model(name):
        hint = ", ".join(KNOWN_MODELS)
        raise UnknownModelError(f"unknown model '{name}' (not a timm model name; tested: {hint})")
    try:
        return timm.create_model(name, pretrained=False, **model_args)
    except TypeError as exc:
        bad = str(exc).rsplit("'", 2)[-2] if "'" in str(exc) else str(exc)
        raise ConfigError(f"--model-args: '{bad}' is not an argument of {name}") from None
    except Exception as exc:  # e.g. an img_size the patch or window size does not divide
        raise ConfigError(f"--model-args {model_args} do not build {name}: {str(exc).splitlines()[0][:200]}") from None


def load_model(
    name: str | None = None,
    checkpoint: str | Path | None = None,
    model: nn.Module | None = None,
    data_config: dict[str, Any] | None = None,
    model_args: dict[str, Any] | str | None = None,
    class_names: list[str] | None = None,
    hf_dir: str | Path | None = None,
) -> LoadedModel:
    """Return the float model to quantize.

    `model` takes a user's own module (built from timm blocks); `hf_dir` a local transformers
    image-classification folder (ViT, DeiT, Swin; see models/hf.py); otherwise `name` is a
    timm ViT/DeiT/Swin name built with `model_args` overrides and loaded strictly from
    `checkpoint`, or None for the embedded default. `data_config` replaces the model's own.
    """
    args = parse_model_args(model_args) if isinstance(model_args, str) else dict(model_args or {})
    if hf_dir is not None:
        if name or checkpoint or args or model is not None:
            raise ConfigError("--model-dir names the model and its weights: drop --model / --checkpoint / --model-args")
        from .hf import architecture_of, load_hf_folder

        net, config, cfg, names = load_hf_folder(hf_dir, data_config)
        return LoadedModel(net, f"transformers:{architecture_of(config)}", _normalise_data_config(cfg),
                           class_names=class_names or names, hf_config=config)
    if model is not None:
        cfg = data_config or model_data_config(model)
        return LoadedModel(model.eval(), "custom", _normalise_data_config(cfg), class_names=class_names)
    if name in (None, "", TINY_MODEL_NAME):
        if checkpoint is not None:
            raise CheckpointError("the embedded default ships its own weights; do not pass --checkpoint with it")
        if args:
            raise ConfigError("--model-args needs --model NAME (the embedded default has a fixed architecture)")
        return LoadedModel(load_tiny_default(), TINY_MODEL_NAME, dict(TINY_DATA_CONFIG), class_names=class_names)
    net = _create(name, args)
    if checkpoint is None:
        raise CheckpointError(
            f"model '{name}' needs local weights: pass --checkpoint PATH (.pth, .safetensors or .npz); dfqvit never downloads"
        )
    path = Path(checkpoint)
    state = _read_state_dict(path)
    try:
        if "__npz__" in state:
            net.load_pretrained(str(path))
        else:
            net.load_state_dict(_adapt_state_dict(net, state), strict=True)
    except Exception as exc:  # described against the file as it is, not as timm's filter reshaped it
        detail = describe_mismatch(net.state_dict(), state) if "__npz__" not in state else str(exc).splitlines()[0][:300]
        raise CheckpointError(f"checkpoint {path} does not fit model '{name}'"
                              f"{' with ' + str(args) if args else ''}: {detail}") from None
    bad = [k for k, v in net.state_dict().items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"checkpoint {path} holds non-finite (NaN or Inf) values in {len(bad)} tensor(s): "
                              f"{', '.join(bad[:3])}{', …' if len(bad) > 3 else ''}")
    cfg = data_config or model_data_config(net)
    return LoadedModel(net.eval(), name, _normalise_data_config(cfg), args, class_names)


def model_data_config(net: nn.Module) -> dict[str, Any]:
    """timm's eval preprocessing for `net`, at the input size the model was built for: timm reads
    the size from the pretrained config (224 for deit_tiny_patch16_224 even when built with
    img_size=32), so the patch embedding's own img_size wins."""
    import timm

    cfg = dict(timm.data.resolve_data_config({}, model=net))
    patch_embed = getattr(net, "patch_embed", None)
    img_size = getattr(patch_embed, "img_size", None)
    if img_size is not None:
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        cfg["input_size"] = (cfg["input_size"][0], int(h), int(w))
    return cfg


def patch_pixels(net: nn.Module) -> int | None:
    """Width in input pixels of the patches a model tokenizes its image into: the stride of its first
    convolution whose kernel equals its stride (the patch embedding of timm and Hugging Face ViTs and
    Swins); None when it has none."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == tuple(m.stride):
            return int(m.stride[0])
    return None


def fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers (in order: dtypes, shapes, bytes; not their names,
    which the observable copy changes): what a resumed synthesis checks it continues on the same weights."""
    import hashlib

    from ..utils import hash_tensor

    h = hashlib.sha256()
    for t in model.state_dict().values():
        hash_tensor(h, t)
    return h.hexdigest()


def _normalise_data_config(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.items() if k in DATA_CONFIG_KEYS}


def load_model_config(path: str | Path) -> LoadedModel:
    """A model described by a JSON file: `timm_model`, `model_args`, `data_config`, `weights`
    (relative to the JSON) and optional `class_names` (a list; any other value is ignored)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"model config not found: {path}")
    spec = read_json(path, "model config")
    missing = [k for k in ("timm_model", "weights") if k not in spec]
    if missing:
        raise ConfigError(f"model config {path} lacks the field(s) {', '.join(missing)}")
    names = spec.get("class_names")
    return load_model(spec["timm_model"], path.parent / spec["weights"], data_config=spec.get("data_config"),
                      model_args=spec.get("model_args") or {},
                      class_names=list(names) if isinstance(names, list) else None)


def _adapt_state_dict(net: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply timm's own checkpoint filter (original DeiT/Swin layouts → timm layout) when it has one.

    Only for files whose key names are not timm's: the filter also resamples position
    embeddings and patch kernels to fit, which would hide a wrong `--model-args`.
    """
    import importlib

    if set(state) == set(net.state_dict()):
        return state
    module = importlib.import_module(type(net).__module__)
    fn = getattr(module, "checkpoint_filter_fn", None)
    if fn is None:
        return state
    try:
        return fn(state, net)
    except Exception:
        return state
