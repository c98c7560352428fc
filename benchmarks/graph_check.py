"""Steps replayed as a CUDA graph against eager steps on real models: the same images? how fast?

    python benchmarks/graph_check.py --model-config ../shared/imagenet/vit_tiny_patch16_224.json \
        --model-config ../shared/cifar10/models/swin_micro_cifar10.json --iterations 40

One batch of 32 images per method and model, synthesized twice from the same seed — eager steps,
then steps replayed as a CUDA graph — with the largest image difference, both runs' final loss
terms and their wall-clock ms per iteration (capture and warm-up included). Needs CUDA. Writes
benchmarks/results/graph_check_cuda.json.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import torch

from common import RESULTS, machine
from dfqvit.api import observable_copy
from dfqvit.errors import ConfigError
from dfqvit.models import load_model, load_model_config
from dfqvit.synthesis import SynthesisOptions, get_method, graphs
from dfqvit.synthesis.loop import synthesize_images


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-config", action="append", default=[], help="a model config (repeatable)")
    p.add_argument("--embedded", action="store_true", help="also the embedded tiny ViT (the unit tests' model)")
    p.add_argument("--num-images", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=1,
                   help="runs per mode: with 2, also each mode's run-to-run difference (is a difference the "
                        "graph's, or the GPU's nondeterminism that both modes have?)")
    p.add_argument("--methods", default="psaq,psaq-lite,dfq-vit,mimiq,sardfq")
    p.add_argument("--iterations", type=int, default=40)
    a = p.parse_args()
    default = set(graphs.GRAPH_ON)
    out = {"machine": machine(), "iterations": a.iterations, "torch": torch.__version__, "models": {}}
    for config in a.model_config + (["embedded"] if a.embedded else []):
        loaded = load_model() if config == "embedded" else load_model_config(config)
        model = observable_copy(loaded.model).cuda()
        size, dc = tuple(loaded.data_config["input_size"]), loaded.data_config
        rows = out["models"][Path(config).stem] = {}
        for name in a.methods.split(","):
            runs = {}
            modes = [(m + (f"#{r}" if r else ""), on) for r in range(a.repeats)
                     for m, on in (("eager", set()), ("graphed", default))]
            for mode, on in modes:
                graphs.GRAPH_ON = on
                opts = SynthesisOptions(num_images=a.num_images, batch_size=a.batch_size, iterations=a.iterations, seed=0)
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    try:
                        res = synthesize_images(model, get_method(name), size, loaded.num_classes, dc["mean"],
                                                dc["std"], opts, "cuda", progress=False)
                    except ConfigError as e:  # e.g. SARDFQ's attention prior on a Swin
                        runs = {"skipped": str(e)}
                        break
                    torch.cuda.synchronize()
                    steps = a.iterations * max(1, len(get_method(name).rounds))
                runs[mode] = {"ms_per_iteration": (time.perf_counter() - t0) / steps * 1000,
                              "final_terms": res.final_terms, "images": res.images,
                              "warnings": [str(w.message) for w in caught if "CUDA graph" in str(w.message)]}
            graphs.GRAPH_ON = default
            if "skipped" not in runs:
                for r in range(1, a.repeats):
                    for m in ("eager", "graphed"):
                        again = runs[f"{m}#{r}"].pop("images")
                        runs[f"{m}_rerun_max_image_difference"] = float((again - runs[m]["images"]).abs().max())
                        print(f"  {m} run {r} vs run 0: max |Δimage| {runs[f'{m}_rerun_max_image_difference']:.2e}")
                e, g = runs["eager"].pop("images"), runs["graphed"].pop("images")
                runs["max_image_difference"] = float((g - e).abs().max())
                runs["image_range"] = float(e.abs().max())
                print(f"{Path(config).stem} {name:10s} eager {runs['eager']['ms_per_iteration']:6.1f} ms, graphed "
                      f"{runs['graphed']['ms_per_iteration']:6.1f} ms/iteration; max |Δimage| "
                      f"{runs['max_image_difference']:.2e} of {runs['image_range']:.2f}"
                      + (f"; {runs['graphed']['warnings']}" if runs["graphed"]["warnings"] else ""))
            else:
                print(f"{Path(config).stem} {name:10s} skipped: {runs['skipped']}")
            rows[name] = runs
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "graph_check_cuda.json").write_text(json.dumps(out, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
