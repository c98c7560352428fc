"""dfqvit: data-free quantization for Vision Transformers.

Pipeline, one module each: models → synthesis → quant → calibration → correction →
evaluation → export (+ report). `dfqvit.api` holds the few public functions.
"""
from .api import (DistillOptions, QuantConfig, SynthesisOptions, evaluate, load_model, load_quantized, quantize,
                  save_quantized, synthesize)
from .errors import DfqvitError
from .onnx_export import export_onnx
from .pipeline import RunOptions, run

__all__ = ["DfqvitError", "DistillOptions", "export_onnx", "QuantConfig", "RunOptions", "SynthesisOptions", "evaluate", "load_model",
           "load_quantized", "quantize", "run", "save_quantized", "synthesize"]
__version__ = "0.2.0"
