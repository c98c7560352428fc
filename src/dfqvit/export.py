"""The quantized artefact: packed integer weight codes + scales + zero points + config, verified on load.

`quantized.safetensors` (format version 2) holds every quantized weight as its integer
codes 0..2^b-1 packed densely (a most-significant-bit-first bit stream: two 4-bit codes
per byte, four 2-bit codes, eight 3-bit codes in three bytes; 8-bit codes one per byte),
its per-channel scale and zero point, the activation scales, the ACM matrices and the
float tensors that stay float. The metadata holds the model (name, architecture
overrides, data config, class names), the QuantConfig, and a SHA-256 over metadata and
tensors, so a corrupt or edited file is refused instead of silently giving other logits.
Version 1 files (one byte per code, no checksum) still load.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .errors import CheckpointError
from .models.loading import LoadedModel, describe_mismatch
from .models.tiny import TINY_MODEL_NAME, build_tiny_vit
from .outputs import write_file_atomically
from .quant.config import QuantConfig
from .quant.wrap import QuantizedViT
from .utils import hash_tensor

FORMAT = "dfqvit-quantized"
FORMAT_VERSION = 2
LEGACY_FORMAT = "dfqvit-quantized-v1"
CODES_SUFFIX = "weight_codes"
REQUIRED_FIELDS = ("model", "arch_kwargs", "data_config", "quant_config", "weight_codes", "sha256")


def pack_codes(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes (any shape, values < 2^bits) → a dense uint8 bit stream."""
    flat = codes.detach().cpu().to(torch.uint8).flatten().numpy()
    if bits == 8:
        return torch.from_numpy(flat.copy())
    planes = np.unpackbits(flat[:, None], axis=1)[:, 8 - bits:]
    return torch.from_numpy(np.packbits(planes.reshape(-1)))


def unpack_codes(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of `pack_codes`: the first `numel` codes, as uint8."""
    raw = packed.detach().cpu().to(torch.uint8).numpy()
    if bits == 8:
        return torch.from_numpy(raw[:numel].copy())
    planes = np.unpackbits(raw)[: numel * bits].reshape(numel, bits)
    full = np.zeros((numel, 8), dtype=np.uint8)
    full[:, 8 - bits:] = planes
    return torch.from_numpy(np.packbits(full, axis=1).reshape(-1))


def packed_size(numel: int, bits: int) -> int:
    return math.ceil(numel * bits / 8)


def _weighted_prefixes(qmodel: QuantizedViT) -> dict[str, nn.Module]:
    layers = set(qmodel.weighted_layers())
    return {name + ".": m for name, m in qmodel.named_modules() if m in layers}


def _checksum(meta: dict[str, Any], state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "sha256"}, sort_keys=True,
                                  default=list).encode())
    for key in sorted(state):
        hash_tensor(h, state[key], f"{key}|")
    return h.hexdigest()


def save_quantized(qmodel: QuantizedViT, loaded: LoadedModel, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write the artefact atomically (a temporary file moved into place), with the usual file mode."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in qmodel.state_dict().items()}
    codes_info = {}
    for prefix, layer in _weighted_prefixes(qmodel).items():
        state.pop(prefix + "inner.weight")
        bits = layer.weight_quantizer.bits
        state[prefix + CODES_SUFFIX] = pack_codes(layer.weight_quantizer.integer(layer.inner.weight.detach()), bits)
        codes_info[prefix + CODES_SUFFIX] = {"bits": bits, "shape": list(layer.inner.weight.shape)}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "model": loaded.name,
            "arch_kwargs": loaded.arch_kwargs, "data_config": loaded.data_config,
            "class_names": loaded.class_names, "hf_config": loaded.hf_config,
            "quant_config": qmodel.config.to_dict(), "weight_codes": codes_info,
            **(extra or {})}
    meta["sha256"] = _checksum(meta, state)
    path = Path(path)
    return write_file_atomically(path, lambda tmp: save_file(state, str(tmp),
                                                             metadata={"dfqvit": json.dumps(meta, default=list)}))


def _looks_truncated(path: Path) -> bool:
    """A safetensors file starts with an 8-byte header length and the JSON header; one cut short
    has a plausible length that runs past its end, or a header whose tensors end past it."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return size > 0
        n = int.from_bytes(head, "little")
        if n > 100_000_000:
            return False  # not a safetensors header at all
        if 8 + n > size:
            return f.read(1) == b"{"
        try:
            header = json.loads(f.read(n))
        except ValueError:
            return False
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    return bool(ends) and 8 + n + max(ends) > size


def read_metadata(path: str | Path) -> dict[str, Any]:
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"quantized model {path} is a directory; pass the quantized.safetensors inside it")
    if not path.is_file():
        raise CheckpointError(f"quantized model not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["dfqvit"])
    except Exception:
        if _looks_truncated(path):
            raise CheckpointError(f"{path} is truncated or corrupt (its header promises more bytes than the "
                                  f"file holds)") from None
        raise CheckpointError(f"{path} is not a dfqvit quantized model (no dfqvit metadata)") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its dfqvit metadata is not a JSON object")
    if meta.get("format") == LEGACY_FORMAT:
        if "weight_codes" in meta or "format_version" in meta:
            raise CheckpointError(f"{path} claims the version-1 format but carries version-2 fields: it was edited; "
                                  f"refusing it")
        meta["format_version"] = 1
    elif meta.get("format") != FORMAT or meta.get("format_version") not in (FORMAT_VERSION,):
        raise CheckpointError(f"{path}: unsupported format {meta.get('format')!r} version {meta.get('format_version')!r} "
                              f"(this dfqvit reads versions 1..{FORMAT_VERSION})")
    required = REQUIRED_FIELDS if meta["format_version"] >= 2 else ("model", "data_config", "quant_config")
    missing = [k for k in required if k not in meta]
    if missing:
        raise CheckpointError(f"{path}: metadata lacks the field(s) {', '.join(missing)}")
    return meta


def _skeleton(meta: dict[str, Any], path: Path, model: nn.Module | None) -> nn.Module:
    import timm

    name = meta["model"]
    if model is not None:
        return model
    if name == TINY_MODEL_NAME:
        return build_tiny_vit()
    if meta.get("hf_config"):
        from .models.hf import build_from_config

        try:
            return build_from_config(meta["hf_config"])
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot rebuild its transformers model: {str(exc).splitlines()[0][:200]}") \
                from None
    if name == "custom":
        raise CheckpointError(f"{path} holds a custom model: pass its nn.Module skeleton to load_quantized(model=...)")
    if not isinstance(name, str) or not timm.is_model(name):
        raise CheckpointError(f"{path}: its metadata names an unknown model {name!r}")
    try:
        return timm.create_model(name, pretrained=False, **(meta.get("arch_kwargs") or {}))
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot rebuild {name} with {meta.get('arch_kwargs')}: "
                              f"{str(exc).splitlines()[0][:200]}") from None


