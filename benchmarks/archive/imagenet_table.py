"""Calibration source × bits on the ImageNet ViT-Tiny of ../shared/imagenet (1,000 images, one per class).

    python benchmarks/imagenet_table.py                       # CPU: 200 synthesis iterations per round
    python benchmarks/imagenet_table.py --iterations 500 --device cuda

Writes benchmarks/results/imagenet_table.{json,md,png} after every cell (a rerun skips done cells)
and grids of synthetic and real images. On 1,000 images top-1 moves ±1.3 points by chance;
agreement with FP and KL(FP ‖ quantized) are in every cell.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common, sources

import argparse

import torch

from common import RESULTS, Results, calibration_images, eval_set, image_grid, load, machine, markdown, plot, run_grid
from dfqvit.synthesis import SynthesisOptions, get_method
from sources import NAMES, pick

BITS = [(8, 8), (6, 6), (4, 8), (4, 4)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default=None, help="semicolon list of row names (default: all)")
    p.add_argument("--presets", default="basic", help="comma list of quantizer presets")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--num-images", type=int, default=32)
    p.add_argument("--seeds", default="0")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=str(RESULTS / "imagenet_table"))
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    loaded = load("imagenet/vit_tiny_patch16_224.json")
    x, y = eval_set(loaded, "imagenet/sample")
    opts = SynthesisOptions(num_images=a.num_images, batch_size=a.num_images, iterations=a.iterations)
    results = Results(__import__("pathlib").Path(a.out + ".json"),
                      {"model": "vit_tiny_patch16_224 (ImageNet, ../shared/imagenet)", "eval": "imagenet/sample",
                       "calibration": "imagenet/calib", "num_images": a.num_images, "iterations": a.iterations,
                       "machine": machine()})
    cols = [f"W{w}A{act}" for w, act in BITS]
    presets = a.presets.split(",")
    run_grid(loaded, x, y, pick(a.rows), BITS, presets, [int(s) for s in a.seeds.split(",")], opts,
             "imagenet/calib", results, a.device, log=lambda m: print(m, flush=True))
    md = markdown(results, NAMES, cols, f"ImageNet ViT-Tiny, {a.num_images} calibration images, "
                                        f"{a.iterations} synthesis iterations per round, {machine()['device']}")
    open(a.out + ".md", "w").write(md + "\n")
    for preset in presets:
        plot(results, NAMES, cols, __import__("pathlib").Path(f"{a.out}-{preset}.png"),
             f"ImageNet ViT-Tiny (FP {results.data['fp']['top1']:.1f}), quantizer '{preset}'", preset)
    syn, _ = calibration_images(loaded, get_method("dfq-vit"), opts, "imagenet/calib", a.device)
    image_grid(syn, loaded, RESULTS / "grids" / "imagenet_dfq-vit.png")
    real, _ = calibration_images(loaded, get_method("real"), opts, "imagenet/calib", a.device)
    image_grid(real, loaded, RESULTS / "grids" / "imagenet_real.png")
    print(md)


if __name__ == "__main__":
    main()
