"""Milliseconds of each synthesis loss term alone — its forward and its backward to the tensors it
reads — on one recorded forward of a model, against the model's own forward+backward.

    python benchmarks/term_speed.py --model deit_tiny_patch16_224      # CPU, random-init DeiT-Tiny, 224 px
    python benchmarks/term_speed.py                                     # the embedded tiny ViT
    python benchmarks/term_speed.py --model deit_tiny_patch16_224 --device cuda   # a GPU (eager terms)

A whole synthesis step on a shared CPU moves by ±15 % from run to run, more than a change to one
term saves. Here every term is timed many times, interleaved with the others and with the bare
step, and the minimum is kept: drift hits all rows alike, and a term's few hundred milliseconds
can be compared between commits (`bash benchmarks/speed_ab.sh COMMIT TAG N term_speed.py ...`).
Writes benchmarks/results/term_speed_<tag>.json.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from common import RESULTS, machine, speed_model
from dfqvit.models.attention import PointRecorder, attention_modules
from dfqvit.synthesis.losses import BUILT_IN_TERMS, LOSS_TERMS, SynthesisContext, make_targets, random_attention_priors


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="a timm name, randomly initialised")
    p.add_argument("--model-config", default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--terms", default=",".join(sorted(BUILT_IN_TERMS)))
    a = p.parse_args()
    device = torch.device(a.device)
    loaded, model, model_name = speed_model(a.model, a.model_config, device)
    torch.manual_seed(0)
    size = tuple(loaded.data_config["input_size"])
    x = torch.randn(a.batch_size, *size, device=device, requires_grad=True)
    recs = {point: PointRecorder(model, point) for point in ("head_output_point", "probs_point")}
    logits = model(x)
    for r in recs.values():
        r.remove()
    # the recorded tensors as leaves: a term's backward stops at what it reads, not at the images
    heads = [t.detach().requires_grad_(True) for t in recs["head_output_point"].values]
    probs = [t.detach().requires_grad_(True) for t in recs["probs_point"].values]
    gen = torch.Generator().manual_seed(1)
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", (16, 16))
    targets = make_targets(a.batch_size, loaded.num_classes, gen).to(device)
    ctx = SynthesisContext(model, x, logits.detach().requires_grad_(True), targets,
                           attention_modules(model), heads, probs, gen, 0, 10,
                           int(getattr(model, "num_prefix_tokens", 1)),
                           random_attention_priors(a.batch_size, (size[1] // patch[0], size[2] // patch[1]), gen).to(device),
                           extras={"tv_psaq": torch.tensor([2750.0], device=device)})
    names = a.terms.split(",")

    def bare() -> None:
        model(x).logsumexp(1).mean().backward()

    def term(name: str):
        def run() -> None:
            LOSS_TERMS[name](ctx).backward()
        return run

    def sync() -> None:  # a GPU's time, not its launches' (an eager term on a GPU may be bound by either)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    runs = {"bare forward+backward": bare, **{name: term(name) for name in names}}
    best = {k: float("inf") for k in runs}
    for round_ in range(a.repeats + 1):  # round 0 warms up and is not kept
        for k, fn in runs.items():
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            if round_ > 0:
                best[k] = min(best[k], (time.perf_counter() - t0) * 1000)
    out = {"model": loaded.name, "device": str(device), "batch": a.batch_size, "input": size, "repeats": a.repeats, "machine": machine(),
           "min_ms": best, "ratio_to_bare": {k: v / best["bare forward+backward"] for k, v in best.items()}}
    print(f"{loaded.name} {size} batch {a.batch_size} on {device}, min of {a.repeats} (ms, × bare forward+backward):")
    for k, v in best.items():
        print(f"  {k:24s} {v:9.1f}  ×{v / best['bare forward+backward']:.3f}")
    tag = model_name + ("" if device.type == "cpu" else f"_{device.type}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"term_speed_{tag}.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
