"""The deployable artefact: integer weight codes + scales + zero points + config.

`quantized.safetensors` holds every quantized weight as uint8 codes 0..2^b-1 (one
byte each, not bit-packed), its per-channel scale and zero point, the activation
scales, the ACM matrices and the float tensors that stay float (norms, biases,
embeddings). Its metadata holds the model name and the QuantConfig, so
`load_quantized` rebuilds the same network and gives the same logits.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import CheckpointError
from .models.loading import LoadedModel
from .models.tiny import TINY_MODEL_NAME, build_tiny_vit
from .quant.config import QuantConfig
from .quant.wrap import QuantizedViT

FORMAT = "dfqvit-quantized-v1"
CODES_SUFFIX = "weight_codes"


def _weighted_prefixes(qmodel: QuantizedViT) -> dict[str, nn.Module]:
    return {name + ".": m for name, m in qmodel.named_modules() if m in set(qmodel.weighted_layers())}


def save_quantized(qmodel: QuantizedViT, loaded: LoadedModel, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in qmodel.state_dict().items()}
    for prefix, layer in _weighted_prefixes(qmodel).items():
        state.pop(prefix + "inner.weight")
        codes = layer.weight_quantizer.integer(layer.inner.weight.detach())
        state[prefix + CODES_SUFFIX] = codes.to(torch.uint8).cpu().contiguous()
    meta = {"format": FORMAT, "model": loaded.name, "arch_kwargs": loaded.arch_kwargs,
            "data_config": loaded.data_config, "quant_config": qmodel.config.to_dict(), **(extra or {})}
    path = Path(path)
    save_file(state, str(path), metadata={"dfqvit": json.dumps(meta, default=list)})
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"quantized model not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["dfqvit"])
    except Exception:
        raise CheckpointError(f"{path} is not a dfqvit quantized model") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported format {meta.get('format')!r}")
    return meta


def load_quantized(path: str | Path, model: nn.Module | None = None) -> tuple[QuantizedViT, LoadedModel, dict[str, Any]]:
    """Rebuild the quantized model; pass `model` (an untrained skeleton is enough) for custom modules."""
    import timm
    from safetensors.torch import load_file

    meta = read_metadata(path)
    name = meta["model"]
    if model is not None:
        skeleton = model
    elif name == TINY_MODEL_NAME:
        skeleton = build_tiny_vit()
    elif name == "custom":
        raise CheckpointError(f"{path} holds a custom model: pass its nn.Module skeleton to load_quantized(model=...)")
    else:
        skeleton = timm.create_model(name, pretrained=False, **meta.get("arch_kwargs", {}))
    qmodel = QuantizedViT(skeleton, QuantConfig.from_dict(meta["quant_config"]))
    state = load_file(str(path))
    for prefix, layer in _weighted_prefixes(qmodel).items():
        codes = state.pop(prefix + CODES_SUFFIX).float()
        scale, zp = state[prefix + "weight_quantizer.scale"], state[prefix + "weight_quantizer.zero_point"]
        state[prefix + "inner.weight"] = (codes - zp) * scale
    try:
        qmodel.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit the rebuilt model: {str(exc).splitlines()[0]}") from None
    qmodel.set_mode("quant")
    data_config = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["data_config"].items()}
    loaded = LoadedModel(skeleton, name, data_config, meta.get("arch_kwargs", {}))
    return qmodel.eval(), loaded, meta
