"""Quantizer options × bits × calibration source on the ImageNet ViT-Tiny (or a CIFAR model).

    python benchmarks/quantizer_table.py                          # ImageNet, CPU, 200 synthesis iterations
    python benchmarks/quantizer_table.py --model cifar-deit --iterations 500

Columns of one table: the `basic` quantizer, each option of the `strong` preset added alone,
and the presets. Rows: Gaussian noise, real images (32 from calib/), DFQ-ViT synthetic images
(+ ACM where marked). Writes benchmarks/results/quantizer_<model>.{json,md} after every cell.
"""
from __future__ import annotations

import argparse

import torch

from common import RESULTS, Results, eval_set, load, machine, markdown, row, run_grid

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
    "strong-synthetic": {"base": "strong-synthetic"},  # strong − GPTQ, block 0 not reparameterized
}
ROWS = [row("noise", "noise"), row("real", "real"), row("dfq-vit", "dfq-vit"), row("real + ACM", "real", acm=1),
        row("dfq-vit + ACM", "dfq-vit", acm=1)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="imagenet", choices=list(MODELS))
    p.add_argument("--bits", default="8/8,6/6,4/8,4/4")
    p.add_argument("--variants", default=";".join(VARIANTS), help="semicolon list")
    p.add_argument("--rows", default="noise;real;dfq-vit", help="semicolon list")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--num-images", type=int, default=32)
    p.add_argument("--seeds", default="0")
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    config, folder, calib, per_class = MODELS[a.model]
    loaded = load(config)
    x, y = eval_set(loaded, folder, per_class=per_class)
    from dfqvit.synthesis import SynthesisOptions

    opts = SynthesisOptions(num_images=a.num_images, batch_size=a.num_images, iterations=a.iterations)
    out = RESULTS / f"quantizer_{a.model}"
    results = Results(out.with_suffix(".json"), {"model": config, "eval": folder, "calibration": calib,
                                                 "num_images": a.num_images, "iterations": a.iterations,
                                                 "machine": machine()})
    bits = [tuple(int(v) for v in b.split("/")) for b in a.bits.split(",")]
    variants = a.variants.split(";")
    rows = [r for r in ROWS if r["name"] in a.rows.split(";")]
    run_grid(loaded, x, y, rows, bits, variants, [int(s) for s in a.seeds.split(",")], opts, calib, results,
             a.device, log=lambda m: print(m, flush=True), preset_overrides={v: VARIANTS[v] for v in variants})
    cols = [f"W{w}A{act}" for w, act in bits]
    md = markdown(results, [r["name"] for r in ROWS], cols, f"{a.model}: quantizer options, {a.num_images} "
                  f"calibration images, {a.iterations} synthesis iterations, {machine()['device']}")
    out.with_suffix(".md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
