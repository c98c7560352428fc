"""RepQ-ViT's own public code on this project's ImageNet ViT-Tiny, side by side with dfqvit.

    git --git-dir=<mirror of github zkkli/RepQ-ViT> archive HEAD classification | tar -x -C /tmp/repq
    python benchmarks/peers/repq_vit.py --repo /tmp/repq --bits 6/6,4/8,4/4,3/3

Its `classification/test_quant.py` main() runs unchanged (initial calibration, scale
reparameterization, re-calibration, validation); four adaptations to timm 1.0 are applied here at
run time, none in its files:
1. its attention forwards take `(self, x)`; timm 1.0 calls `attn(x, attn_mask=...)`: each
   Attention gets a forward that accepts and drops those arguments and calls RepQ-ViT's own
   `attention_forward` (RepQ-ViT's `build_model` patching, done on our model);
2. its `build_model` downloads weights (`pretrained=True`): the model is built here from the local
   `../shared/imagenet` weights;
3. its model list has no `vit_tiny`: main() is given `vit_small` (a name it knows; only its `'swin'
   in args.model` test reads it) and the builder returns the local ViT-Tiny;
4. its reparameterization loop takes every module whose name contains `norm` for a LayerNorm;
   timm 1.0 adds Identity placeholders (`attn.q_norm`, `attn.k_norm`, `attn.norm`, `mlp.norm`)
   that would crash it: they are hidden from `named_modules()` (kept as plain attributes, so
   `Mlp.forward` still calls its identity), leaving the real LayerNorms only.
Calibration: 32 real images, the first image of each of the first 32 `calib/` synsets (its
loader takes one random training batch of 32). Evaluation: the 1,000 `sample/` images through the
model's timm data config (what every dfqvit row uses), top-1, agreement and KL against FP.
What it quantizes: every Linear (head included) and the patch conv at the W/A bits (the conv input
at 8 bits), both inputs of q·kᵀ and attn·v (attn·v's softmax input with log√2), per-channel
weights, per-tensor activations with post-LayerNorm inputs reparameterized.
Writes benchmarks/results/peers_repq_vit.json after every cell.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import MethodType, SimpleNamespace

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from common import RESULTS, eval_set, load, machine, shared  # noqa: E402


def _calibration_batch(loaded, n: int = 32) -> torch.Tensor:
    from dfqvit.data.folder import eval_transform, open_rgb

    root = shared("imagenet/calib")
    synsets = sorted(p for p in root.iterdir() if p.is_dir())[:n]
    tf = eval_transform(loaded.data_config)
    return torch.stack([tf(open_rgb(sorted(f for f in d.iterdir() if f.is_file())[0])) for d in synsets])


def _adapted_model(loaded, repq_build):
    """RepQ-ViT's build_model steps on our local model (adaptations 1, 2, 4)."""
    import copy

    import torch.nn as nn
    from timm.models.vision_transformer import Attention

    model = copy.deepcopy(loaded.model).eval()
    for module in model.modules():
        if isinstance(module, Attention):
            module.matmul1, module.matmul2 = repq_build.MatMul(), repq_build.MatMul()

            def forward(self, x, attn_mask=None, **_ignored):  # adaptation 1
                return repq_build.attention_forward(self, x)

            module.forward = MethodType(forward, module)
    for parent in list(model.modules()):  # adaptation 4
        for name, child in list(parent.named_children()):
            if "norm" in name and isinstance(child, nn.Identity):
                del parent._modules[name]
                parent.__dict__[name] = child
    return model


def run_cell(repo: Path, loaded, calib: torch.Tensor, x: torch.Tensor, y: torch.Tensor, fp_logits: torch.Tensor,
             w_bits: int, a_bits: int) -> dict:
    sys.path.insert(0, str(repo / "classification"))
    import test_quant  # RepQ-ViT's script, imported (its __main__ block does not run)

    repq_build = sys.modules["utils.build_model"]  # the module (its package re-exports a function of that name)

    from dfqvit.evaluation import metrics

    captured = {}

    def validate(_args, val_loader, model, _criterion, device):
        with torch.no_grad():
            captured["logits"] = torch.cat([model(xb.to(device)).cpu() for xb, _ in val_loader])
        return 0.0, 0.0, 0.0

    test_quant.args = SimpleNamespace(model="vit_small", device="cpu", seed=0, w_bits=w_bits, a_bits=a_bits,
                                      print_freq=10**9)  # adaptation 3
    test_quant.build_dataset = lambda _args: ([(calib, torch.zeros(len(calib)))],
                                              [(x[i:i + 100], y[i:i + 100]) for i in range(0, len(x), 100)])
    test_quant.build_model = lambda _name: _adapted_model(loaded, repq_build)  # adaptation 2
    test_quant.validate = validate
    t0 = time.perf_counter()
    test_quant.main()
    seconds = time.perf_counter() - t0
    m = metrics(captured["logits"], y, fp_logits)
    return {"top1": m["top1"], "agreement": m["agreement_top1"], "kl": m["kl_to_fp"], "seconds": seconds,
            "quantized_on": machine()["device"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", required=True, help="a checkout of github zkkli/RepQ-ViT (its classification/ folder)")
    p.add_argument("--bits", default="6/6,4/8,4/4,3/3")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    repo = Path(a.repo).resolve()
    if not (repo / "classification" / "test_quant.py").is_file():
        raise SystemExit(f"{repo}: no classification/test_quant.py (expected a RepQ-ViT checkout)")
    loaded = load("imagenet/vit_tiny_patch16_224.json")
    x, y = eval_set(loaded, "imagenet/sample")
    calib = _calibration_batch(loaded)
    from dfqvit import api

    fp = api.evaluate(loaded.model, loaded, (x, y), progress=False, return_logits=True)
    out = RESULTS / "peers_repq_vit.json"
    data = json.loads(out.read_text()) if out.is_file() else {}
    data.update({"peer": "RepQ-ViT (github zkkli/RepQ-ViT, classification/test_quant.py)", "model":
                 "imagenet/vit_tiny_patch16_224.json", "eval": "imagenet/sample", "fp_top1": fp["top1"],
                 "calibration": "first image of the first 32 calib/ synsets", "machine": machine()})
    data.setdefault("cells", {})
    for bits in a.bits.split(","):
        w, act = (int(v) for v in bits.split("/"))
        key = f"W{w}A{act}"
        if key in data["cells"]:
            continue
        data["cells"][key] = run_cell(repo, loaded, calib, x, y, fp["logits"], w, act)
        print(key, data["cells"][key], flush=True)
        tmp = out.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1) + "\n")
        os.replace(tmp, out)


if __name__ == "__main__":
    main()
