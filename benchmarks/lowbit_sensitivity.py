"""Where a W3A3 (or W4A4) ViT-Tiny loses its accuracy: quantize with real images, then put one group of
quantizers back to float (or give it more bits) at a time, and evaluate on the first --images sample/ images.

    python benchmarks/lowbit_sensitivity.py --bits 3/3 --preset strong --images 300

Groups: softmax output, post-GELU (fc2 input), post-LayerNorm inputs (qkv, fc1), q/k/v matmul inputs,
the other Linear inputs (proj), and the block weights. Writes
benchmarks/results/lowbit_sensitivity.json (cells keyed by bits|preset|group).
"""
from __future__ import annotations

import argparse
import time


from common import RESULTS, Results, calibration_images, eval_set, fp_reference, load, machine
from dfqvit import api
from dfqvit.presets import quant_config
from dfqvit.quant.modules import QuantLinear
from dfqvit.quant.quantizers import LogQuantizer
from dfqvit.synthesis import SynthesisOptions, get_method


def _groups(q) -> dict[str, list]:
    """Activation quantizers by role."""
    out: dict[str, list] = {"softmax": [], "post-GELU": [], "post-LayerNorm": [], "q/k/v": [], "proj input": []}
    for name, m in q.named_modules():
        if isinstance(m, LogQuantizer) or name.endswith("probs_point"):
            out["softmax"].append(m)
        elif name.endswith(("q_point", "k_point", "v_point")):
            out["q/k/v"].append(m)
        elif isinstance(m, QuantLinear) and ".blocks." in f".{name}":
            group = ("post-GELU" if name.endswith("fc2") else "post-LayerNorm" if name.endswith(("qkv", "fc1"))
                     else "proj input")
            out[group].append(m.input_quantizer)
    return out


def _block_linears(q):
    """(name, layer) of the quantized Linears inside the transformer blocks."""
    return ((n, m) for n, m in q.named_modules() if isinstance(m, QuantLinear) and ".blocks." in f".{n}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bits", default="3/3")
    p.add_argument("--preset", default="strong")
    p.add_argument("--images", type=int, default=300)
    p.add_argument("--source", default="real", choices=["real", "dfq-vit"])
    a = p.parse_args()
    loaded = load("imagenet/vit_tiny_patch16_224.json")
    x, y = eval_set(loaded, "imagenet/sample")
    x, y = x[:a.images], y[:a.images]
    fp = fp_reference(loaded, x, y)
    calib, _ = calibration_images(loaded, get_method(a.source), SynthesisOptions(num_images=32, batch_size=32,
                                                                                 iterations=500), "imagenet/calib")
    w, act = (int(v) for v in a.bits.split("/"))
    results = Results(RESULTS / "lowbit_sensitivity.json", {"model": "imagenet/vit_tiny_patch16_224.json",
                                                             "eval": f"first {a.images} sample/ images",
                                                             "fp_top1": fp["top1"], "machine": machine()})
    t0 = time.perf_counter()
    q, _ = api.quantize(loaded, calib, quant_config(a.preset, w_bits=w, a_bits=act), progress=False)
    seconds = time.perf_counter() - t0
    groups = _groups(q)
    for group in ["none", *groups, "block weights"]:
        key = f"{a.source}|W{w}A{act}|{a.preset}|{group} in float"
        if results.has(key):
            continue
        touched = groups.get(group, [])
        saved = [(m, m.mode) for m in touched]
        for m in touched:
            m.mode = "float"
        if group == "block weights":  # the weights in float: their share of the loss
            # GPTQ writes its rounding into the weights, so a weight quantizer put in float leaves them on the grid:
            # the float weights are the same pipeline's with nearest rounding (calibration and search run before GPTQ)
            twin, _ = api.quantize(loaded, calib, quant_config(a.preset, w_bits=w, a_bits=act,
                                                               weight_rounding="nearest"), progress=False)
            float_weights = dict(_block_linears(twin))
            layers = list(_block_linears(q))
            rounded = {n: m.inner.weight.detach().clone() for n, m in layers}
            for n, m in layers:
                m.weight_quantizer.mode = "float"
                m.inner.weight.data.copy_(float_weights[n].inner.weight)
        ev = api.evaluate(q, loaded, (x, y), progress=False, fp_logits=fp["logits"])
        for m, mode in saved:
            m.mode = mode
        if group == "block weights":
            for n, m in layers:
                m.weight_quantizer.mode = "quant"
                m.inner.weight.data.copy_(rounded[n])
        results.put(key, {"top1": ev["top1"], "agreement": ev["agreement_top1"], "kl": ev["kl_to_fp"],
                          "quantizers": len(layers) if group == "block weights" else len(touched),
                          "quantize_s": seconds})
        print(f"{key}: top-1 {ev['top1']:.1f} agreement {ev['agreement_top1']:.1f} KL {ev['kl_to_fp']:.3f}", flush=True)


if __name__ == "__main__":
    main()
