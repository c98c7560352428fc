"""Calibration source × bits on the CIFAR-10 DeiT and Swin of ../shared/cifar10, mean ± std over seeds.

    python benchmarks/cifar10_table.py                         # both models, 3 seeds, CPU
    python benchmarks/cifar10_table.py --models deit --seeds 0 --rows "real;dfq-vit (E2H + ACM)"
    python benchmarks/cifar10_table.py --presets strong-synthetic --workers 8 --deadline 480 --tag=-h100  # a lent GPU

Evaluates on 1,000 val images (the first 100 of each class). Writes
benchmarks/results/cifar10_<model><tag>.{json,md,png} after every cell, and image grids.
The work is split into jobs — one model, one seed, the rows that share one image set — run
seed by seed, slowest method first, by `--workers` processes: a small model at batch 32 leaves
a GPU mostly idle, so several processes share one; `--deadline` stops new cells in time.
"""
from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import time
from pathlib import Path

import torch

from common import (RESULTS, Results, calibration_images, eval_set, fp_reference, image_grid, load, machine, markdown,
                    plot, run_grid)
from dfqvit.synthesis import SynthesisOptions, get_method
from sources import NAMES, pick

BITS = [(8, 8), (6, 6), (4, 8), (4, 4), (4, 3), (3, 3)]
MODELS = {"deit": "cifar10/models/deit_tiny_cifar10.json", "swin": "cifar10/models/swin_micro_cifar10.json"}
SLOWEST_FIRST = ("sardfq", "psaq", "dfq-vit", "mimiq", "real", "noise")  # synthesis cost, for the job order


def rows_for(short: str, names: str | None) -> list[dict]:
    rows = pick(names)
    if short == "swin":  # attention-prior alignment needs a class token: SARDFQ's APA term cannot run on Swin
        rows = [r for r in rows if r["method"] != "sardfq"]
    return rows


def make_jobs(models: list[str], names: str | None, seeds: list[int]) -> list[tuple[str, int, list[str]]]:
    """(model, seed, row names sharing one image set): seed-major, so a deadline leaves whole seeds;
    rows that share images stay in one job, so no two processes synthesize the same set."""
    jobs = []
    for seed in seeds:
        for short in models:
            groups: dict[str, list[dict]] = {}
            for r in rows_for(short, names):
                groups.setdefault(json.dumps([r["method"], r["overrides"]], sort_keys=True), []).append(r)
            order = sorted(groups.values(), key=lambda g: SLOWEST_FIRST.index(g[0]["method"])
                           if g[0]["method"] in SLOWEST_FIRST else len(SLOWEST_FIRST))
            jobs += [(short, seed, [r["name"] for r in g]) for g in order]
    return jobs


def results_for(short: str, a: argparse.Namespace) -> Results:
    results = Results((RESULTS / f"cifar10_{short}{a.tag}").with_suffix(".json"), {
        "model": MODELS[short], "eval": "cifar10/val, first 100 per class (1,000 images)",
        "calibration": "cifar10/calib", "num_images": a.num_images, "iterations": a.iterations})
    results.data.setdefault("machine", machine())  # the first machine; each cell records its own (quantized_on)
    return results


def synthesis_options(a: argparse.Namespace) -> SynthesisOptions:
    """The table's synthesis setting, seed 0 (run_grid sets each cell's seed)."""
    return SynthesisOptions(num_images=a.num_images, batch_size=a.num_images, iterations=a.iterations)


_WORKER: dict = {}  # per process: loaded model, eval set and FP reference of each model


def run_job(a: argparse.Namespace, job: tuple[str, int, list[str]]) -> str:
    short, seed, names = job
    if short not in _WORKER:
        loaded = load(MODELS[short])
        x, y = eval_set(loaded, "cifar10/val", per_class=100)
        _WORKER[short] = (loaded, x, y, fp_reference(loaded, x, y, a.device))
    loaded, x, y, fp = _WORKER[short]
    deadline = None if a.stop_at is None else time.monotonic() + (a.stop_at - time.time())
    t0 = time.perf_counter()
    run_grid(loaded, x, y, rows_for(short, ";".join(names)), a.bits, a.presets.split(","), [seed],
             synthesis_options(a), "cifar10/calib", results_for(short, a), a.device, fp=fp, deadline=deadline,
             log=lambda m: print(f"[{short}] {m}", flush=True))
    return f"[{short}] seed {seed} {' / '.join(names)}: {time.perf_counter() - t0:.0f} s"


