"""Small shared helpers: seeding and device choice."""
from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for explicit randomness."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


def hash_tensor(h: "hashlib._Hash", t: torch.Tensor, label: str = "") -> None:
    """Feed `t` into the hash `h`: `label`, dtype and shape, then its bytes (the artefact checksum
    and the model fingerprint both hash tensors this way)."""
    t = t.detach().cpu().contiguous()
    h.update(f"{label}{t.dtype}|{tuple(t.shape)}|".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")


DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device(device: str | None) -> str:
    """Accept cpu, cuda, cuda:N or auto; anything else is a one-line error."""
    from .errors import ConfigError

    device = device or "auto"
    if not DEVICE_PATTERN.match(device):
        raise ConfigError(f"--device must be cpu, cuda, cuda:N or auto, got {device!r}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device} asked for but no CUDA device is available")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
    return device


def resolve_device(device: str | None) -> torch.device:
    device = check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def read_json(path: str | Path, what: str = "") -> Any:
    """A JSON file's value; a file that is not JSON (or not text) is one ConfigError line."""
    from .errors import ConfigError

    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what + ' ' if what else ''}{path} is not valid JSON: {exc}") from None
