"""Quantizer options × bits × calibration source on the ImageNet ViT-Tiny (or a CIFAR model).

    python benchmarks/quantizer_table.py                          # ImageNet, CPU, 200 synthesis iterations
    python benchmarks/quantizer_table.py --model cifar-deit --iterations 500

Columns of one table: the `basic` quantizer, each option of the `strong` preset added alone,
and the presets. Rows: Gaussian noise, real images (32 from calib/), DFQ-ViT synthetic images
(+ ACM where marked). Writes benchmarks/results/quantizer_<model>.{json,md} after every cell.
"""
from __future__ import annotations

import argparse
import re

import torch

from common import RESULTS, Results, eval_set, load, machine, markdown, row, run_grid, summarize

MODELS = {"imagenet": ("imagenet/vit_tiny_patch16_224.json", "imagenet/sample", "imagenet/calib", None),
          "cifar-deit": ("cifar10/models/deit_tiny_cifar10.json", "cifar10/val", "cifar10/calib", 100),
          "cifar-swin": ("cifar10/models/swin_micro_cifar10.json", "cifar10/val", "cifar10/calib", 100)}
# name → QuantConfig overrides on top of a base preset (+ reconstruction steps per block)
VARIANTS = {
    "basic": {"base": "basic"},
    "+reparam (RepQ post-LN)": {"base": "basic", "reparam": "postln"},
    "+reparam (post-LN + attention out)": {"base": "basic", "reparam": "all"},
    "+log√2 softmax": {"base": "basic", "softmax_quantizer": "logsqrt2"},
    "+twin post-GELU": {"base": "basic", "gelu_quantizer": "twin"},
    "+MSE weights": {"base": "basic", "weight_observer": "mse"},
    "+GPTQ (MSE) weights": {"base": "basic", "weight_observer": "mse", "weight_rounding": "gptq"},
    "+output-error ranges": {"base": "basic", "act_search": "output"},
    "strong": {"base": "strong"},
    "strong + reconstruction": {"base": "strong", "reconstruct_steps": 100},
    # the strong preset with one part taken out: which parts help with synthetic images?
    "strong − GPTQ": {"base": "strong", "weight_rounding": "nearest"},
    "strong − output search": {"base": "strong", "act_search": "none"},
    "strong − GPTQ − search": {"base": "strong", "weight_rounding": "nearest", "act_search": "none"},
    # strong − GPTQ, block 0 not reparameterized (measured before the preset low-passed its images: pinned off)
    "strong-synthetic": {"base": "strong-synthetic", "calib_blur": 0.0},
}
ROWS = [row("noise", "noise"), row("real", "real"), row("dfq-vit", "dfq-vit"), row("real + ACM", "real", acm=1),
        row("dfq-vit + ACM", "dfq-vit", acm=1)]


def extra_columns(results: Results, cols: list[str]) -> list[str]:
    """Bit settings measured but not among the table's fixed columns (diagnostics such as W3A4),
    so no cell in the JSON is missing from its markdown."""
    seen = {c for table in summarize(results).values() for cells in table.values() for c in cells}
    return [c for c in seen - set(cols) if re.fullmatch(r"W\d+A\d+", c)]


def bit_order(cols: list[str]) -> list[str]:
    """W8A8, W6A6, W4A8, W4A4, W4A3, W3A4, W3A3: by weight bits, then activation bits, widest first."""
    return sorted(cols, key=lambda c: tuple(-int(v) for v in re.findall(r"\d+", c)))


def table_main(doc: str, variants: dict[str, dict], rows: list[dict], name: str, title: str, bits: str,
               default_variants: str, default_rows: str, iterations: int, columns: list[str] | None = None) -> None:
    """The command line of a quantizer table: rows × bit settings × variants into RESULTS/<name>_<model>."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="imagenet", choices=list(MODELS))
    p.add_argument("--bits", default=bits)
    p.add_argument("--variants", default=default_variants, help="semicolon list of: " + "; ".join(variants))
    p.add_argument("--rows", default=default_rows, help="semicolon list of: " + "; ".join(r["name"] for r in rows))
    p.add_argument("--iterations", type=int, default=iterations)
    p.add_argument("--num-images", type=int, default=32)
    p.add_argument("--seeds", default="0")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None, help="torch threads (background jobs: 1 each)")
    p.add_argument("--tag", default="", help="suffix of the result files (e.g. -n128 for another --num-images)")
    a = p.parse_args()
    torch.set_num_threads(a.threads or max(1, torch.get_num_threads()))
    chosen = [v for v in a.variants.split(";") if v]
    unknown = [v for v in chosen if v not in variants]
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(variants)}")
    config, folder, calib, per_class = MODELS[a.model]
    loaded = load(config)
    x, y = eval_set(loaded, folder, per_class=per_class)
    from dfqvit.synthesis import SynthesisOptions

    opts = SynthesisOptions(num_images=a.num_images, batch_size=a.num_images, iterations=a.iterations)
    out = RESULTS / f"{name}_{a.model}{a.tag}"
    results = Results(out.with_suffix(".json"), {"model": config, "eval": folder, "calibration": calib,
                                                 "num_images": a.num_images, "iterations": a.iterations,
                                                 "machine": machine(), "variants": variants})
    bit_pairs = [tuple(int(v) for v in b.split("/")) for b in a.bits.split(",")]
    picked = [r for r in rows if r["name"] in a.rows.split(";")]
    run_grid(loaded, x, y, picked, bit_pairs, chosen, [int(s) for s in a.seeds.split(",")], opts, calib, results,
             a.device, log=lambda m: print(m, flush=True), preset_overrides={v: variants[v] for v in chosen})
    cols = columns or [f"W{w}A{act}" for w, act in bit_pairs]
    cols = bit_order(cols + extra_columns(results, cols))
    md = markdown(results, [r["name"] for r in rows], cols, f"{a.model}: {title}, {a.num_images} calibration images, "
                  f"{a.iterations} synthesis iterations, {machine()['device']}")
    out.with_suffix(".md").write_text(md + "\n")
    print(md)


def main() -> None:
    table_main(__doc__, VARIANTS, ROWS, "quantizer", "quantizer options", "8/8,6/6,4/8,4/4", ";".join(VARIANTS),
               "noise;real;dfq-vit", 200)


if __name__ == "__main__":
    main()
