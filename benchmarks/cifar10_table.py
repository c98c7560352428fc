"""Calibration source × bits on the CIFAR-10 DeiT and Swin of ../shared/cifar10, mean ± std over seeds.

    python benchmarks/cifar10_table.py                         # both models, 3 seeds, CPU
    python benchmarks/cifar10_table.py --models deit --seeds 0 --rows "real;dfq-vit (E2H + ACM)"

Evaluates on 1,000 val images (the first 100 of each class). Writes
benchmarks/results/cifar10_<model>.{json,md,png} after every cell, and image grids.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from common import RESULTS, Results, calibration_images, eval_set, image_grid, load, machine, markdown, plot, run_grid
from dfqvit.synthesis import SynthesisOptions, get_method
from sources import NAMES, pick

BITS = [(8, 8), (6, 6), (4, 8), (4, 4), (4, 3), (3, 3)]
MODELS = {"deit": "cifar10/models/deit_tiny_cifar10.json", "swin": "cifar10/models/swin_micro_cifar10.json"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="deit,swin")
    p.add_argument("--rows", default=None, help="semicolon list of row names (default: all)")
    p.add_argument("--presets", default="basic")
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--num-images", type=int, default=32)
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--device", default="auto")
    p.add_argument("--tag", default="", help="suffix of the result files (e.g. -n128 for a run with --num-images 128)")
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    cols = [f"W{w}A{act}" for w, act in BITS]
    presets = a.presets.split(",")
    for short in a.models.split(","):
        loaded = load(MODELS[short])
        x, y = eval_set(loaded, "cifar10/val", per_class=100)
        opts = SynthesisOptions(num_images=a.num_images, batch_size=a.num_images, iterations=a.iterations)
        out = RESULTS / f"cifar10_{short}{a.tag}"
        results = Results(out.with_suffix(".json"), {
            "model": f"{MODELS[short]}", "eval": "cifar10/val, first 100 per class (1,000 images)",
            "calibration": "cifar10/calib", "num_images": a.num_images, "iterations": a.iterations,
            "machine": machine()})
        rows = pick(a.rows)
        if short == "swin":  # attention-prior alignment needs a class token: SARDFQ's APA term cannot run on Swin
            rows = [r for r in rows if r["method"] != "sardfq"]
        run_grid(loaded, x, y, rows, BITS, presets, [int(s) for s in a.seeds.split(",")], opts, "cifar10/calib",
                 results, a.device, log=lambda m, s=short: print(f"[{s}] {m}", flush=True))
        md = markdown(results, NAMES, cols, f"CIFAR-10 {short}, {a.num_images} calibration images, {a.iterations} "
                                            f"synthesis iterations per round, seeds {a.seeds}, {machine()['device']}")
        out.with_suffix(".md").write_text(md + "\n")
        for preset in presets:
            plot(results, NAMES, cols, Path(f"{out}-{preset}.png"),
                 f"CIFAR-10 {short} (FP {results.data['fp']['top1']:.1f}), quantizer '{preset}'", preset)
        for m in ("dfq-vit", "real"):
            imgs, _ = calibration_images(loaded, get_method(m), opts.__class__(**{**opts.__dict__, "seed": 0}),
                                         "cifar10/calib", a.device)
            image_grid(imgs, loaded, RESULTS / "grids" / f"cifar10_{short}{a.tag}_{m}.png")
        print(md)


if __name__ == "__main__":
    main()
