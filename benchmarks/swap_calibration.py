"""Which calibration stage do synthetic images hurt? Quantize with DFQ-ViT images, but give one
stage real images instead: the RepQ reparameterization scales (all blocks, or block 0 only),
the activation ranges (observers), or the output-error range search. A diagnostic (it uses
real images), plus the data-free answer it led to: `skip-block0` leaves block 0 per tensor.

    python benchmarks/swap_calibration.py           # ImageNet ViT-Tiny, W4A8, strong − GPTQ, no ACM

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
    p.add_argument("--swaps", default="reparam;ranges;search;reparam+ranges;reparam-block0;skip-block0")
    p.add_argument("--iterations", type=int, default=200, help="of the DFQ-ViT images (500: the low-bit table's)")
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    loaded = load("imagenet/vit_tiny_patch16_224.json")
    x, y = eval_set(loaded, "imagenet/sample")
    fp = fp_reference(loaded, x, y, "cpu")
    opts = SynthesisOptions(num_images=32, batch_size=32, iterations=a.iterations)
    syn = calibration_images(loaded, get_method("dfq-vit"), opts, "imagenet/calib")[0]
    real = calibration_images(loaded, get_method("real"), opts, "imagenet/calib")[0]
    w, act = (int(v) for v in a.bits.split("/"))
    # strong − GPTQ, with the twin-uniform post-GELU quantizer the preset had when this diagnosis was made
    config = quant_config("strong", weight_rounding="nearest", gelu_quantizer="twin", w_bits=w, a_bits=act)
    suffix = "" if a.iterations == 200 else f"|{a.iterations} iterations"
    results = Results(RESULTS / "swap_calibration.json", {"model": "vit_tiny_patch16_224", "config": config.to_dict(),
                                                          "synthetic": "dfq-vit, 32 images, 200 iterations unless "
                                                                       "the key says otherwise",
                                                          "machine": machine()})
    for swap in a.swaps.split(";"):
        key = (f"real for {swap}|W{w}A{act}" if swap != "skip-block0" else f"no reparam in block 0|W{w}A{act}") + suffix
        if results.has(key):
            continue
        real_for = set(swap.split("+"))
        pick = {s: real if s in real_for else syn for s in STAGES}
        q = QuantizedViT(loaded.model, config)
        if swap == "reparam-block0":  # block 0's scales from real images, the other blocks' from synthetic
            reparameterize(q, real, 32, attention_output=False, only_blocks=1)
            reparameterize(q, syn, 32, attention_output=False, skip_blocks=1)
        else:
            reparameterize(q, pick["reparam"], 32, attention_output=False, skip_blocks=int(swap == "skip-block0"))
        calibrate(q, pick["ranges"], 32)
        search_linear_inputs(q, pick["search"], 32)
        ev = api.evaluate(q.eval(), loaded, (x, y), device="cpu", progress=False, fp_logits=fp["logits"])
        results.put(key, {"top1": ev["top1"], "agreement": ev["agreement_top1"], "kl": ev["kl_to_fp"]})
        print(f"{key}: top-1 {ev['top1']:.1f} agreement {ev['agreement_top1']:.1f} KL {ev['kl_to_fp']:.3f}", flush=True)


if __name__ == "__main__":
    main()
