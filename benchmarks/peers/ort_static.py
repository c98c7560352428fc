"""ONNX Runtime's own post-training quantization (`quantize_static`) of the FP32 export: the deploy anchor.

    python benchmarks/peers/ort_static.py --threads 1

The ImageNet ViT-Tiny's float ONNX export (dfqvit.onnx_export.export_float_onnx, the graph the
runtime table times as "ONNX Runtime FP32") goes through ORT's `quant_pre_process` and
`quantize_static`: QDQ format, unsigned 8-bit activations, signed 8-bit per-channel weights,
calibrated on 32 real `calib/` images (dfqvit's `real_images`, seed 0: the images dfqvit's real rows
use), MinMax or Percentile (99.99, 99.999) ranges, with every default operator type quantized or only
MatMul/Gemm. What it quantizes: the Linears (MatMul/Gemm) — with all op types also the patch
conv, the attention matmuls, Add, Softmax etc.; the head is a Gemm, so it is 8-bit too.
Each cell: top-1 on the 1,000 `sample/` images, agreement and KL against the PyTorch float
model, images/s at batch 1 and 64 against ORT FP32 on the same threads.
Writes benchmarks/results/peers_ort_static.json after every cell.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import RESULTS, Results, eval_set, load, machine, shared  # noqa: E402

CELLS = {  # name → (op types to quantize or None for ORT's defaults, calibration method, percentile)
    "MatMul/Gemm, Percentile 99.99": (["MatMul", "Gemm"], "Percentile", 99.99),
    "MatMul/Gemm, Percentile 99.999": (["MatMul", "Gemm"], "Percentile", 99.999),
    "MatMul/Gemm, MinMax": (["MatMul", "Gemm"], "MinMax", None),
    "all op types, Percentile 99.99": (None, "Percentile", 99.99),
    "all op types, MinMax": (None, "MinMax", None),
}


def quantize_static_graph(pre: Path, out: Path, calib: torch.Tensor, op_types: list[str] | None, method: str,
                          percentile: float | None) -> None:
    """ORT's quantize_static of a `quant_pre_process`ed float graph: QDQ, U8 activations, S8 per-channel weights."""
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"images": calib[i:i + 1].numpy()} for i in range(len(calib))])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=op_types,
                    calibrate_method=getattr(CalibrationMethod, method),
                    extra_options={"CalibPercentile": percentile} if percentile else {})


def images_per_s(run, x: np.ndarray, batch: int, seconds: float) -> float:
    run(x[:batch])
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        i = (n * batch) % (len(x) - batch + 1)
        run(x[i:i + batch])
        n += 1
    return n * batch / (time.perf_counter() - start)


def session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: x})[0]


def logits(run, x: np.ndarray, batch: int = 50) -> torch.Tensor:
    return torch.from_numpy(np.concatenate([run(x[i:i + batch]) for i in range(0, len(x), batch)]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cells", default=";".join(CELLS), help="semicolon list of: " + "; ".join(CELLS))
    p.add_argument("--speed-seconds", type=float, default=5.0)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    import onnxruntime
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from dfqvit import api
    from dfqvit.deploy import is_integer_kernel
    from dfqvit.onnx_export import export_float_onnx, optimized_ops

    loaded = load("imagenet/vit_tiny_patch16_224.json")
    x, y = eval_set(loaded, "imagenet/sample")
    calib, _ = api.real_images(loaded, shared("imagenet/calib"), 32, seed=0)
    tmp = Path(tempfile.mkdtemp())
    fp_path = export_float_onnx(loaded.model, tuple(loaded.data_config["input_size"]), tmp / "fp.onnx")
    pre = tmp / "fp-pre.onnx"
    quant_pre_process(str(fp_path), str(pre))
    with torch.no_grad():
        fp_logits = torch.cat([loaded.model(x[i:i + 100]) for i in range(0, len(x), 100)])
    xn = x.numpy()
    results = Results(RESULTS / "peers_ort_static.json", {
        "peer": f"ONNX Runtime {onnxruntime.__version__} quantize_static (QDQ, U8 activations, S8 per-channel weights)",
        "model": "imagenet/vit_tiny_patch16_224.json", "eval": "imagenet/sample", "calibration": "32 calib/ images, seed 0",
        "threads": a.threads, "machine": machine(), "fp_top1": (fp_logits.argmax(1) == y).float().mean().item() * 100})
    fp_run = session(fp_path, a.threads)
    if not results.has("ORT FP32"):
        got = logits(fp_run, xn)
        results.put("ORT FP32", {"top1": (got.argmax(1) == y).float().mean().item() * 100,
                                 "agreement": (got.argmax(1) == fp_logits.argmax(1)).float().mean().item() * 100,
                                 "bytes": fp_path.stat().st_size,
                                 "batch1_images_per_s": images_per_s(fp_run, xn, 1, a.speed_seconds),
                                 "batch64_images_per_s": images_per_s(fp_run, xn, 64, a.speed_seconds)})
    fp_speed = results.data["cells"]["ORT FP32"]

    for name in [c for c in a.cells.split(";") if c]:
        if results.has(name):
            continue
        op_types, method, percentile = CELLS[name]
        out = tmp / f"q-{len(results.data['cells'])}.onnx"
        t0 = time.perf_counter()
        quantize_static_graph(pre, out, calib, op_types, method, percentile)
        seconds = time.perf_counter() - t0
        run = session(out, a.threads)
        got = logits(run, xn)
        kl = F.kl_div(got.log_softmax(1), fp_logits.log_softmax(1), log_target=True, reduction="batchmean").item()
        b1, b64 = images_per_s(run, xn, 1, a.speed_seconds), images_per_s(run, xn, 64, a.speed_seconds)
        ops = optimized_ops(out)
        cell = {"top1": (got.argmax(1) == y).float().mean().item() * 100,
                "agreement": (got.argmax(1) == fp_logits.argmax(1)).float().mean().item() * 100, "kl": kl,
                "quantize_s": seconds, "bytes": out.stat().st_size, "batch1_images_per_s": b1,
                "batch64_images_per_s": b64, "speedup_batch1": b1 / fp_speed["batch1_images_per_s"],
                "speedup_batch64": b64 / fp_speed["batch64_images_per_s"],
                "integer_ops": {k: v for k, v in ops.items() if is_integer_kernel(k)}}
        results.put(name, cell)
        print(name, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in cell.items()}, flush=True)


if __name__ == "__main__":
    main()
