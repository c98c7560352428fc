"""How far synthetic images are from photographs in their spectrum, and what the first blocks make of it.

    python benchmarks/spectrum_probe.py --threads 1                       # ImageNet ViT-Tiny
    python benchmarks/spectrum_probe.py --threads 1 --model cifar-deit

For the real calibration images, the DFQ-ViT images of the low-bit table (seed 0), those images
low-passed (data/lowpass.py) at several σ and at the σ `--calib-blur auto` reads off them, and (with
`--gradient-tilt A`) DFQ-ViT images synthesized with each step's gradient tilted to f^-A (with
`--chroma-scale B` also those synthesized with their colour changes scaled by B, alone and with the
tilt): the radially averaged power spectrum of the grey image (its log-log slope over 4 cycles per
image to ~45 % of the sampling rate; photographs fall about as f^-2), the mean absolute difference of
neighbouring pixels, the mean spread between colour channels, the float model's confidence on them, and per
block the median token norm of the fc2 input (the post-GELU activations a range is calibrated on).
Writes benchmarks/results/spectrum_<model>.json, a plot of the spectra, spectrum_<model>.png, and the
first 8 images of each unblurred synthetic source at half resolution, spectrum_<model>_synthetic.jpg (the
real images stay in ../shared).
"""
from __future__ import annotations

import argparse
import json

import torch

from common import RESULTS, calibration_images, load, machine
from quantizer_table import MODELS

from dfqvit.cli import chroma_scale_arg
from dfqvit.data.colour import chroma_scale_on, chroma_scale_text


@torch.no_grad()
def fc2_input_norms(model: torch.nn.Module, images: torch.Tensor) -> list[float]:
    """Per block, the median over tokens of the fc2 input's norm (blocks without an `mlp.fc2`: skipped)."""
    from dfqvit.models import find_blocks

    norms: list[float] = []
    hooks = [b.mlp.fc2.register_forward_pre_hook(lambda _m, args: norms.append(float(args[0].norm(dim=-1).median())))
             for _, b in find_blocks(model) if hasattr(getattr(b, "mlp", None), "fc2")]
    try:
        model(images[:32])  # one batch per block's median: 32 images, as calibrated
    finally:
        for h in hooks:
            h.remove()
    return norms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="imagenet", choices=list(MODELS))
    p.add_argument("--sigmas", default="0.5,1,1.5,2")
    p.add_argument("--gradient-tilt", type=float, default=0.0,
                   help="also the DFQ-ViT set synthesized with this gradient tilt (synthesize_sets.py makes it)")
    p.add_argument("--chroma-scale", type=chroma_scale_arg, default=1.0,
                   help="also the DFQ-ViT sets synthesized with this chroma scale (alone, and with --gradient-tilt)")
    p.add_argument("--soft-labels", action="store_true",
                   help="also the DFQ-ViT set with --chroma-scale and --gradient-tilt synthesized to soft targets")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from dfqvit.data.colour import channel_spread
    from dfqvit.data.pixels import denormalise
    from dfqvit.data.lowpass import low_pass, natural_sigma, radial_power, spectral_slope
    from dfqvit.synthesis import SynthesisOptions, get_method

    config, _, calib, _ = MODELS[a.model]
    loaded = load(config)
    model = loaded.model.eval()
    mean, std = loaded.data_config["mean"], loaded.data_config["std"]
    opts = SynthesisOptions(num_images=32, batch_size=32, iterations=500)  # the low-bit table's images, seed 0
    syn = calibration_images(loaded, get_method("dfq-vit"), opts, calib)[0]
    real = calibration_images(loaded, get_method("real"), opts, calib)[0]
    auto = natural_sigma(syn)  # what `--calib-blur auto` (strong-synthetic) takes for these images
    sources = {"real": real, "dfq-vit": syn}
    sources.update({f"dfq-vit, blur {s:g}": low_pass(syn, s) for s in (float(v) for v in a.sigmas.split(","))})
    sources[f"dfq-vit, blur auto ({auto:g})"] = low_pass(syn, auto)
    if a.gradient_tilt:
        tilted = get_method("dfq-vit").with_options(gradient_tilt=a.gradient_tilt)
        sources[f"dfq-vit, gradient tilt {a.gradient_tilt:g}"] = calibration_images(loaded, tilted, opts, calib)[0]
    if chroma_scale_on(a.chroma_scale):
        for tilt in sorted({0.0, a.gradient_tilt}):
            grey = get_method("dfq-vit").with_options(chroma_scale=a.chroma_scale, gradient_tilt=tilt)
            name = f"dfq-vit, chroma {chroma_scale_text(a.chroma_scale)}" + (f", gradient tilt {tilt:g}" if tilt else "")
            sources[name] = calibration_images(loaded, grey, opts, calib)[0]
    if a.soft_labels:
        soft = get_method("dfq-vit").with_options(chroma_scale=a.chroma_scale, gradient_tilt=a.gradient_tilt,
                                                 soft_labels=True)
        sources[f"dfq-vit, chroma {chroma_scale_text(a.chroma_scale)}, gradient tilt {a.gradient_tilt:g}, soft labels"] = \
            calibration_images(loaded, soft, opts, calib)[0]
    out = {"model": config, "machine": machine(), "auto_sigma": auto, "sources": {}}
    spectra = {}
    for name, images in sources.items():
        power = radial_power(images)
        spectra[name] = power
        with torch.no_grad():
            confidence = float(model(images[:32]).softmax(-1).max(-1).values.mean())
        pixels = denormalise(images, mean, std)
        out["sources"][name] = {
            "spectral_slope": spectral_slope(images), "neighbour_difference": float((pixels[..., 1:] - pixels[..., :-1]).abs().mean()),
            "channel_spread": channel_spread(images, mean, std),
            "fp_confidence": confidence, "fc2_input_token_norm": fc2_input_norms(model, images)}
        v = out["sources"][name]
        print(f"{name}: slope {v['spectral_slope']:.2f}, neighbour difference {v['neighbour_difference']:.4f}, "
              f"channel spread {v['channel_spread']:.3f}, "
              f"confidence {confidence:.3f}, fc2-input norms " + " ".join(f"{n:.1f}" for n in v["fc2_input_token_norm"]),
              flush=True)
    path = RESULTS / f"spectrum_{a.model}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2), dpi=110)
    for name, power in spectra.items():
        f = torch.arange(1, len(power))
        ax.loglog(f, power[1:], label=f"{name} (slope {out['sources'][name]['spectral_slope']:.2f})",
                  lw=2.2 if name in ("real", "dfq-vit") else 1.0)
    ax.set_xlabel("spatial frequency (cycles per image)")
    ax.set_ylabel("power (grey image)")
    ax.set_title(f"{a.model}: radially averaged spectra of 32 calibration images")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / f"spectrum_{a.model}.png")
    from dfqvit.synthesis.loop import save_grid

    shown = [name for name in sources if name != "real" and "blur" not in name]  # a row of 8 per synthetic source
    grid = torch.cat([torch.nn.functional.avg_pool2d(sources[name][:8], 2) for name in shown])
    save_grid(grid, mean, std, RESULTS / f"spectrum_{a.model}_synthetic.jpg")
    print(f"wrote {path.name}, spectrum_{a.model}.png and spectrum_{a.model}_synthetic.jpg (rows: {', '.join(shown)})")


if __name__ == "__main__":
    main()
