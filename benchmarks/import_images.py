"""Put synthetic image sets made on another machine (imagenet_gpu.py --export-images) into
this machine's benchmark cache, so that the tables here calibrate on the same images.

    python benchmarks/import_images.py FOLDER     # FOLDER holds syn-<method>-<key>.fp16.pt files

The images travel as float16 (half the bytes); they are cast back to float32 here. The cache
key is part of the file name, so a table with the same model, method and options finds them.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from common import CACHE


def main() -> None:
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        raise SystemExit("usage: python benchmarks/import_images.py FOLDER")
    CACHE.mkdir(parents=True, exist_ok=True)
    for f in sorted(Path(sys.argv[1]).glob("syn-*.fp16.pt")):
        d = torch.load(f, weights_only=True)
        target = CACHE / f.name.replace(".fp16.pt", ".pt")
        torch.save({**d, "images": d["images"].float(), "imported_from": "float16"}, target)
        print(f"{target.name}: {tuple(d['images'].shape)}, synthesized in {float(d['seconds']):.0f} s")


if __name__ == "__main__":
    main()
