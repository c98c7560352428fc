"""Build a timm model by name and fill it from a local weights file; never from a hub."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import CheckpointError, UnknownModelError
from .tiny import TINY_DATA_CONFIG, TINY_MODEL_NAME, load_tiny_default

KNOWN_MODELS = (
    "deit_tiny_patch16_224", "deit_small_patch16_224", "deit_base_patch16_224",
    "vit_small_patch16_224", "vit_base_patch16_224",
    "swin_tiny_patch4_window7_224", "swin_small_patch4_window7_224",
)


@dataclass
class LoadedModel:
    """A float model plus what is needed to rebuild it and to feed it images."""

    model: nn.Module
    name: str  # timm name, TINY_MODEL_NAME, or "custom"
    data_config: dict[str, Any]
    arch_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return int(getattr(self.model, "num_classes", 0) or _head_out_features(self.model))


def _head_out_features(model: nn.Module) -> int:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else 0


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        elif path.suffix == ".npz":
            state = {"__npz__": path}  # handled by timm's own npz loader
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except Exception as exc:  # corrupt, truncated, or not a weights file
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model", "model_ema"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"checkpoint {path} holds no state dict")
    return state


def load_model(
    name: str | None = None,
    checkpoint: str | Path | None = None,
    model: nn.Module | None = None,
    data_config: dict[str, Any] | None = None,
) -> LoadedModel:
    """Return the float model to quantize.

    `model` takes a user's own module (built from timm blocks); otherwise `name` is a
    timm ViT/DeiT/Swin name loaded from `checkpoint`, or None for the embedded default.
    """
    import timm

    if model is not None:
        cfg = data_config or timm.data.resolve_data_config({}, model=model)
        return LoadedModel(model.eval(), "custom", dict(cfg))
    if name in (None, "", TINY_MODEL_NAME):
        if checkpoint is not None:
            raise CheckpointError("the embedded default ships its own weights; do not pass --checkpoint with it")
        return LoadedModel(load_tiny_default(), TINY_MODEL_NAME, dict(TINY_DATA_CONFIG))
    if not timm.is_model(name):
        hint = ", ".join(KNOWN_MODELS)
        raise UnknownModelError(f"unknown model '{name}' (not a timm model name; tested: {hint})")
    if checkpoint is None:
        raise CheckpointError(
            f"model '{name}' needs local weights: pass --checkpoint PATH (.pth, .safetensors or .npz); dfqvit never downloads"
        )
    path = Path(checkpoint)
    state = _read_state_dict(path)
    net = timm.create_model(name, pretrained=False)
    try:
        if "__npz__" in state:
            net.load_pretrained(str(path))
        else:
            state = _adapt_state_dict(net, state)
            net.load_state_dict(state, strict=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} does not fit model '{name}': {first[:300]}") from None
    cfg = timm.data.resolve_data_config({}, model=net)
    return LoadedModel(net.eval(), name, dict(cfg))


def _adapt_state_dict(net: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Apply timm's own checkpoint filter (original DeiT/Swin layouts → timm layout) when it has one."""
    import importlib

    module = importlib.import_module(type(net).__module__)
    fn = getattr(module, "checkpoint_filter_fn", None)
    if fn is None:
        return state
    try:
        return fn(state, net)
    except Exception:
        return state
