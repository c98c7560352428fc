"""What an exported graph gives on this machine: its size against the FP32 graph of the same
architecture, which kernels ONNX Runtime runs after its own fusions (integer or float), and its
speed at batch 1 and 64 (`dfqvit export --benchmark`).

ORT turns a DequantizeLinear → MatMul ← DequantizeLinear(QuantizeLinear(x)) pattern into an
integer kernel (QLinearMatMul, MatMulIntegerToFloat, QGemm, ...) only where its fusion rules
match; a QDQ graph that runs its MatMuls in float is as slow as FP32 plus the QDQ work. The
report counts both, so a user sees which Linears got an integer kernel.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch.nn as nn

# ORT CPU operators that compute in integer (com.microsoft and ai.onnx) besides the QLinear* family
# and the *Integer* ones (MatMulInteger, ConvInteger, MatMulIntegerToFloat)
INTEGER_KERNELS = ("QGemm", "DynamicQuantizeMatMul", "MatMulNBits", "QAttention")
FLOAT_KERNELS = ("MatMul", "Gemm", "Conv", "FusedMatMul", "FusedGemm", "FusedConv")


def is_integer_kernel(op: str) -> bool:
    return op.startswith("QLinear") or "Integer" in op or op in INTEGER_KERNELS


def runtime_kernels(path: str | Path) -> dict[str, dict[str, int]]:
    """{"integer": {op: n}, "float": {op: n}} of the compute kernels in ORT's optimized graph."""
    from .onnx_export import optimized_ops

    ops = optimized_ops(path)
    return {"integer": {k: v for k, v in ops.items() if is_integer_kernel(k)},
            "float": {k: v for k, v in ops.items() if k in FLOAT_KERNELS}}


def images_per_s(path: str | Path, input_size: tuple[int, ...], batch: int, threads: int, seconds: float) -> float:
    """Throughput of ORT on `path` (random inputs: speed does not depend on the pixel values)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal((batch, *input_size)).astype(np.float32)
    session.run(None, {name: x})  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or n < 3:
        session.run(None, {name: x})
        n += 1
    return n * batch / (time.perf_counter() - start)


def export_report(path: str | Path, float_model: nn.Module, input_size: tuple[int, ...], threads: int = 1,
                  seconds: float = 3.0, benchmark: bool = True) -> dict[str, Any]:
    """Size, kernels and (with `benchmark`) speed of the exported `path` against the FP32 export of
    `float_model` (any weights of the same architecture: size and speed do not depend on them)."""
    from .onnx_export import export_float_onnx

    path = Path(path)
    with tempfile.TemporaryDirectory() as d:
        fp = export_float_onnx(float_model, tuple(input_size), Path(d) / "fp32.onnx")
        report: dict[str, Any] = {"file": str(path), "bytes": path.stat().st_size, "fp32_bytes": fp.stat().st_size}
        report["size_vs_fp32"] = report["bytes"] / report["fp32_bytes"]
        report["kernels"] = runtime_kernels(path)
        report["fp32_kernels"] = runtime_kernels(fp)
        if benchmark:
            speed: dict[str, Any] = {"threads": threads, "runtime": "onnxruntime (CPU, ORT_ENABLE_ALL)"}
            for name, graph in (("exported", path), ("fp32", fp)):
                b1 = images_per_s(graph, input_size, 1, threads, seconds)
                speed[name] = {"batch1_ms_per_image": 1000.0 / b1,
                               "batch64_images_per_s": images_per_s(graph, input_size, 64, threads, seconds)}
            speed["speedup_batch1"] = speed["fp32"]["batch1_ms_per_image"] / speed["exported"]["batch1_ms_per_image"]
            speed["speedup_batch64"] = speed["exported"]["batch64_images_per_s"] / speed["fp32"]["batch64_images_per_s"]
            report["speed"] = speed
    return report


def summary_line(report: dict[str, Any]) -> str:
    k = report["kernels"]
    integer = ", ".join(f"{n} {op}" for op, n in sorted(k["integer"].items())) or "none"
    floats = ", ".join(f"{n} {op}" for op, n in sorted(k["float"].items())) or "none"
    line = (f"{report['bytes'] / 1e6:.2f} MB = {report['size_vs_fp32']:.2f}× the FP32 graph; ONNX Runtime runs in "
            f"integer: {integer}; in float: {floats}")
    if "speed" in report:
        s = report["speed"]
        line += (f"; batch 1: {s['exported']['batch1_ms_per_image']:.1f} ms/image ({s['speedup_batch1']:.2f}× FP32), "
                 f"batch 64: {s['exported']['batch64_images_per_s']:.0f} images/s ({s['speedup_batch64']:.2f}× FP32), "
                 f"{s['threads']} thread(s)")
    return line


def faster_forms(qmodel: Any, softmax: str, gelu: str) -> list[str]:
    """The export flags that would turn float work of this graph into integer kernels, with their price."""
    from .quant.quantizers import AdaptiveLogTwinQuantizer, LogQuantizer, TwinUniformQuantizer

    modules = list(qmodel.modules())
    hints = []
    if softmax == "emulate" and any(isinstance(m, LogQuantizer) for m in modules):
        hints.append("--softmax uint8: the log softmax grid is float element-wise work on every attention map; "
                     "one uint8 QDQ pair makes attn·v an integer kernel (not the calibrated grid)")
    if gelu == "split" and any(isinstance(m, AdaptiveLogTwinQuantizer) for m in modules):
        hints.append("--gelu uniform: the adaptive-log post-GELU grid keeps fc2 a float matmul; one uniform grid "
                     "over its range makes it an integer one (not the calibrated grid)")
    elif gelu == "split" and any(isinstance(m, TwinUniformQuantizer) for m in modules):
        hints.append("--gelu uniform: the twin post-GELU grid costs two fc2 matmuls per block; one uniform grid "
                     "over its range costs one (not the calibrated grid)")
    return hints
