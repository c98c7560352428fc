"""How close do data-free calibration images get to real ones on the ImageNet ViT-Tiny?

    python benchmarks/data_gap.py                      # CPU: the rows below, W8A8 and W4A8, with ACM
    python benchmarks/data_gap.py --bits 8/8,4/8,4/4 --preset basic

Rows vary one thing at a time against `dfq-vit` (32 images, 200 iterations): iterations,
number of images, method, E2H bounds, loss weights, labels, and the ACM variant. The real
rows are the target. Writes benchmarks/results/data_gap.{json,md} after every cell.
"""
from __future__ import annotations

import argparse

import torch

from common import RESULTS, Results, eval_set, load, machine, markdown, row, run_grid
from dfqvit.synthesis import SynthesisOptions

ROWS = [
    row("real, no ACM", "real"),
    row("real + ACM", "real", acm=1),
    row("real + ACM (channel)", "real", acm=1, acm_variant="channel"),
    row("real + ACM (shrunk)", "real", acm=1, acm_variant="shrunk"),
    row("real + ACM (agree)", "real", acm=1, acm_variant="agree"),
    row("noise + ACM", "noise", acm=1),
    row("dfq-vit, no ACM", "dfq-vit"),
    row("dfq-vit + ACM", "dfq-vit", acm=1),
    row("dfq-vit + ACM (channel)", "dfq-vit", acm=1, acm_variant="channel"),
    row("dfq-vit + ACM (shrunk)", "dfq-vit", acm=1, acm_variant="shrunk"),
    row("dfq-vit + ACM (agree)", "dfq-vit", acm=1, acm_variant="agree"),
    row("dfq-vit, E2H 0.3→1 + ACM", "dfq-vit", acm=1, acm_variant="mean"),  # crop_lower set below
    row("dfq-vit, soft labels + ACM", "dfq-vit", acm=1, soft_labels=True),
    row("dfq-vit, TV 0.5 + ACM", "dfq-vit", acm=1, terms={"entropy": 1.0, "class": 1.0, "tv": 0.5}),
    row("dfq-vit, PSAQ entropy + ACM", "dfq-vit", acm=1, terms={"entropy_psaq": 1.0, "class": 1.0, "tv": 0.05}),
    row("psaq (faithful) + ACM", "psaq", acm=1),
    row("mimiq + ACM", "mimiq", acm=1),
    row("sardfq + ACM", "sardfq", acm=1),
]
# rows whose synthesis options differ from the table's (number of images, iterations, crop bounds)
OPTION_ROWS = {
    "dfq-vit ×500 iterations + ACM": ("dfq-vit", {"iterations": 500}),
    "dfq-vit 64 images + ACM": ("dfq-vit", {"num_images": 64, "batch_size": 64}),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bits", default="8/8,4/8")
    p.add_argument("--preset", default="strong")
    p.add_argument("--rows", default=None, help="semicolon list (default: all)")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    loaded = load("imagenet/vit_tiny_patch16_224.json")
    x, y = eval_set(loaded, "imagenet/sample")
    bits = [tuple(int(v) for v in b.split("/")) for b in a.bits.split(",")]
    results = Results(RESULTS / "data_gap.json", {"model": "vit_tiny_patch16_224 (ImageNet)", "eval": "imagenet/sample",
                                                  "iterations": a.iterations, "machine": machine()})
    wanted = a.rows.split(";") if a.rows else None
    log = lambda m: print(m, flush=True)  # noqa: E731
    base = SynthesisOptions(num_images=32, batch_size=32, iterations=a.iterations)
    for r in ROWS:
        if wanted and r["name"] not in wanted:
            continue
        opts = SynthesisOptions(**{**base.__dict__, "crop_lower": 0.3}) if "0.3→1" in r["name"] else base
        run_grid(loaded, x, y, [r], bits, [a.preset], [0], opts, "imagenet/calib", results, a.device, log)
    for name, (method, changes) in OPTION_ROWS.items():
        if wanted and name not in wanted:
            continue
        run_grid(loaded, x, y, [row(name, method, acm=1)], bits, [a.preset], [0],
                 SynthesisOptions(**{**base.__dict__, **changes}), "imagenet/calib", results, a.device, log)
    names = [r["name"] for r in ROWS] + list(OPTION_ROWS)
    md = markdown(results, names, [f"W{w}A{act}" for w, act in bits],
                  f"Data gap on the ImageNet ViT-Tiny, quantizer '{a.preset}', {machine()['device']}")
    (RESULTS / "data_gap.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
