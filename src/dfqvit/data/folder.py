"""ImageNet-layout folders: one sub-folder per class.

Synset-named folders (n01440764, ...) map to ImageNet-1k class indices; any other
names map to their sorted order. Every file is opened up front so a broken image
fails before minutes of work, not in the middle of them.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".jpe"}
SYNSET = re.compile(r"^n\d{8}$")


def _class_index(class_names: list[str], num_classes: int, root: Path) -> dict[str, int]:
    if class_names and all(SYNSET.match(c) for c in class_names):
        from timm.data import ImageNetInfo

        synsets = ImageNetInfo().label_names()
        if num_classes != len(synsets):
            raise DataError(f"{root}: synset-named classes need a 1000-class head, the model has {num_classes}")
        lookup = {s: i for i, s in enumerate(synsets)}
        unknown = [c for c in class_names if c not in lookup]
        if unknown:
            raise DataError(f"{root}: folder '{unknown[0]}' is not an ImageNet-1k synset")
        return {c: lookup[c] for c in class_names}
    if len(class_names) > num_classes:
        raise DataError(f"{root}: {len(class_names)} class folders but the model's head has {num_classes} classes")
    return {c: i for i, c in enumerate(sorted(class_names))}


class ImageFolderDataset(Dataset):
    def __init__(self, root: str | Path, transform: Any, num_classes: int) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder not found: {root}")
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise DataError(f"{root}: no class sub-folders (expected ImageNet layout: root/<class>/<image>)")
        mapping = _class_index([p.name for p in class_dirs], num_classes, root)
        self.samples: list[tuple[Path, int]] = []
        for d in class_dirs:
            for f in sorted(d.iterdir()):
                if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                    self.samples.append((f, mapping[d.name]))
        if not self.samples:
            raise DataError(f"{root}: no images found (suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})")
        for path, _ in self.samples:
            try:
                with Image.open(path) as im:
                    im.verify()
            except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                raise DataError(f"unreadable image {path}: {type(exc).__name__}") from None
        self.transform = transform
        self.root = root

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        try:
            with Image.open(path) as im:
                img = im.convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"unreadable image {path}: {type(exc).__name__}") from None
        return self.transform(img), label


def eval_transform(data_config: dict[str, Any]):
    from timm.data import create_transform

    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return create_transform(**{k: data_config[k] for k in keys if k in data_config}, is_training=False)


def load_folder_tensors(root: str | Path, data_config: dict[str, Any], num_classes: int,
                        limit: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Load (a random subset of) a folder into memory: the calibration path, where N is small."""
    ds = ImageFolderDataset(root, eval_transform(data_config), num_classes)
    idx = list(range(len(ds)))
    if limit is not None and limit < len(ds):
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(ds), generator=gen)[:limit].tolist()
    items = [ds[i] for i in idx]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])
