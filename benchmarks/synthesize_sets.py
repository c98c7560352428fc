"""Fill the benchmark cache with synthetic image sets, one seed each, so that a table's rows find them.

    python benchmarks/synthesize_sets.py --model imagenet --method dfq-vit --seeds 2,3 --threads 1

The sets are exactly those `lowbit_table.py --seeds N` (and a row joining seeds) would make and
cache: same model, method, options and calibration folder, hence the same cache key. Two of these
processes with one thread each fill a four-seed set in half the time one table would take.
Prints each set's SHA-1 prefix (the `images_sha1` a cell records) and its synthesis seconds.
"""
from __future__ import annotations

import argparse

import torch

from common import calibration_images, images_fingerprint, load
from quantizer_table import MODELS

from dfqvit.cli import chroma_scale_arg


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="imagenet", choices=list(MODELS))
    p.add_argument("--method", default="dfq-vit")
    p.add_argument("--seeds", default="0")
    p.add_argument("--num-images", type=int, default=32)
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--lowpass", type=float, default=None, help="the method's synthesis low-pass σ (a row's override)")
    p.add_argument("--gradient-tilt", type=float, default=None,
                   help="the method's synthesis gradient tilt α (a row's override)")
    p.add_argument("--chroma-scale", type=chroma_scale_arg, default=None,
                   help="the method's synthesis chroma scale (a row's override)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (background jobs: 1 each)")
    a = p.parse_args()
    torch.set_num_threads(a.threads or max(1, torch.get_num_threads()))
    from dfqvit.synthesis import SynthesisOptions, get_method

    config, _, calib, _ = MODELS[a.model]
    loaded = load(config)
    for seed in (int(s) for s in a.seeds.split(",")):
        # the options lowbit_table.py passes: one batch of all the images
        opts = SynthesisOptions(num_images=a.num_images, batch_size=a.num_images, iterations=a.iterations, seed=seed)
        method = get_method(a.method).with_options(lowpass=a.lowpass, gradient_tilt=a.gradient_tilt,
                                                  chroma_scale=a.chroma_scale)
        images, seconds = calibration_images(loaded, method, opts, calib)
        print(f"{a.model} {a.method} seed {seed}: {tuple(images.shape)}, SHA-1 {images_fingerprint(images)}, "
              f"{seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
