"""The ImageNet ViT-Tiny as timm and as a transformers folder: same float logits, same quantized model.

    python benchmarks/hf_crosscheck.py --threads 1

Converts ../shared/imagenet's timm ViT-Tiny into a transformers ViTForImageClassification folder
(scripts/timm_to_hf.py, under benchmarks/cache/), loads it back through `--model-dir`
(models/hf.py), and compares on the 1,000 `sample/` images: the decoded images of the two data
configs; the float logits of timm, of the folder as dfqvit maps it, and of transformers' own
model (eager attention); then quantizes both dfqvit models on the same 32 real `calib/` images
(seed 0, preset `strong`) and compares top-1 and agreement of the quantized predictions.
Writes benchmarks/results/hf_crosscheck.json.
"""
from __future__ import annotations

import argparse
import importlib.util
import time

import torch

from common import CACHE, RESULTS, eval_set, load, machine, shared
from dfqvit import api
from dfqvit.models import load_model
from dfqvit.presets import quant_config


def _converter():
    spec = importlib.util.spec_from_file_location("timm_to_hf", RESULTS.parent.parent / "scripts" / "timm_to_hf.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _logits(fn, x: torch.Tensor, batch: int = 100) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([fn(x[i:i + batch]).float() for i in range(0, len(x), batch)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bits", default="8/8,4/4")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from transformers import ViTForImageClassification

    timm_loaded = load("imagenet/vit_tiny_patch16_224.json")
    folder = _converter().convert(timm_loaded, CACHE / "hf-vit-tiny")
    hf_loaded = load_model(hf_dir=folder)
    reference = ViTForImageClassification.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                                          attn_implementation="eager").eval()
    x_t, y = eval_set(timm_loaded, "imagenet/sample")
    x_h, y_h = eval_set(hf_loaded, "imagenet/sample")
    out: dict = {"machine": machine(), "folder": str(folder.relative_to(RESULTS.parent)),
                 "images_equal": bool(torch.equal(x_t, x_h) and torch.equal(y, y_h))}
    fp = {"timm": _logits(timm_loaded.model, x_t), "dfqvit --model-dir": _logits(hf_loaded.model, x_h),
          "transformers": _logits(lambda b: reference(pixel_values=b).logits, x_h)}
    out["float"] = {name: {"top1": (v.argmax(1) == y).float().mean().item() * 100,
                           "max_abs_logit_diff_to_timm": (v - fp["timm"]).abs().max().item(),
                           "agreement_with_timm": (v.argmax(1) == fp["timm"].argmax(1)).float().mean().item() * 100}
                    for name, v in fp.items()}
    calib = shared("imagenet/calib")
    out["quantized"] = {}
    for bits in a.bits.split(","):
        w, act = (int(b) for b in bits.split("/"))
        config = quant_config("strong", w_bits=w, a_bits=act)
        preds, cell = {}, {}
        for name, loaded, x in (("timm", timm_loaded, x_t), ("dfqvit --model-dir", hf_loaded, x_h)):
            images, _ = api.real_images(loaded, calib, 32, seed=0)
            t0 = time.perf_counter()
            q, _ = api.quantize(loaded, images, config, progress=False)
            logits = _logits(q, x)
            preds[name] = logits.argmax(1)
            cell[name] = {"top1": (preds[name] == y).float().mean().item() * 100, "seconds": time.perf_counter() - t0,
                          "logits": logits}
        t, h = cell["timm"].pop("logits"), cell["dfqvit --model-dir"].pop("logits")
        cell["agreement_between"] = (preds["timm"] == preds["dfqvit --model-dir"]).float().mean().item() * 100
        cell["max_abs_logit_diff"] = (t - h).abs().max().item()
        out["quantized"][f"W{w}A{act}"] = cell
        print(f"W{w}A{act}: {cell}", flush=True)
    path = RESULTS / "hf_crosscheck.json"
    import json

    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
