"""What APHQ-ViT's MLP reconstruction costs before any quantizer: the float model with every GELU
replaced by a ReLU and fc1/fc2 re-fitted on calibration images, against the GELU model.

    python benchmarks/relu_mlp_probe.py --threads 1 --sources "real;dfq-vit" --lrs 1e-4

Per (source, lr, steps): top-1 / agreement / KL of the float ReLU model on 1,000 `sample/` images,
and each block's MLP-output error relative to the GELU MLP's, on the fitting images and on 32
held-out `sample/` images. `--lrs 0` measures the swap without a fit. Writes
results/relu_mlp_probe.json (a re-run skips what it has).
"""
from __future__ import annotations

import argparse
import time

import torch

from common import RESULTS, Results, calibration_images, eval_set, load, machine
from dfqvit import api
from dfqvit.quant.config import QuantConfig
from dfqvit.quant.relu_mlp import ReluFitOptions, fit_relu_mlps, mlp_output_errors
from dfqvit.quant.wrap import QuantizedViT
from dfqvit.synthesis import SynthesisOptions, get_method

MODEL, EVAL, CALIB = "imagenet/vit_tiny_patch16_224.json", "imagenet/sample", "imagenet/calib"
COUNTS = {"real": 128, "dfq-vit": 32}  # what each source calibrates the low-bit table's cells with


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", default="real;dfq-vit")
    p.add_argument("--lrs", default="1e-4")
    p.add_argument("--steps", type=int, default=ReluFitOptions.steps)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    loaded = load(MODEL)
    x, y = eval_set(loaded, EVAL)
    fp = api.observable_copy(loaded.model)
    fp_logits = api.evaluate(fp, loaded, (x, y), progress=False, return_logits=True)["logits"]
    results = Results(RESULTS / "relu_mlp_probe.json", {"model": MODEL, "eval": EVAL, "machine": machine()})
    held = x[-32:]  # not among the fitting images (those come from calib/ or synthesis)
    for source in a.sources.split(";"):
        n = COUNTS[source]
        opts = SynthesisOptions(num_images=n, batch_size=n, iterations=500)
        images, _ = calibration_images(loaded, get_method(source), opts, CALIB)
        for lr in (float(v) for v in a.lrs.split(",")):
            key = f"{source}|{n} images|lr {lr:g}|{a.steps if lr else 0} steps"
            if results.has(key):
                continue
            t0 = time.perf_counter()
            q = QuantizedViT(loaded.model, QuantConfig(mlp_activation="relu"))  # quantizers stay in float mode
            fit = fit_relu_mlps(q, fp, images, ReluFitOptions(steps=a.steps, lr=lr) if lr else ReluFitOptions(steps=0),
                                progress=False)
            fit_s = time.perf_counter() - t0
            ev = api.evaluate(q, loaded, (x, y), progress=False, fp_logits=fp_logits)
            results.put(key, {"top1": ev["top1"], "agreement": ev["agreement_top1"], "kl": ev["kl_to_fp"],
                              "fit_s": fit_s, "fit_error": [d["after"] for d in fit],
                              "held_out_error": mlp_output_errors(q, fp, held)})
            print(key, f"top-1 {ev['top1']:.1f} agreement {ev['agreement_top1']:.1f} KL {ev['kl_to_fp']:.4f} "
                  f"({fit_s:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