def load_quantized(path: str | Path, model: nn.Module | None = None) -> tuple[QuantizedViT, LoadedModel, dict[str, Any]]:
    """Rebuild and verify the quantized model; pass `model` (an untrained skeleton is enough) for custom modules."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_metadata(path)
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"{path} is truncated or corrupt: {str(exc).splitlines()[0][:120]}") from None
    if "sha256" in meta or meta["format_version"] >= 2:  # whatever version a file claims, a checksum is checked
        if _checksum(meta, state) != meta.get("sha256"):
            raise CheckpointError(f"{path}: checksum mismatch, the file is corrupt or was edited after it was written")
    else:
        import warnings

        warnings.warn(f"{path} is a version-1 artefact (dfqvit 0.1): it carries no checksum, so corruption cannot "
                      f"be detected; save it again with this dfqvit")
    try:
        config = QuantConfig.from_dict(meta["quant_config"])
    except Exception as exc:
        raise CheckpointError(f"{path}: invalid quant_config in its metadata: {exc}") from None
    skeleton = _skeleton(meta, path, model)
    qmodel = QuantizedViT(skeleton, config)
    expected = {k: v for k, v in qmodel.state_dict().items()}
    for prefix, layer in _weighted_prefixes(qmodel).items():
        key, bits, shape = prefix + CODES_SUFFIX, layer.weight_quantizer.bits, tuple(layer.inner.weight.shape)
        if key not in state:
            continue  # reported by the key comparison below
        numel = math.prod(shape)
        stored = state.pop(key)
        if meta["format_version"] >= 2:
            recorded = meta["weight_codes"].get(key, {})
            if tuple(recorded.get("shape", ())) != shape:
                raise CheckpointError(f"{path} does not fit the model its metadata names ({meta['model']}): "
                                      f"'{key}' holds a {tuple(recorded.get('shape', ()))} weight, the model's layer "
                                      f"is {shape}")
            if stored.numel() != packed_size(numel, bits):
                raise CheckpointError(f"{path}: '{key}' holds {stored.numel()} bytes; {numel} codes of {bits} bits "
                                      f"need {packed_size(numel, bits)} (wrong bit width or architecture)")
            codes = unpack_codes(stored, bits, numel).float().reshape(shape)
        else:
            if stored.numel() != numel:
                raise CheckpointError(f"{path}: '{key}' has {stored.numel()} codes, the model's layer {numel}")
            codes = stored.float().reshape(shape)
        if codes.max().item() > 2**bits - 1:
            raise CheckpointError(f"{path}: '{key}' holds codes up to {int(codes.max())}, above 2^{bits}-1 "
                                  f"for its {bits}-bit width")
        scale, zp = state.get(prefix + "weight_quantizer.scale"), state.get(prefix + "weight_quantizer.zero_point")
        if scale is None or zp is None:
            continue
        state[prefix + "inner.weight"] = (codes - zp) * scale
    resizable = {k for k in expected if k.endswith(".correction")}  # ACM matrices: empty until loaded
    if set(state) != set(expected) or any(tuple(state[k].shape) != tuple(v.shape)
                                          for k, v in expected.items() if k not in resizable):
        raise CheckpointError(f"{path} does not fit the model its metadata names ({meta['model']}): "
                              f"{describe_mismatch(expected, state)}")
    qmodel.load_state_dict(state, strict=True)
    qmodel.set_mode("quant")
    data_config = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["data_config"].items()}
    loaded = LoadedModel(skeleton, meta["model"], data_config, meta.get("arch_kwargs") or {},
                         meta.get("class_names"), meta.get("hf_config"))
    return qmodel.eval(), loaded, meta
