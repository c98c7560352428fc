"""Which blocks of the ImageNet ViT-Tiny do data-free images get wrong? `dfqvit compare-calibration`
on the calibration sets the other ImageNet tables use (read from their cache, so no synthesis
here when they ran first).

    python benchmarks/diagnose_imagenet.py          # dfq-vit (200 iterations) and noise vs real, W4A8 strong

Writes benchmarks/results/diagnosis_imagenet/{report.md,report.json,diagnosis.png}.
"""
from __future__ import annotations

import argparse

import torch

from common import RESULTS, calibration_images, load
from dfqvit.diagnosis import compare_calibration, write_diagnosis
from dfqvit.presets import quant_config
from dfqvit.synthesis import SynthesisOptions, get_method


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", default="dfq-vit,noise")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--bits", default="4/8")
    p.add_argument("--preset", default="strong")
    a = p.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    loaded = load("imagenet/vit_tiny_patch16_224.json")
    opts = SynthesisOptions(num_images=32, batch_size=32, iterations=a.iterations)
    images = {name: calibration_images(loaded, get_method(name), opts, "imagenet/calib")[0]
              for name in ["real", *a.sources.split(",")]}
    w, act = (int(v) for v in a.bits.split("/"))
    result = compare_calibration(loaded, images, "real", quant_config(a.preset, w_bits=w, a_bits=act))
    result["model"] = loaded.name
    out = RESULTS / "diagnosis_imagenet"
    out.mkdir(parents=True, exist_ok=True)
    write_diagnosis(result, out)
    print((out / "report.md").read_text()[:3000])


if __name__ == "__main__":
    main()
