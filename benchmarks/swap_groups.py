"""Which activation quantizers do synthetic images calibrate wrongly at 4 bits? Quantize with the
data-free preset on DFQ-ViT images, then give one group of activation quantizers the state a
real-image calibration of the same model chose (same reparameterization, same weights), and
evaluate. A diagnostic that uses real images: it says where the data-free gap is, not how to close it.

    python benchmarks/swap_groups.py --threads 1          # ImageNet ViT-Tiny, W4A4, strong-synthetic, no recon

Groups: post-LayerNorm inputs (qkv, fc1), the attention projection's input, post-GELU (fc2
input), the q/k/v matmul inputs, the softmax output, and all of them. Both sides calibrate on 4
crop/flip views of their 32 images (the preset's). Writes benchmarks/results/swap_groups.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from common import RESULTS, Results, calibration_images, eval_set, fp_reference, load, machine
from dfqvit import api
from dfqvit.calibration import calibrate
from dfqvit.data.views import calibration_views
from dfqvit.presets import quant_config
from dfqvit.quant.reparam import reparameterize
from dfqvit.quant.search import search_linear_inputs
from dfqvit.quant.wrap import QuantizedViT
from dfqvit.synthesis import SynthesisOptions, get_method

# group → which quantizer modules (by their qualified name's ending) take the real-image state
GROUPS = {
    "post-LayerNorm (qkv, fc1 inputs)": ("attn.inner.qkv.input_quantizer", "mlp.fc1.input_quantizer"),
    "projection input": ("attn.inner.proj.input_quantizer",),
    "post-GELU (fc2 input)": ("mlp.fc2.input_quantizer",),
    "q/k/v matmul inputs": ("q_point", "k_point", "v_point"),
    "softmax output": ("probs_point",),
}
GROUPS["all of them"] = tuple(s for g in GROUPS.values() for s in g)


def calibrated(base: QuantizedViT, images: torch.Tensor, search: bool) -> QuantizedViT:
    q = copy.deepcopy(base)
    calibrate(q, images, 32)
    if search:
        search_linear_inputs(q, images, 32)
    return q.eval()


def swapped(syn_q: QuantizedViT, real_q: QuantizedViT, endings: tuple[str, ...]) -> tuple[QuantizedViT, int]:
    """syn_q with each quantizer whose name ends in one of `endings` replaced by real_q's."""
    q = copy.deepcopy(syn_q)
    real = dict(real_q.named_modules())
    count = 0
    for name, _ in list(q.named_modules()):
        if name.endswith(endings):
            parent, _, child = name.rpartition(".")
            setattr(q.get_submodule(parent), child, copy.deepcopy(real[name]))
            count += 1
    return q, count


def range_ratios(syn_q: QuantizedViT, real_q: QuantizedViT) -> dict[str, dict[str, float]]:
    """Per group and scale tensor (step, positive/negative step, log base): how the synthetic calibration's
    values compare with the real one's, as log2(synthetic / real) over every quantizer (and channel) of the
    group: the mean (which way the synthetic images push it), the mean absolute value (how far), the count."""
    real = dict(real_q.named_modules())
    out: dict[str, dict[str, float]] = {}
    for group, endings in GROUPS.items():
        if group == "all of them":
            continue
        logs: dict[str, list[torch.Tensor]] = {}
        for name, module in syn_q.named_modules():
            if not name.endswith(endings):
                continue
            theirs = dict(real[name].named_buffers()) | dict(real[name].named_parameters())
            for key, value in (dict(module.named_buffers()) | dict(module.named_parameters())).items():
                if "scale" in key or key == "log_base":
                    ratio = value.detach().double().clamp(min=1e-12) / theirs[key].detach().double().clamp(min=1e-12)
                    logs.setdefault(key, []).append(torch.log2(ratio).flatten())
        for key, parts in logs.items():
            v = torch.cat(parts)
            out[f"{group}|{key}"] = {"mean_log2": float(v.mean()), "mean_abs_log2": float(v.abs().mean()),
                                     "values": v.numel()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bits", default="4/4")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--groups", default=";".join(GROUPS))
    p.add_argument("--ranges", action="store_true",
                   help="only compare the two calibrations' step sizes per group (no evaluation): "
                        "swap_groups_ranges.json")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    w, act = (int(v) for v in a.bits.split("/"))
    loaded = load("imagenet/vit_tiny_patch16_224.json")
    opts = SynthesisOptions(num_images=32, batch_size=32, iterations=500)  # the low-bit table's images
    syn = calibration_images(loaded, get_method("dfq-vit"), opts, "imagenet/calib")[0]
    real = calibration_images(loaded, get_method("real"), opts, "imagenet/calib")[0]
    config = quant_config("strong-synthetic", w_bits=w, a_bits=act, calib_blur=0.0)  # as measured (before the blur)
    syn_v, real_v = (calibration_views(imgs, config.calib_views, seed=0) for imgs in (syn, real))
    t0 = time.perf_counter()
    base = QuantizedViT(loaded.model, config)
    reparameterize(base, syn_v, 32, attention_output=config.reparam == "all", skip_blocks=config.reparam_skip_blocks)
    search = config.act_search == "output"
    syn_q, real_q = calibrated(base, syn_v, search), calibrated(base, real_v, search)
    prep_s = time.perf_counter() - t0
    tag = f"W{w}A{act}"
    if a.ranges:
        path = RESULTS / "swap_groups_ranges.json"
        got = json.loads(path.read_text()) if path.is_file() else {}
        got[tag] = {"machine": machine(), "note": "log2(synthetic / real) of each step size, per group",
                    "groups": range_ratios(syn_q, real_q)}
        path.write_text(json.dumps(got, indent=1) + "\n")
        for key, v in got[tag]["groups"].items():
            print(f"{key}: mean log2 {v['mean_log2']:+.2f}, mean |log2| {v['mean_abs_log2']:.2f} ({v['values']})")
        return
    results = Results(RESULTS / "swap_groups.json", {
        "model": "vit_tiny_patch16_224", "config": config.to_dict(), "eval": "1000 sample/ images",
        "synthetic": "32 DFQ-ViT images (500 iterations) × 4 views; real: 32 calib/ images × 4 views",
        "note": "reparameterization scales from the synthetic views on both sides; no reconstruction",
        "machine": machine()})

    x, y = eval_set(loaded, "imagenet/sample")
    fp = fp_reference(loaded, x, y, "cpu")

    def put(key: str, q: QuantizedViT, extra: dict) -> None:
        ev = api.evaluate(q, loaded, (x, y), device="cpu", progress=False, fp_logits=fp["logits"])
        results.put(key, {"top1": ev["top1"], "agreement": ev["agreement_top1"], "kl": ev["kl_to_fp"], **extra})
        print(f"{key}: top-1 {ev['top1']:.1f} agreement {ev['agreement_top1']:.1f} KL {ev['kl_to_fp']:.3f}",
              flush=True)

    if not results.has(f"synthetic|{tag}"):
        put(f"synthetic|{tag}", syn_q, {"prepare_s": prep_s})
    if not results.has(f"real|{tag}"):
        put(f"real|{tag}", real_q, {"prepare_s": prep_s})
    for group in a.groups.split(";"):
        key = f"real for {group}|{tag}"
        if results.has(key):
            continue
        q, count = swapped(syn_q, real_q, GROUPS[group])
        put(key, q, {"quantizers": count})


if __name__ == "__main__":
    main()
