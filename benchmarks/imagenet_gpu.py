"""The ImageNet ViT-Tiny tables at the papers' synthesis setting (500 iterations; 2×500 for
faithful PSAQ) on one lent GPU, time-boxed: jobs run in order of value and a job that would
not finish before the deadline is skipped, so a short lease still returns finished cells.

    DFQVIT_SHARED=gpu_shared python benchmarks/imagenet_gpu.py --deadline 420 --export-images OUT
    python benchmarks/imagenet_gpu.py --report-only      # anywhere: table, plot, grids from the JSON

benchmarks/gpu_session.sh wraps it for the device tool (speed rows first, then this).

Every cell uses the quantizer preset `strong-synthetic` on both sides (real and synthetic
calibration), so the data gap is measured with one quantizer. Cells go to
benchmarks/results/imagenet_gpu.json (merged, a rerun skips done cells); with
--export-images, each 32-image synthetic set is also written there as float16 so that a CPU
machine can run more cells on the same images (benchmarks/import_images.py).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from common import (RESULTS, Results, cache_path, calibration_images, cell_key, eval_set, fp_reference, image_grid,
                    load, machine, markdown, plot, row, run_grid, summarize)
from dfqvit.synthesis import SynthesisOptions, get_method

PRESET = "strong-synthetic"
MAIN = [(8, 8), (4, 8)]
LOW = [(6, 6), (4, 4)]
BASE = SynthesisOptions(num_images=32, batch_size=32, iterations=500)
N64 = replace(BASE, num_images=64, batch_size=64)
N128 = replace(BASE, num_images=128, batch_size=64)

# (row, bit settings, synthesis options), most valuable first: the data gap at W8A8 / W4A8,
# then every method at the papers' setting, then the low-bit columns, then more images.
JOBS = [
    (row("real", "real"), MAIN, BASE),
    (row("real + ACM", "real", acm=1), MAIN, BASE),
    (row("dfq-vit without ACM", "dfq-vit"), MAIN, BASE),
    (row("dfq-vit (E2H + ACM)", "dfq-vit", acm=1), MAIN, BASE),
    (row("dfq-vit 64 images", "dfq-vit"), MAIN, N64),
    (row("dfq-vit 64 images + ACM", "dfq-vit", acm=1), MAIN, N64),
    (row("psaq (faithful)", "psaq"), MAIN, BASE),
    (row("psaq + ACM", "psaq", acm=1), MAIN, BASE),
    (row("mimiq", "mimiq"), MAIN, BASE),
    (row("mimiq + ACM", "mimiq", acm=1), MAIN, BASE),
    (row("sardfq", "sardfq"), MAIN, BASE),
    (row("sardfq + ACM", "sardfq", acm=1), MAIN, BASE),
    (row("noise", "noise"), MAIN, BASE),
    (row("real", "real"), LOW, BASE),
    (row("dfq-vit without ACM", "dfq-vit"), LOW, BASE),
    (row("real + ACM", "real", acm=1), LOW, BASE),
    (row("dfq-vit (E2H + ACM)", "dfq-vit", acm=1), LOW, BASE),
    (row("dfq-vit 128 images", "dfq-vit"), MAIN, N128),
    (row("dfq-vit 128 images + ACM", "dfq-vit", acm=1), MAIN, N128),
    (row("psaq (faithful)", "psaq"), LOW, BASE),
    (row("mimiq", "mimiq"), LOW, BASE),
    (row("sardfq", "sardfq"), LOW, BASE),
    (row("noise", "noise"), LOW, BASE),
    (row("mimiq + distillation", "mimiq", distill=200), MAIN, BASE),
]
NAMES = list(dict.fromkeys(r["name"] for r, _, _ in JOBS))


def step_ms(method: str) -> float:
    """A guess at one synthesis iteration of 32 images, from this machine's synthesis_speed JSON."""
    for f in RESULTS.glob("synthesis_speed_*_cuda.json"):
        ms = json.loads(f.read_text())["methods"].get(method, {}).get("ms_per_iteration")
        if ms:
            return ms
    return 150.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--deadline", type=float, default=420, help="seconds from start after which nothing new starts")
    p.add_argument("--device", default="auto")
    p.add_argument("--export-images", default=None, help="folder for float16 copies of the 32-image synthetic sets")
    p.add_argument("--only", default=None, help="semicolon list of row names (default: every job)")
    p.add_argument("--iterations", type=int, default=BASE.iterations, help="(a smoke test on CPU: 2)")
    p.add_argument("--eval-limit", type=int, default=None, help="(a smoke test on CPU: the first N images)")
    p.add_argument("--seeds", default="0", help="comma list of synthesis / real-subset seeds")
    p.add_argument("--results", default=str(RESULTS / "imagenet_gpu.json"))
    p.add_argument("--report-only", action="store_true",
                   help="no cells: write imagenet_gpu.{md,png} and the image grids from the JSON and the cache")
    a = p.parse_args()
    if a.report_only:
        return report(Path(a.results))
    start = time.monotonic()
    deadline = start + a.deadline
    torch.backends.cudnn.allow_tf32 = False  # fp32 numbers comparable with the CPU tables
    torch.backends.cuda.matmul.allow_tf32 = False
    log = lambda m: print(f"[{time.monotonic() - start:5.0f} s] {m}", flush=True)  # noqa: E731
    loaded = load("imagenet/vit_tiny_patch16_224.json")
    x, y = eval_set(loaded, "imagenet/sample", limit=a.eval_limit)
    log(f"eval set {tuple(x.shape)} ready")
    results = Results(Path(a.results),
                      {"model": "vit_tiny_patch16_224 (ImageNet, ../shared/imagenet)", "eval": "imagenet/sample",
                       "calibration": "imagenet/calib (the 32 images seed 0 picks)", "preset": PRESET,
                       "iterations": a.iterations, "machine": machine()})
    fp = fp_reference(loaded, x, y, a.device)
    log(f"FP top-1 {fp['top1']:.2f}")
    cell_s: list[float] = []
    seeds = [int(v) for v in a.seeds.split(",")]
    for r, bits, opts in JOBS:
        if a.only and r["name"] not in a.only.split(";"):
            continue
        opts = replace(opts, iterations=a.iterations)
        method = get_method(r["method"]).with_options(**r["overrides"])
        todo = [b for b in bits if any(not results.has(cell_key(r["name"], *b, PRESET, sd)) for sd in seeds)]
        if not todo:
            continue
        path, _ = cache_path(loaded, method, opts, "imagenet/calib")
        synth = 0.0 if method.source != "synthetic" or path.is_file() else \
            step_ms(method.name) * opts.iterations * max(1, len(method.rounds)) * opts.num_images / 32 / 1000 * len(seeds)
        per_cell = statistics.fmean(cell_s) if cell_s else 20.0
        need = synth + (per_cell * len(todo) + r["distill"] * 0.1) * len(seeds)
        if time.monotonic() + need > deadline:
            log(f"{r['name']} {todo}: skipped (needs ~{need:.0f} s, {deadline - time.monotonic():.0f} s left)")
            continue
        t0 = time.monotonic()
        try:
            run_grid(loaded, x, y, [r], todo, [PRESET], seeds, opts, "imagenet/calib", results, a.device, log,
                     fp=fp, deadline=deadline)
        except Exception as e:  # one broken job must not lose the others' cells
            log(f"{r['name']}: FAILED {type(e).__name__}: {e}")
            continue
        if a.export_images and method.source == "synthetic" and opts.num_images == 32 and path.is_file():
            d = torch.load(path, weights_only=True)
            out = Path(a.export_images) / (path.stem + ".fp16.pt")
            if not out.exists():
                torch.save({**d, "images": d["images"].half()}, out)
        for b, sd in [(b, sd) for b in todo for sd in seeds]:
            c = results.data["cells"].get(cell_key(r["name"], *b, PRESET, sd))
            if c:
                cell_s.append(c["quantize_s"] + len(y) / c["images_per_s"])
        log(f"{r['name']}: {time.monotonic() - t0:.0f} s")
    log("done")


