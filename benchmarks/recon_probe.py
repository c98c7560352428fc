"""Does block reconstruction on synthetic images transfer? A per-block probe on held-out real images.

    python benchmarks/recon_probe.py --threads 1 --blocks 3 --variants "mse;fisher;mse, no act steps"

Quantizes the ImageNet ViT-Tiny once (`strong-synthetic` with adalog post-GELU, 4 views, on the 32
cached DFQ-ViT images, as the low-bit table does), then for each variant of the reconstruction
options reconstructs the first `--blocks` blocks on those 128 views and records, per block: the
optimised error on the training views before / at the end with soft rounding / after hard rounding,
and the plain output MSE on 128 real `calib/` images it never saw (the quantized model's own inputs
against the float block's output on the float inputs), before and after, and the KL from the float
model's logits on those real images once blocks 0..k are reconstructed: where reconstruction stops
transferring. Writes benchmarks/results/recon_probe_W<w>A<a><tag>.json (variants a re-run
has are skipped).
"""
from __future__ import annotations

import argparse
import copy
import time

import torch

from common import RESULTS, Results, calibration_images, eval_set, load, machine

VARIANTS = {
    "mse": {},
    "fisher": {"objective": "fisher"},
    "fisher, T=1": {"objective": "fisher", "fisher_temperature": 1.0},
    "mse, no act steps": {"act_lr": 0.0},
    "mse, lr 1e-1": {"lr": 1e-1},
    "fisher, lr 1e-1": {"objective": "fisher", "lr": 1e-1},
    "mse, 300 steps": {"steps": 300},
    "mse, no QDrop": {"drop_prob": 0.0},
    # each token's error relative to its float variance (the next LayerNorm's view): the massive tokens of blocks 7+
    "relative": {"objective": "relative"},
    "relative, no act steps": {"objective": "relative", "act_lr": 0.0},
}


def block_outputs(model: torch.nn.Module, block: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    got: list[torch.Tensor] = []

    def keep(_m, _args, out) -> None:
        got.append(out)

    h = block.register_forward_hook(keep)
    with torch.no_grad():
        for s in range(0, len(images), 32):
            model(images[s:s + 32])
    h.remove()
    return torch.cat(got)


def held_out_mse(qb, fb, q, fp, real) -> float:
    """The quantized block's output on the quantized model's inputs against the float block on the float inputs."""
    return (block_outputs(q, qb, real) - block_outputs(fp, fb, real)).pow(2).mean().item()


def kl(q, fp_logits, real) -> float:
    with torch.no_grad():
        lq = torch.cat([q(real[s:s + 32]) for s in range(0, len(real), 32)])
    return torch.nn.functional.kl_div(lq.log_softmax(-1), fp_logits.log_softmax(-1), log_target=True,
                                      reduction="batchmean").item()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="mse;fisher")
    p.add_argument("--blocks", type=int, default=3)
    p.add_argument("--bits", default="4/4")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tag", default="", help="suffix of the result file (two probes at once write apart)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from dfqvit import api
    from dfqvit.correction.reconstruct import ReconstructOptions, _block_inputs, fisher_weights, reconstruct_block
    from dfqvit.data.views import calibration_views
    from dfqvit.models.attention import find_blocks
    from dfqvit.presets import quant_config
    from dfqvit.synthesis import SynthesisOptions, get_method

    w_bits, a_bits = (int(v) for v in a.bits.split("/"))
    loaded = load("imagenet/vit_tiny_patch16_224.json")
    images, _ = calibration_images(loaded, get_method("dfq-vit"), SynthesisOptions(num_images=32, batch_size=32,
                                                                                  iterations=500), "imagenet/calib")
    real_x, _ = eval_set(loaded, "imagenet/calib")
    real = real_x[torch.randperm(len(real_x), generator=torch.Generator().manual_seed(1))[:128]]
    cfg = quant_config("strong-synthetic", w_bits=w_bits, a_bits=a_bits, gelu_quantizer="adalog", calib_views=4,
                       calib_blur=0.0)  # as its results were measured (before the preset's low-pass)
    t0 = time.perf_counter()
    base, _ = api.quantize(loaded, images, cfg, device="cpu", progress=False)
    print(f"quantized in {time.perf_counter() - t0:.0f} s", flush=True)
    views = calibration_views(images, 4, seed=0)
    fp = api.observable_copy(loaded.model).eval()
    with torch.no_grad():
        fp_logits = torch.cat([fp(real[s:s + 32]) for s in range(0, len(real), 32)])
    results = Results(RESULTS / f"recon_probe_W{w_bits}A{a_bits}{a.tag}.json",
                      {"model": "imagenet vit_tiny", "train": "32 DFQ-ViT images × 4 views", "held_out": "128 real calib/",
                       "blocks": a.blocks, "machine": machine(), "variants": VARIANTS})
    if not results.has("none"):
        results.put("none", {"kl_held_out": kl(base, fp_logits, real)})
    for name in [v for v in a.variants.split(";") if v]:
        if results.has(name):
            continue
        opts = ReconstructOptions(**{"steps": 100, "seed": 0, **VARIANTS[name]})
        q = copy.deepcopy(base)
        gen = torch.Generator().manual_seed(0)
        qbs, fbs = [b for _, b in find_blocks(q)][:a.blocks], [b for _, b in find_blocks(fp)][:a.blocks]
        weights = [None] * len(fbs)  # Fisher weights of the probed blocks only (the label draws do not depend on it)
        if opts.objective == "fisher":
            weights = fisher_weights(fp, fbs, views, 32, opts.fisher_temperature, opts.fisher_draws, gen)
        rows, t0 = [], time.perf_counter()
        for k in range(a.blocks):
            before = held_out_mse(qbs[k], fbs[k], q, fp, real)
            x_q = _block_inputs(q, qbs[k], views, 32)
            x_fp = _block_inputs(fp, fbs[k], views, 32)
            train = reconstruct_block(qbs[k], fbs[k], x_q, x_fp, opts, gen, weights[k])
            rows.append({"block": k, "train": train, "held_out_before": before,
                         "held_out_after": held_out_mse(qbs[k], fbs[k], q, fp, real),
                         "kl_held_out": kl(q, fp_logits, real)})  # blocks 0..k reconstructed, the rest not
            print(name, rows[-1], flush=True)
        results.put(name, {"blocks": rows, "kl_held_out": kl(q, fp_logits, real), "seconds": time.perf_counter() - t0})
        print(name, "KL", results.data["cells"][name]["kl_held_out"], "base", results.data["cells"]["none"], flush=True)


if __name__ == "__main__":
    main()
