"""ImageNet-layout folders: one sub-folder per class.

Class folders map to the model's class indices by name, never silently by position:
names the model knows (its config's class names or a `--class-names` file), ImageNet
synsets (n01440764, ...), or integers 0..K-1; plain sorted order only when the folder
count equals the head's classes. Every file is decoded once up front, so a broken image
fails before minutes of work, and the error lists all of them, not just the first.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..errors import DataError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".jpe"}
SYNSET = re.compile(r"^n\d{8}$")
INDEX = re.compile(r"^[0-9]+$")  # ASCII digits only: '²' or '٣' are digits to str.isdigit, not class indices
LISTED = 5  # unreadable files named in an error message


def read_class_names(path: str | Path) -> list[str]:
    """A `--class-names` file: one name per line, in class-index order (blank lines ignored)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"class-names file not found: {path}")
    names = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if not names:
        raise DataError(f"class-names file {path} is empty")
    return names


def class_index(folders: list[str], num_classes: int, root: Path, class_names: list[str] | None = None) -> dict[str, int]:
    """Folder name → class index, by name; refuse rather than guess."""
    if class_names:
        if len(class_names) != num_classes:
            raise DataError(f"{len(class_names)} class names given but the model's head has {num_classes} classes")
        lookup = {n: i for i, n in enumerate(class_names)}
        unknown = [f for f in folders if f not in lookup]
        if unknown and num_classes == 1000 and all(SYNSET.match(c) for c in folders):
            return class_index(folders, num_classes, root)  # ImageNet-1k labels ("tench, ...") over synset folders
        if unknown:
            raise DataError(f"{root}: folder '{unknown[0]}' is not one of the model's classes "
                            f"({', '.join(class_names[:10])}{', …' if len(class_names) > 10 else ''})")
        return {f: lookup[f] for f in folders}
    if all(SYNSET.match(c) for c in folders):
        from timm.data import ImageNetInfo

        synsets = ImageNetInfo().label_names()
        if num_classes != len(synsets):
            raise DataError(f"{root}: synset-named classes need a 1000-class head, the model has {num_classes}")
        lookup = {s: i for i, s in enumerate(synsets)}
        unknown = [c for c in folders if c not in lookup]
        if unknown:
            raise DataError(f"{root}: folder '{unknown[0]}' is not an ImageNet-1k synset")
        return {c: lookup[c] for c in folders}
    numbered = [c for c in folders if INDEX.match(c)]
    if numbered and len(numbered) != len(folders):
        other = next(c for c in folders if not INDEX.match(c))
        raise DataError(f"{root}: class folders mix class indices ('{numbered[0]}') with other names ('{other}'); "
                        f"name every folder 0..{num_classes - 1}, or pass --class-names FILE")
    if numbered:
        too_big = [c for c in folders if int(c) >= num_classes]
        if too_big:
            raise DataError(f"{root}: folder '{too_big[0]}' is not a class index of a {num_classes}-class head")
        return {c: int(c) for c in folders}
    if len(folders) != num_classes:
        raise DataError(f"{root}: {len(folders)} class folders but the model's head has {num_classes} classes, and "
                        f"the folder names say nothing about which classes they are: name the folders 0..{num_classes - 1} "
                        f"or pass --class-names FILE (one name per line, in class-index order)")
    return {c: i for i, c in enumerate(sorted(folders))}


def open_rgb(path: str | Path) -> Image.Image:
    """Decode any PIL-readable image to 8-bit RGB, scaling 16-bit and float images instead of clipping."""
    with Image.open(path) as im:
        im.load()
        if im.mode.startswith("I") or im.mode == "F":
            arr = np.asarray(im).astype(np.float64)
            if im.mode.startswith("I;16") or (im.mode == "I" and arr.max() > 255):
                arr = arr * (255.0 / 65535.0)
            elif im.mode == "F" and arr.max() <= 1.0:
                arr = arr * 255.0
            return Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8), "L").convert("RGB")
        return im.convert("RGB")


def _why_unreadable(path: Path) -> str | None:
    try:
        open_rgb(path)
        return None
    except UnidentifiedImageError:
        return "not an image"
    except (OSError, SyntaxError, ValueError) as exc:
        msg = str(exc).lower()
        return "truncated" if "truncat" in msg else (str(exc).splitlines()[0][:60] or type(exc).__name__)
    except Image.DecompressionBombError:
        return f"too large (over {Image.MAX_IMAGE_PIXELS} pixels: PIL's decompression-bomb guard)"


class ImageFolderDataset(Dataset):
    """Images under root/<class>/; `skipped` lists (path, reason) of files left out with `skip_bad`."""

    def __init__(self, root: str | Path, transform: Any, num_classes: int, class_names: list[str] | None = None,
                 skip_bad: bool = False) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder not found: {root}")
        class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not class_dirs:
            raise DataError(f"{root}: no class sub-folders (expected ImageNet layout: root/<class>/<image>)")
        mapping = class_index([p.name for p in class_dirs], num_classes, root, class_names)
        candidates: list[tuple[Path, int]] = []
        empty = []
        for d in class_dirs:
            files = [f for f in sorted(d.iterdir()) if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
            if not files:
                empty.append(d.name)
            candidates += [(f, mapping[d.name]) for f in files]
        if not candidates:
            raise DataError(f"{root}: no images found (suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})")
        if empty:
            raise DataError(f"{root}: {len(empty)} class folder(s) hold no images: {', '.join(empty[:LISTED])}")
        bad = [(str(p.relative_to(root)), why) for p, _ in candidates if (why := _why_unreadable(p))]
        if bad and not skip_bad:
            listed = ", ".join(f"{p} ({why})" for p, why in bad[:LISTED])
            more = f" and {len(bad) - LISTED} more" if len(bad) > LISTED else ""
            raise DataError(f"{root}: {len(bad)} unreadable image(s): {listed}{more}; "
                            f"remove them or pass --skip-bad-images")
        bad_paths = {root / p for p, _ in bad}
        self.samples: list[tuple[Path, int]] = [(p, y) for p, y in candidates if p not in bad_paths]
        if not self.samples:
            raise DataError(f"{root}: none of the {len(candidates)} images is readable")
        self.skipped: list[tuple[str, str]] = bad
        self.transform = transform
        self.root = root

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[i]
        try:
            img = open_rgb(path)
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:  # changed on disk since the scan
            raise DataError(f"unreadable image {path}: {type(exc).__name__}") from None
        return self.transform(img), label

    def skipped_report(self) -> dict[str, Any]:
        return {"count": len(self.skipped), "files": [f"{p} ({why})" for p, why in self.skipped]}


def eval_transform(data_config: dict[str, Any]):
    from timm.data import create_transform

    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return create_transform(**{k: data_config[k] for k in keys if k in data_config}, is_training=False)


def load_folder_tensors(root: str | Path, data_config: dict[str, Any], num_classes: int, limit: int | None = None,
                        seed: int = 0, class_names: list[str] | None = None,
                        skip_bad: bool = False, skipped: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Load (a random subset of) a folder into memory: the calibration path, where N is small.
    With `skip_bad`, the files left out are appended to `skipped` ("path (why)")."""
    ds = ImageFolderDataset(root, eval_transform(data_config), num_classes, class_names, skip_bad)
    if skipped is not None and ds.skipped:
        skipped.extend(ds.skipped_report()["files"])
    idx = list(range(len(ds)))
    if limit is not None and limit < len(ds):
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(ds), generator=gen)[:limit].tolist()
    items = [ds[i] for i in idx]
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])