def column(bits: tuple[int, int]) -> str:
    return f"W{bits[0]}A{bits[1]}"


def parse_bits(text: str) -> tuple[int, int]:
    """'W4A3' → (4, 3), one of the table's columns."""
    by_name = {column(b): b for b in BITS}
    if text.strip().upper() not in by_name:
        raise SystemExit(f"--bits: {text!r} is not one of {', '.join(by_name)}")
    return by_name[text.strip().upper()]


def run_job_reporting_errors(a: argparse.Namespace, job: tuple[str, int, list[str]]) -> str:
    """run_job for a worker process: a failing job says why and leaves the other jobs running."""
    try:
        return run_job(a, job)
    except (Exception, SystemExit):  # a lost worker would leave the pool waiting for its job forever
        import traceback

        return f"[{job[0]}] seed {job[1]} {' / '.join(job[2])}: FAILED\n{traceback.format_exc()}"


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def report(short: str, a: argparse.Namespace) -> None:
    """Table, plots and (unless --no-grids) the DFQ-ViT and real image grids of one model."""
    results = results_for(short, a)
    if "fp" not in results.data:
        print(f"[{short}] no cells yet")
        return
    cols = [column(b) for b in BITS]
    out = RESULTS / f"cifar10_{short}{a.tag}"
    seeds = ",".join(sorted({k.rsplit("|seed", 1)[1] for k in results.data["cells"]}, key=int))
    where = sorted({v.get("quantized_on", results.data["machine"]["device"]) for v in results.data["cells"].values()})
    title = (f"CIFAR-10 {short}, {a.num_images} calibration images, {a.iterations} synthesis iterations per round, "
             f"seeds {seeds}, quantized on {' and '.join(where)}")
    md = markdown(results, NAMES, cols, title)
    out.with_suffix(".md").write_text(md + "\n")
    for preset in a.presets.split(","):
        plot(results, NAMES, cols, Path(f"{out}-{preset}.png"),
             f"CIFAR-10 {short} (FP {results.data['fp']['top1']:.1f}), quantizer '{preset}'", preset)
    if not a.no_grids:
        loaded = load(MODELS[short])
        for m in ("dfq-vit", "real"):
            imgs, _ = calibration_images(loaded, get_method(m), synthesis_options(a), "cifar10/calib", a.device)
            image_grid(imgs, loaded, RESULTS / "grids" / f"cifar10_{short}{a.tag}_{m}.png")
    print(md)


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
    p.add_argument("--workers", type=int, default=1, help="processes running jobs at once (a GPU: 8)")
    p.add_argument("--deadline", type=float, default=None, help="seconds from start after which no new cell starts")
    p.add_argument("--no-grids", action="store_true", help="skip the image grids (they may synthesize seed 0)")
    p.add_argument("--bits", default=None, help="bit settings to run, in this order (e.g. W4A3,W3A3; default: all)")
    a = p.parse_args()
    a.bits = BITS if a.bits is None else [parse_bits(b) for b in a.bits.split(",")]
    a.stop_at = None if a.deadline is None else time.time() + a.deadline
    models = a.models.split(",")
    jobs = make_jobs(models, a.rows, [int(s) for s in a.seeds.split(",")])
    if a.workers <= 1:
        for job in jobs:
            print(run_job(a, job), flush=True)
    else:
        threads = max(1, (os.cpu_count() or 1) // a.workers)
        with multiprocessing.get_context("spawn").Pool(a.workers, _init_worker, (threads,)) as pool:
            for done in pool.imap_unordered(functools.partial(run_job_reporting_errors, a), jobs):
                print(done, flush=True)
    for short in models:
        report(short, a)


if __name__ == "__main__":
    main()
