"""How far apart are two PyTorch runs of the same quantized model when only the float summation
order changes (1 thread against 2), or the float arithmetic itself (float32 against float64)?
The floor under any runtime's parity with PyTorch.

    python benchmarks/parity_floor.py --preset basic --bits 8/8

The ImageNet ViT-Tiny quantized on 32 real `calib/` images; the 1,000 `sample/` images evaluated
with torch.set_num_threads(1) and (2): top-1 of each and their top-1 agreement. Rounding to the
quantizers' grids turns last-bit differences of the float sums into code flips, which compound
over 12 blocks. The float64 run is the same quantized model (same codes, scales and grids) with
every float operation between the quantizers done in double precision: a runtime whose float
kernels differ from PyTorch's by float32 rounding cannot be expected to agree with PyTorch more
than float32 and float64 agree with each other. Writes benchmarks/results/parity_floor.json.
"""
from __future__ import annotations

import argparse
import copy
import json

import torch

from common import RESULTS, eval_set, load, machine, shared
from dfqvit import api
from dfqvit.presets import quant_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="basic")
    p.add_argument("--bits", default="8/8")
    a = p.parse_args()
    torch.set_num_threads(1)
    loaded = load("imagenet/vit_tiny_patch16_224.json")
    x, y = eval_set(loaded, "imagenet/sample")
    calib, _ = api.real_images(loaded, shared("imagenet/calib"), 32, seed=0)
    path = RESULTS / "parity_floor.json"
    out = json.loads(path.read_text()) if path.is_file() else {}
    for bits in a.bits.split(","):
        w, act = (int(b) for b in bits.split("/"))
        q, _ = api.quantize(loaded, calib, quant_config(a.preset, w_bits=w, a_bits=act), progress=False)
        logits = {}
        for threads in (1, 2):
            torch.set_num_threads(threads)
            with torch.no_grad():
                logits[threads] = torch.cat([q(x[i:i + 100]) for i in range(0, len(x), 100)])
        torch.set_num_threads(1)
        q64 = copy.deepcopy(q).double()
        with torch.no_grad():
            logits["float64"] = torch.cat([q64(x[i:i + 100].double()) for i in range(0, len(x), 100)]).float()
        pred = {t: v.argmax(1) for t, v in logits.items()}
        out[f"{a.preset} W{w}A{act}"] = {
            "top1_1thread": (pred[1] == y).float().mean().item() * 100,
            "top1_2threads": (pred[2] == y).float().mean().item() * 100,
            "agreement": (pred[1] == pred[2]).float().mean().item() * 100,
            "max_abs_logit_diff": (logits[1] - logits[2]).abs().max().item(),
            "top1_float64": (pred["float64"] == y).float().mean().item() * 100,
            "agreement_float64": (pred[1] == pred["float64"]).float().mean().item() * 100,
            "max_abs_logit_diff_float64": (logits[1] - logits["float64"]).abs().max().item(), "machine": machine()}
        print(bits, out[f"{a.preset} W{w}A{act}"], flush=True)
        path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
