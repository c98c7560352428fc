"""dfqvit: data-free quantization for Vision Transformers.

Pipeline, one module each: models → synthesis → quant → calibration → correction →
evaluation → export (+ report). `dfqvit.api` holds the few public functions.

The names below are imported on first use, so `import dfqvit` (and the `dfqvit` command's
start, where a Ctrl-C must still end in one line) does not wait for torch and timm.
"""
from __future__ import annotations

import signal as _signal
import sys as _sys


def _interrupted_while_starting(*_: object) -> None:
    """Ctrl-C before the command's own handling is in place (imports of torch, timm): one line, exit 130.
    Installed only when the `dfqvit` command (or `python -m dfqvit`) starts, never for `import dfqvit`."""
    _sys.stderr.write("dfqvit: interrupted while starting; nothing was written\n")
    _sys.stderr.flush()
    import os

    os._exit(130)


_ARGV0 = _sys.argv[0] if getattr(_sys, "argv", None) else ""
_COMMAND = _ARGV0 in ("-m", "dfqvit") or _ARGV0.endswith(("/dfqvit", "\\dfqvit.exe"))
if _COMMAND and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:  # the command, not a library
    try:
        _signal.signal(_signal.SIGINT, _interrupted_while_starting)
    except ValueError:  # imported outside the main thread
        pass

import importlib  # noqa: E402
from typing import Any  # noqa: E402

__version__ = "0.4.0"

_WHERE = {"DistillOptions": "api", "QuantConfig": "api", "SynthesisOptions": "api", "evaluate": "api",
          "load_model": "api", "load_quantized": "api", "quantize": "api", "save_quantized": "api",
          "synthesize": "api", "DfqvitError": "errors", "export_onnx": "onnx_export", "RunOptions": "pipeline",
          "run": "pipeline"}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dfqvit' has no attribute {name!r}")