def report(path: Path) -> None:
    """Table, plot and grids from the cells and the (imported) synthetic images; no GPU needed."""
    results = Results(path, {})
    cols = ["W8A8", "W6A6", "W4A8", "W4A4"]
    title = f"ImageNet ViT-Tiny, 500 synthesis iterations per round, {results.data['machine']['device']}"
    md = markdown(results, NAMES, cols, title)
    path.with_suffix(".md").write_text(md + "\n")
    table = summarize(results).get(PRESET, {})
    full = [n for n in NAMES if all(c in table.get(n, {}) for c in cols)]  # a line per row with every column
    plot(results, full, cols, path.with_suffix(".png"),
         f"ImageNet ViT-Tiny (FP {results.data['fp']['top1']:.1f}), quantizer '{PRESET}', 500 iterations", PRESET)
    loaded = load("imagenet/vit_tiny_patch16_224.json")
    for m in ("dfq-vit", "psaq", "mimiq", "sardfq", "real"):  # 16 of each, at 112 px
        p, _ = cache_path(loaded, get_method(m), BASE, "imagenet/calib")
        if m == "real" or p.is_file():
            images, _ = calibration_images(loaded, get_method(m), BASE, "imagenet/calib")
            image_grid(images, loaded, RESULTS / "grids" / f"imagenet_{m}_500.jpg", limit=16, size=112)
    print(md)


if __name__ == "__main__":
    main()
