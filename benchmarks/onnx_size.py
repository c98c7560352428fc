"""File size of the ONNX exports of the ImageNet ViT-Tiny: FP32, and W8A8 / W4A8 / W4A4 QDQ graphs with
≤ 4-bit weights as UINT4 (opset 21) and, for comparison, one byte per code (opset 17); with ONNX
Runtime's agreement with the PyTorch model on the first --images sample/ images.

    python benchmarks/onnx_size.py --images 200

Writes benchmarks/results/onnx_size_imagenet.json.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from common import RESULTS, calibration_images, eval_set, load, machine
from dfqvit import api
from dfqvit.onnx_export import OnnxRuntimeModel, export_float_onnx, export_onnx
from dfqvit.presets import quant_config
from dfqvit.synthesis import SynthesisOptions, get_method


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--bits", default="8/8,4/8,4/4")
    p.add_argument("--preset", default="basic")
    a = p.parse_args()
    loaded = load("imagenet/vit_tiny_patch16_224.json")
    x, _ = eval_set(loaded, "imagenet/sample")
    x = x[:a.images]
    calib, _ = calibration_images(loaded, get_method("real"), SynthesisOptions(num_images=32, batch_size=32,
                                                                               iterations=500), "imagenet/calib")
    tmp = Path(tempfile.mkdtemp())
    fp = export_float_onnx(loaded.model, tuple(loaded.data_config["input_size"]), tmp / "fp.onnx")
    out = {"model": "imagenet/vit_tiny_patch16_224.json", "preset": a.preset, "images": a.images,
           "machine": machine(), "fp32_bytes": fp.stat().st_size, "cells": {}}
    for bits in a.bits.split(","):
        w, act = (int(v) for v in bits.split("/"))
        q, _ = api.quantize(loaded, calib, quant_config(a.preset, w_bits=w, a_bits=act), progress=False)
        with torch.no_grad():
            ref = torch.cat([q(x[i:i + 50]) for i in range(0, len(x), 50)])
        cell = {"packed_mb": q.weight_bits_total() / 8 / 1e6}
        for tag, int4 in (("uint4", True), ("uint8", False)):
            info = export_onnx(q, loaded, tmp / f"{tag}.onnx", int4=int4)
            ort = OnnxRuntimeModel(tmp / f"{tag}.onnx")
            got = torch.cat([ort(x[i:i + 50]) for i in range(0, len(x), 50)])
            cell[tag] = {"bytes": info["bytes"], "vs_fp32": info["bytes"] / out["fp32_bytes"], "opset": info["opset"],
                         "int4_weights": info["int4_weights"],
                         "agreement_with_pytorch": 100.0 * (got.argmax(1) == ref.argmax(1)).float().mean().item()}
        out["cells"][f"W{w}A{act}"] = cell
        print(f"W{w}A{act}", json.dumps(cell), flush=True)
    (RESULTS / "onnx_size_imagenet.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
