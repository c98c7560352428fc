"""Exported graphs run by a runtime with integer kernels, callable like a torch module by dfqvit's
evaluation: ONNX Runtime (`onnx_export.OnnxRuntimeModel`) or OpenVINO (CPU plugin), on the same
verified QDQ file. OpenVINO is an optional extra: `pip install -e ".[openvino]"`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ConfigError
from .onnx_export import ExportedModel

RUNTIMES = ("onnxruntime", "openvino")


class OpenVinoModel(ExportedModel):
    """An ONNX file compiled by OpenVINO for its CPU plugin (which fuses the QDQ pairs into its own
    low-precision kernels). The file is verified as for ONNX Runtime (checksum, metadata)."""

    def __init__(self, path: str | Path, threads: int | None = None, verify: bool = True) -> None:
        from .onnx_export import verify_onnx

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"ONNX model not found: {path}")
        try:
            import openvino as ov
        except ImportError:
            raise ConfigError("--runtime openvino needs OpenVINO: pip install -e \".[openvino]\"") from None
        self.meta: dict[str, Any] = verify_onnx(path) if verify else {}
        # f32 for what is not integer: on CPUs with bf16 units the plugin's default is bf16 (logits ~5 % off)
        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        try:
            self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        except Exception as exc:
            raise ConfigError(f"{path} is not a model OpenVINO can compile: {str(exc).splitlines()[0][:200]}") \
                from None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.compiled(x.detach().cpu().numpy().astype(np.float32))[0]
        return torch.from_numpy(np.ascontiguousarray(out))


def open_exported(path: str | Path, runtime: str = "onnxruntime", threads: int | None = None):
    """The exported file at `path` in `runtime` (one of RUNTIMES)."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if runtime == "openvino":
        return OpenVinoModel(path, threads)
    from .onnx_export import OnnxRuntimeModel

    return OnnxRuntimeModel(path, threads=threads)
