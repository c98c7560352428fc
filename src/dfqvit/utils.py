"""Small shared helpers: seeding, device choice, atomic output directories."""
from __future__ import annotations

import contextlib
import os
import random
import shutil
from pathlib import Path
from typing import Iterator

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


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        from .errors import ConfigError

        raise ConfigError(f"--device {device} asked for but no CUDA device is available")
    return torch.device(device)


def staging_dir(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike, keep_on_failure: tuple[str, ...] = ()) -> Iterator[Path]:
    """Write into `<out>.partial/` and move it to `out` only when the block succeeds.

    On failure everything is removed except files named in `keep_on_failure`
    (the synthesis checkpoint, so `--resume` can continue); `out` is never half-written.
    """
    out = Path(out)
    stage = staging_dir(out)
    stage.mkdir(parents=True, exist_ok=True)
    try:
        yield stage
    except BaseException:
        for child in stage.iterdir():
            if child.name in keep_on_failure:
                continue
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        if not any(stage.iterdir()):
            stage.rmdir()
        raise
    for name in keep_on_failure:
        leftover = stage / name
        if leftover.exists():
            leftover.unlink()
    if out.exists():
        shutil.rmtree(out)
    os.replace(stage, out)
