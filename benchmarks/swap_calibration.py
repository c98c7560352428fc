"""Which calibration stage do synthetic images hurt? Quantize with DFQ-ViT images, but give one
stage real images instead: the RepQ reparameterization scales, the activation ranges
(observers), or the output-error range search. A diagnostic only (it uses real images).

    python benchmarks/swap_calibration.py           # ImageNet ViT-Tiny, W4A8, strong-synthetic, no ACM

Writes benchmarks/results/swap_calibration.json.
"""
from __future__ import annotations

import argparse

import torch

from common import RESULTS, Results, calibration_images, eval_set, fp_reference, load, machine
from dfqvit import api
from dfqvit.calibration import calibrate
from dfqvit.presets import quant_config
from dfqvit.quant.reparam import reparameterize
from dfqvit.quant.search import search_linear_inputs
from dfqvit.quant.wrap import QuantizedViT
from dfqvit.synthesis import SynthesisOptions, get_method

STAGES = ("reparam", "ranges", "search")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bits", default="4/8")
    p.add_argument("--swaps", default="reparam;ranges;search;reparam+ranges")
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    loaded = load("imagenet/vit_tiny_patch16_224.json")
    x, y = eval_set(loaded, "imagenet/sample")
    fp = fp_reference(loaded, x, y, "cpu")
    opts = SynthesisOptions(num_images=32, batch_size=32, iterations=200)
    syn = calibration_images(loaded, get_method("dfq-vit"), opts, "imagenet/calib")[0]
    real = calibration_images(loaded, get_method("real"), opts, "imagenet/calib")[0]
    w, act = (int(v) for v in a.bits.split("/"))
    config = quant_config("strong-synthetic", w_bits=w, a_bits=act)
    results = Results(RESULTS / "swap_calibration.json", {"model": "vit_tiny_patch16_224", "config": config.to_dict(),
                                                          "synthetic": "dfq-vit, 32 images, 200 iterations",
                                                          "machine": machine()})
    for swap in a.swaps.split(";"):
        real_for = set(swap.split("+"))
        pick = {s: real if s in real_for else syn for s in STAGES}
        q = QuantizedViT(loaded.model, config)
        reparameterize(q, pick["reparam"], 32)
        calibrate(q, pick["ranges"], 32)
        search_linear_inputs(q, pick["search"], 32)
        ev = api.evaluate(q.eval(), loaded, (x, y), device="cpu", progress=False, fp_logits=fp["logits"])
        key = f"real for {swap}|W{w}A{act}"
        results.put(key, {"top1": ev["top1"], "agreement": ev["agreement_top1"], "kl": ev["kl_to_fp"]})
        print(f"{key}: top-1 {ev['top1']:.1f} agreement {ev['agreement_top1']:.1f} KL {ev['kl_to_fp']:.3f}", flush=True)


if __name__ == "__main__":
    main()
