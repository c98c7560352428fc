"""Accuracy tables for every calibration source × bit width, written as JSON and Markdown.

    python benchmarks/methods_table.py                       # tiny default, the papers' 32 images × 500 iterations
    python benchmarks/methods_table.py --model deit_tiny_patch16_224 --checkpoint W.pth --data VAL/ --iterations 50

Rows are calibration sources: noise, real images, and each synthesis method (with the
DFQ-ViT ablation: E2H only, ACM only, both); columns are bit widths; cells are held-out
top-1. Each method's images are synthesised once and reused for every bit width.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common, sources

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from dfqvit import api
from dfqvit.correction.distill import DistillOptions
from dfqvit.models import load_model
from dfqvit.quant.config import QuantConfig
from dfqvit.synthesis import SynthesisOptions, get_method

# name → (method preset, overrides, ACM γ)
ROWS = {
    "noise": ("noise", {}, 0),
    "real": ("real", {}, 0),
    "psaq": ("psaq", {}, 0),
    "psaq + E2H (E2H only)": ("psaq", {"schedule": "e2h"}, 0),
    "psaq + ACM (ACM only)": ("psaq", {}, 1),
    "dfq-vit without ACM": ("dfq-vit", {}, 0),
    "dfq-vit (E2H + ACM)": ("dfq-vit", {}, 1),
    "dfq-vit hard-to-easy (H2E + ACM)": ("dfq-vit", {"schedule": "h2e"}, 1),
    "mimiq": ("mimiq", {}, 0),
    "sardfq": ("sardfq", {}, 0),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--data", default=None, help="evaluation folder (ImageNet layout)")
    p.add_argument("--calib-data", default=None, help="real calibration folder (default: digits train for the tiny model)")
    p.add_argument("--bits", default="8/8,6/6,4/8,3/8,4/4,3/4,2/8", help="comma list of W/A")
    p.add_argument("--rows", default=";".join(ROWS), help="semicolon-separated row names")
    p.add_argument("--num-images", type=int, default=32)
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--distill-steps", type=int, default=0, help="> 0 adds a '+ distill' cell per row and bit width")
    p.add_argument("--seeds", default="0", help="comma list; cells are means over seeds")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="benchmarks/results/methods_table")
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    loaded = load_model(a.model, a.checkpoint)
    bits = [tuple(int(v) for v in b.split("/")) for b in a.bits.split(",")]
    seeds = [int(s) for s in a.seeds.split(",")]
    fp = api.evaluate(loaded.model, loaded, a.data, device=a.device, progress=False)
    result = {"model": loaded.name, "fp_top1": fp["top1"], "eval_data": fp["data"], "num_images": a.num_images,
              "iterations": a.iterations, "seeds": seeds, "distill_steps": a.distill_steps,
              "device": str(api.resolve_device(a.device)), "torch": torch.__version__, "platform": platform.platform(),
              "rows": {}}
    for row in a.rows.split(";"):
        preset, overrides, acm = ROWS[row]
        method = get_method(preset).with_options(**overrides)
        cells: dict[str, list[float]] = {}
        syn_seconds, calib_seconds = [], []
        for seed in seeds:
            syn = api.synthesize(loaded, method, SynthesisOptions(num_images=a.num_images, iterations=a.iterations,
                                                                  seed=seed), a.device, calib_data=a.calib_data,
                                 progress=False)
            syn_seconds.append(syn.seconds)
            for w, act in bits:
                variants = [("", None)]
                if a.distill_steps:
                    variants.append((" + distill", DistillOptions(steps=a.distill_steps, terms=method.distill_terms
                                                                  if method.distill_steps else ("logits",), seed=seed)))
                for suffix, dopts in variants:
                    t0 = time.perf_counter()
                    q, _ = api.quantize(loaded, syn.images, QuantConfig(w_bits=w, a_bits=act), acm, dopts, a.device,
                                        progress=False)
                    calib_seconds.append(time.perf_counter() - t0)
                    ev = api.evaluate(q, loaded, a.data, device=a.device, progress=False)
                    cells.setdefault(f"W{w}A{act}{suffix}", []).append(ev["top1"])
        result["rows"][row] = {"top1": {k: sum(v) / len(v) for k, v in cells.items()}, "per_seed": cells,
                               "synthesis_seconds": sum(syn_seconds) / len(syn_seconds),
                               "calibration_seconds_mean": sum(calib_seconds) / len(calib_seconds)}
        print(row, {k: round(sum(v) / len(v), 2) for k, v in cells.items()}, f"synth {result['rows'][row]['synthesis_seconds']:.1f}s",
              flush=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(to_markdown(result))
    print(to_markdown(result))


def to_markdown(result: dict) -> str:
    cols = list(next(iter(result["rows"].values()))["top1"])
    lines = [f"{result['model']}, FP top-1 {result['fp_top1']:.2f} on {result['eval_data']}; {result['num_images']} images, "
             f"{result['iterations']} iterations, seeds {result['seeds']}, {result['device']}", "",
             "| calibration | " + " | ".join(cols) + " | synthesis s | quantize s |",
             "| --- |" + " --- |" * (len(cols) + 2)]
    for name, r in result["rows"].items():
        lines.append(f"| {name} | " + " | ".join(f"{r['top1'][c]:.2f}" for c in cols)
                     + f" | {r['synthesis_seconds']:.1f} | {r['calibration_seconds_mean']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
