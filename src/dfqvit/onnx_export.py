"""Export a quantized model to ONNX in QDQ form, and run ONNX models through ONNX Runtime.

The graph holds, at exactly the points dfqvit quantizes:
- weights as integer initializers (uint8 codes, per output channel scale and zero point)
  feeding `DequantizeLinear`, already transposed for `MatMul` (axis 1), so ONNX Runtime
  can fuse them into integer kernels (8-bit codes as INT8); codes of 4 bits and below are stored
  as UINT4, two a byte, read through a `Cast` to INT8 that the runtime folds at load, so they
  reach the same int8 kernels; such a graph is converted to opset 21 (the first with 4-bit
  types; `int4=False` keeps them one per byte at opset 17);
- activations (Linear inputs, q·kᵀ and attn·v inputs) as `QuantizeLinear → DequantizeLinear`
  pairs, per tensor, uint8; narrower activations get a `Clip` to their b-bit range first,
  which makes the uint8 pair round exactly as the b-bit quantizer does;
- the softmax quantizer, which has no QDQ form: `softmax="emulate"` writes the log2 / log√2
  rounding with Log, Round, Clip, Pow and Where (same arithmetic), `softmax="uint8"` a plain
  8-bit uniform QDQ pair (not what was calibrated: its accuracy is reported separately);
- twin-uniform post-GELU values (`gelu="split"`) as two uint8 QDQ pairs, one per sign, each with its
  own integer fc2 matmul (pos·W − neg·W: exact, but twice fc2's work); `gelu="uniform"` one uniform grid of
  the same bits over the twin's range instead, one QDQ pair and one fc2 matmul (not what was
  calibrated: its accuracy is reported separately); the adaptive-log one's positive side as Log,
  Round, Clip, Pow and Where (or, with `gelu="uniform"`, the same uniform grid);
- ACM corrections as constant `Add`s; LayerNorm, GELU and residuals in float.
The batch dimension is dynamic.
"""
from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import ConfigError
from .quant.modules import QuantConv2d, QuantLinear, _QuantWeighted
from .quant.quantizers import EPS, AdaptiveLogTwinQuantizer, LogQuantizer, TwinUniformQuantizer, UniformQuantizer

OPSET = 17
SOFTMAX_MODES = ("emulate", "uint8")
GELU_MODES = ("split", "uniform")


def _qdq(x: torch.Tensor, scale: float, zero_point: int, bits: int) -> torch.Tensor:
    """A b-bit uniform quantizer as Clip (b < 8) + uint8 QuantizeLinear/DequantizeLinear."""
    if bits < 8:
        x = torch.clamp(x, -zero_point * scale, (2**bits - 1 - zero_point) * scale)
    return torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255)


class _ExportUniform(nn.Module):
    def __init__(self, q: UniformQuantizer) -> None:
        super().__init__()
        self.scale, self.zero_point, self.bits = float(q.scale.clamp(min=EPS)), int(q.zero_point), q.bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _qdq(x, self.scale, self.zero_point, self.bits)


class _ExportTwin(nn.Module):
    def __init__(self, q: TwinUniformQuantizer) -> None:
        super().__init__()
        self.pos, self.neg, self.n = float(q.pos_scale), float(q.neg_scale), q.half_levels

    def halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The positive part on its grid and the magnitude of the negative part on its grid: at most one
        of the two is non-zero per element (each grid holds 0 exactly)."""
        pos = torch.fake_quantize_per_tensor_affine(torch.clamp(x, 0.0, (self.n - 1) * self.pos), self.pos, 0, 0, 255)
        neg = torch.fake_quantize_per_tensor_affine(torch.clamp(-x, 0.0, self.n * self.neg), self.neg, 0, 0, 255)
        return pos, neg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos, neg = self.halves(x)
        return torch.where(x >= 0, pos, -neg)

    def split_matmul(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Q(x)·W as pos·W − neg·W: the same product, as two uint8 QDQ matmuls that ONNX Runtime runs
        as integer kernels (the Where-merged form has no single QDQ input and stays float)."""
        pos, neg = self.halves(x)
        return torch.matmul(pos, w) - torch.matmul(neg, w)


class _ExportTwinAsUniform(nn.Module):
    """A twin (or adaptive-log twin) post-GELU quantizer replaced at export by one b-bit uniform grid over
    its range [-n·Δ-, (n-1)·Δ+]: one QDQ pair and one integer fc2 matmul. Twice the codes of the twin's
    positive half, a few codes for GELU's negative tail instead of 2^(b-1)."""

    def __init__(self, q: TwinUniformQuantizer) -> None:
        super().__init__()
        n, self.bits = q.half_levels, q.bits
        lo, hi = -n * float(q.neg_scale), (n - 1) * float(q.pos_scale)
        self.scale = max((hi - lo) / (2**self.bits - 1), EPS)
        self.zero_point = min(2**self.bits - 1, max(0, round(-lo / self.scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _qdq(x, self.scale, self.zero_point, self.bits)


class _ExportAdaLogTwin(nn.Module):
    """AdaptiveLogTwinQuantizer in standard ops: Log, Round, Clip, Pow, Where for the positive side
    (the same arithmetic), the negative tail as the twin quantizer's uint8 QDQ pair."""

    def __init__(self, q: AdaptiveLogTwinQuantizer) -> None:
        super().__init__()
        self.top, self.base = float(q.top), float(q.log_base)
        self.neg, self.n = float(q.neg_scale), q.half_levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = torch.clamp(torch.round(torch.log(torch.clamp(x, min=0.0) / self.top) * (-1.0 / math.log(self.base))),
                            min=0.0)
        value = self.top * torch.pow(torch.full_like(codes, self.base), -torch.clamp(codes, max=self.n - 1.0))
        pos = torch.where(codes > self.n - 2, torch.zeros_like(value), value)
        neg = torch.fake_quantize_per_tensor_affine(torch.clamp(-x, 0.0, self.n * self.neg), self.neg, 0, 0, 255)
        return torch.where(x >= 0, pos, -neg)


class _ExportLog(nn.Module):
    """The same rounding as LogQuantizer, in standard ONNX ops (mode 'emulate'), or a uint8 QDQ pair."""

    def __init__(self, q: LogQuantizer, mode: str) -> None:
        super().__init__()
        self.scale, self.k, self.top, self.mode = float(q.scale), q.steps_per_octave, 2**q.bits - 1, mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "uint8":
            return torch.fake_quantize_per_tensor_affine(x, self.scale / 255.0, 0, 0, 255)
        codes = torch.clamp(torch.round(torch.log2(torch.clamp(x / self.scale, min=1e-30)) * -self.k), 0.0, self.top)
        value = self.scale * torch.pow(2.0, -codes / self.k)
        return torch.where(codes >= self.top, torch.zeros_like(value), value)


class _ExportLinear(nn.Module):
    """Input QDQ, then MatMul with DequantizeLinear(uint8 codes of Wᵀ, axis 1), then bias."""

    def __init__(self, layer: QuantLinear, input_quantizer: nn.Module) -> None:
        super().__init__()
        wq = layer.weight_quantizer
        self.input_quantizer = input_quantizer
        codes = wq.integer(layer.inner.weight.detach())  # (out, in)
        scale = wq.scale.detach().reshape(-1).clamp(min=EPS)
        zp = wq.zero_point.reshape(-1)
        self.register_buffer("weight_t", ((codes - zp[:, None]) * scale[:, None]).t().contiguous())
        self.register_buffer("w_scale", scale.clone())
        self.register_buffer("w_zero_point", zp.to(torch.int32))
        self.bias = None if layer.inner.bias is None else nn.Parameter(layer.inner.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.fake_quantize_per_channel_affine(self.weight_t, self.w_scale, self.w_zero_point, 1, 0, 255)
        if isinstance(self.input_quantizer, _ExportTwin):
            y = self.input_quantizer.split_matmul(x, w)
        else:
            y = torch.matmul(self.input_quantizer(x), w)
        return y if self.bias is None else y + self.bias


class _ExportConv(nn.Module):
    def __init__(self, layer: QuantConv2d, input_quantizer: nn.Module) -> None:
        super().__init__()
        self.input_quantizer = input_quantizer
        self.conv = layer.inner
        wq = layer.weight_quantizer
        self.register_buffer("weight_q", layer.quantized_weight().detach().clone())
        self.register_buffer("w_scale", wq.scale.detach().reshape(-1).clamp(min=EPS).clone())
        self.register_buffer("w_zero_point", wq.zero_point.reshape(-1).to(torch.int32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = torch.fake_quantize_per_channel_affine(self.weight_q, self.w_scale, self.w_zero_point, 0, 0, 255)
        c = self.conv
        return F.conv2d(self.input_quantizer(x), w, c.bias, c.stride, c.padding, c.dilation, c.groups)


def _export_quantizer(q: nn.Module, softmax: str, gelu: str = "split") -> nn.Module:
    if isinstance(q, UniformQuantizer):
        if q.channel_axis is not None:
            raise ConfigError("per-channel activation quantizers have no per-tensor QDQ form")
        return _ExportUniform(q)
    if isinstance(q, TwinUniformQuantizer) and gelu == "uniform":
        return _ExportTwinAsUniform(q)
    if isinstance(q, AdaptiveLogTwinQuantizer):
        return _ExportAdaLogTwin(q)
    if isinstance(q, TwinUniformQuantizer):
        return _ExportTwin(q)
    if isinstance(q, LogQuantizer):
        return _ExportLog(q, softmax)
    return q


@contextlib.contextmanager
def export_view(qmodel: nn.Module, softmax: str = "emulate", gelu: str = "split") -> Iterator[nn.Module]:
    """Temporarily swap every quantized layer and quantizer of `qmodel` for its ONNX form."""
    if softmax not in SOFTMAX_MODES:
        raise ConfigError(f"softmax export must be one of {', '.join(SOFTMAX_MODES)}, got {softmax!r}")
    if gelu not in GELU_MODES:
        raise ConfigError(f"gelu export must be one of {', '.join(GELU_MODES)}, got {gelu!r}")
    swaps: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in list(qmodel.modules()):
        if isinstance(parent, _QuantWeighted):  # replaced whole, with its quantizers
            continue
        for name, child in list(parent.named_children()):
            if isinstance(child, _QuantWeighted):
                iq = _export_quantizer(child.input_quantizer, softmax, gelu)
                new = _ExportLinear(child, iq) if isinstance(child, QuantLinear) else _ExportConv(child, iq)
            elif isinstance(child, (UniformQuantizer, LogQuantizer, TwinUniformQuantizer)):
                new = _export_quantizer(child, softmax, gelu)
            else:
                continue
            swaps.append((parent, name, child))
            setattr(parent, name, new)
    try:
        yield qmodel
    finally:
        for parent, name, child in reversed(swaps):
            setattr(parent, name, child)


def _fold_weight_quantize(model) -> int:
    """QuantizeLinear on a constant weight → the integer initializer itself (what the runtime stores)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    consts = {n.output[0]: n for n in model.graph.node if n.op_type == "Constant"}

    def value(name):
        if name in inits:
            return numpy_helper.to_array(inits[name])
        if name in consts:
            return numpy_helper.to_array(consts[name].attribute[0].t)
        return None

    folded, remove = 0, []
    for node in list(model.graph.node):
        if node.op_type != "QuantizeLinear":
            continue
        x, s = value(node.input[0]), value(node.input[1])
        z = value(node.input[2]) if len(node.input) > 2 else None
        if x is None or s is None or z is None:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * x.ndim
        if s.ndim:
            shape[axis] = -1
        q = np.clip(np.rint(x / s.reshape(shape)) + z.reshape(shape).astype(np.float64), 0, 255).astype(z.dtype)
        model.graph.initializer.append(numpy_helper.from_array(q, node.output[0]))
        remove.append(node)
        folded += 1
    for node in remove:
        model.graph.node.remove(node)
    used = {i for n in model.graph.node for i in n.input}
    for name in list(inits):
        if name not in used:
            model.graph.initializer.remove(inits[name])
    return folded


def export_onnx(qmodel: nn.Module, loaded, path: str | Path, softmax: str = "emulate",
                opset: int = OPSET, int4: bool = True, gelu: str = "split") -> dict[str, Any]:
    """Write `qmodel` (a calibrated QuantizedViT of `loaded`) as an ONNX QDQ graph; return what it holds.

    With `int4` (the default), weights of 4 bits or fewer are stored as UINT4 initializers, two codes
    a byte, and the graph is converted to opset 21 (the first whose DequantizeLinear takes 4-bit
    types); without it, or when every weight is wider, the graph stays at `opset`.

    The file's metadata ("dfqvit") names the model, its data config and classes, so
    `dfqvit evaluate --onnx` needs nothing else.
    """
    import json

    import onnx

    qmodel = qmodel.eval().cpu()
    input_size = tuple(loaded.data_config["input_size"])
    dummy = torch.zeros(2, *input_size)
    buf = io.BytesIO()
    import warnings

    with export_view(qmodel, softmax, gelu) as m, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes about Python-side constants (shapes, ACM presence)
        torch.onnx.export(m, (dummy,), buf, dynamo=False, opset_version=opset, input_names=["images"],
                          output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
                          do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    folded = _fold_weight_quantize(model)
    packed = 0
    if int4:
        model, packed = _store_low_bit_weights(model, qmodel)
    _signed_weight_codes(model)
    del model.graph.value_info[:]  # shape annotations the runtime infers again: ~20 % of a small model's file
    meta = {"model": loaded.name, "arch_kwargs": loaded.arch_kwargs, "data_config": loaded.data_config,
            "class_names": loaded.class_names, "num_classes": loaded.num_classes, "softmax": softmax, "gelu": gelu,
            "quant_config": qmodel.config.to_dict()}
    meta_json = json.dumps(meta, default=list)
    onnx.helper.set_model_props(model, {"dfqvit": meta_json, CHECKSUM_PROP: onnx_checksum(model.graph, meta_json)})
    onnx.checker.check_model(model)
    from .outputs import write_file_atomically

    write_file_atomically(Path(path), lambda tmp: onnx.save(model, str(tmp)))
    ops: dict[str, int] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {"path": str(path), "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
            "softmax": softmax, "gelu": gelu, "integer_weights": folded, "int4_weights": packed, "ops": ops,
            "bytes": Path(path).stat().st_size}


INT4_OPSET = 21


def _uint4_tensor(name: str, codes: np.ndarray):
    """A UINT4 initializer: codes 0..15, two a byte, the first in the low nibble (ONNX's packing)."""
    from onnx import TensorProto, helper

    flat = codes.astype(np.uint8).reshape(-1)
    if flat.size % 2:
        flat = np.append(flat, np.uint8(0))
    return helper.make_tensor(name, TensorProto.UINT4, codes.shape, (flat[0::2] | (flat[1::2] << 4)).tobytes(),
                              raw=True)


def _store_low_bit_weights(model, qmodel: nn.Module):
    """Weight codes of ≤ 4 bits (found by their values: each layer's codes, as the export laid them
    out) → UINT4 initializers, two codes a byte, each read through `Cast(to=INT8)` into its
    DequantizeLinear (zero points INT8, one per channel), in a graph converted to opset 21.

    Why the Cast: ONNX Runtime (1.32) has no integer kernel for a UINT4 DequantizeLinear feeding a
    MatMul whose input is itself quantized; it dequantizes such weights to float on every run
    (ImageNet ViT-Tiny W4A8: 61 float MatMuls, slower than FP32). A Cast of a constant is folded
    when the session loads, so the runtime sees INT8 codes c (0..15) with zero point z, the same
    values (c − z)·s, and fuses them into its u8×s8 kernels like 8-bit weights: the file holds 4 bits
    a weight, the runtime's memory 8. Returns (model, number of weights stored at 4 bits)."""
    import onnx
    from onnx import helper, numpy_helper

    wanted = []
    for layer in qmodel.weighted_layers():
        if layer.weight_quantizer.bits <= 4:
            codes = layer.weight_quantizer.integer(layer.inner.weight.detach()).to(torch.uint8).cpu().numpy()
            wanted.append(codes.T if isinstance(layer, QuantLinear) else codes)
    if not wanted:
        return model, 0
    model = onnx.version_converter.convert_version(model, INT4_OPSET)
    inits = {i.name: i for i in model.graph.initializer}
    consumers = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    packed: dict[str, str] = {}  # UINT4 initializer → the Cast's output
    for node in consumers:
        name = node.input[0]
        if name not in packed:
            weight = inits[name]
            if weight.data_type != onnx.TensorProto.UINT8:
                continue
            codes = numpy_helper.to_array(weight)
            if not any(c.shape == codes.shape and np.array_equal(c, codes) for c in wanted):
                continue
            weight.CopyFrom(_uint4_tensor(name, codes))
            packed[name] = f"{name}_int8"
            # it reads only an initializer, so the head of the graph keeps the nodes topologically sorted
            model.graph.node.insert(0, helper.make_node("Cast", [name], [packed[name]], to=onnx.TensorProto.INT8,
                                                        name=f"{name}_cast"))
        node.input[0] = packed[name]
        if len(node.input) > 2 and node.input[2] in inits and inits[node.input[2]].data_type == onnx.TensorProto.UINT8:
            zp = inits[node.input[2]]
            zp.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(zp).astype(np.int8), zp.name))
    return model, len(packed)


def _signed_weight_codes(model) -> int:
    """8-bit weight codes c ∈ 0..255 with zero point z → INT8 codes c − 128 with zero point z − 128:
    the same values (c − z)·s, in the type of ONNX Runtime's fast integer GEMM (u8 activations ×
    s8 weights, VNNI). Measured on the ImageNet ViT-Tiny, W8A8, one thread: 31 images/s at batch 1
    against 19.5 with UINT8 weights and 20.4 for FP32. Returns the weights converted."""
    import onnx
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    done: set[str] = set()
    converted = 0
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits or node.input[0] in done:
            continue
        names = [node.input[0]] + ([node.input[2]] if len(node.input) > 2 and node.input[2] in inits else [])
        if any(inits[n].data_type != onnx.TensorProto.UINT8 for n in names if n not in done):
            continue
        users = [n for n in model.graph.node if any(i in names for i in n.input)]
        if any(u.op_type != "DequantizeLinear" for u in users):
            continue  # an initializer something else also reads keeps its type
        for n in names:
            if n in done:
                continue
            shifted = (numpy_helper.to_array(inits[n]).astype(np.int16) - 128).astype(np.int8)
            inits[n].CopyFrom(numpy_helper.from_array(shifted, n))
            done.add(n)
        converted += 1
    return converted


CHECKSUM_PROP = "dfqvit_sha256"  # over the serialized graph and the dfqvit metadata
META_FIELDS = ("model", "data_config", "num_classes")


def onnx_checksum(graph: Any, meta_json: str) -> str:
    import hashlib

    return hashlib.sha256(graph.SerializeToString(deterministic=True) + b"|" + meta_json.encode()).hexdigest()


def verify_onnx(path: Path) -> dict[str, Any]:
    """The dfqvit metadata of an exported file, after checking it parses and its checksum holds
    (files exported before the checksum existed have none: they are refused as unverifiable)."""
    import json

    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ConfigError(f"{path} is not an ONNX model: {str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}") \
            from None
    props = {p.key: p.value for p in model.metadata_props}
    if "dfqvit" not in props:
        raise ConfigError(f"{path} was not written by dfqvit (no dfqvit metadata): its input size, normalisation "
                          f"and classes are unknown")
    try:
        meta = json.loads(props["dfqvit"])
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or any(k not in meta for k in META_FIELDS) \
            or not isinstance(meta.get("data_config"), dict) or "input_size" not in meta["data_config"]:
        raise ConfigError(f"{path}: its dfqvit metadata is not valid (needs {', '.join(META_FIELDS)}); "
                          f"export the model again")
    if CHECKSUM_PROP not in props:
        raise ConfigError(f"{path} carries no dfqvit checksum (exported by an older dfqvit); export it again")
    if onnx_checksum(model.graph, props["dfqvit"]) != props[CHECKSUM_PROP]:
        raise ConfigError(f"{path}: checksum mismatch, the file is corrupt or was edited after it was exported")
    return meta


def describe_exported(meta: dict[str, Any]):
    """A LoadedModel of an exported file (for dfqvit's data loading), from its dfqvit metadata."""
    from .models.loading import LoadedModel

    if not meta:
        raise ConfigError("this ONNX file was not written by dfqvit (no dfqvit metadata): its input size, "
                          "normalisation and classes are unknown")
    head = nn.Module()
    head.num_classes = meta["num_classes"]
    cfg = {k: tuple(v) if isinstance(v, list) else v for k, v in meta["data_config"].items()}
    return LoadedModel(head, meta["model"], cfg, meta.get("arch_kwargs") or {}, meta.get("class_names"))


class ExportedModel:
    """What dfqvit's evaluation asks of an exported file in a runtime: a callable on image batches
    that describes its model (from the file's dfqvit metadata, `self.meta`) and ignores eval()/to()."""

    meta: dict[str, Any]

    def loaded_model(self):
        return describe_exported(self.meta)

    def eval(self) -> "ExportedModel":
        return self

    def to(self, _device) -> "ExportedModel":
        return self


class OnnxRuntimeModel(ExportedModel):
    """An ONNX file run by ONNX Runtime (CPU), callable like a torch module by dfqvit's evaluation."""

    def __init__(self, path: str | Path, optimize: bool = True, threads: int | None = None,
                 verify: bool = True) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"ONNX model not found: {path}")
        verified = verify_onnx(path) if verify else None
        opts = ort.SessionOptions()
        opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                         else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ConfigError(f"{path} is not an ONNX model ONNX Runtime can load: {str(exc).splitlines()[0][:200]}") \
                from None
        self.input_name = self.session.get_inputs()[0].name
        import json

        if verified is not None:
            self.meta = verified
        else:  # a file dfqvit did not write (the float baselines of the benchmarks)
            props = self.session.get_modelmeta().custom_metadata_map
            try:
                self.meta = json.loads(props["dfqvit"]) if "dfqvit" in props else {}
            except ValueError:
                self.meta = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        out = self.session.run(None, {self.input_name: x.detach().cpu().numpy().astype(np.float32)})[0]
        return torch.from_numpy(out)


def export_float_onnx(model: nn.Module, input_size: tuple[int, int, int], path: str | Path,
                      opset: int = OPSET) -> Path:
    """The float model as ONNX (attention in plain ops), the baseline of the runtime comparison."""
    import warnings

    from .models import make_observable

    m = make_observable(__import__("copy").deepcopy(model)).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (torch.zeros(2, *input_size),), str(path), dynamo=False, opset_version=opset,
                          input_names=["images"], output_names=["logits"],
                          dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})
    return Path(path)


def optimized_ops(path: str | Path) -> dict[str, int]:
    """The operator counts of the graph ONNX Runtime actually runs after its own fusions."""
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # not the warning that an optimized graph is machine-specific: it is read here
        opts.optimized_model_filepath = str(Path(d) / "opt.onnx")
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        model = onnx.load(opts.optimized_model_filepath)
    ops: dict[str, int] = {}
    for n in model.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return ops


def count_quantized_points(qmodel: nn.Module) -> dict[str, int]:
    """How many QDQ pairs the export must contain: one per per-tensor uniform activation quantizer,
    two per twin-uniform one, one per weighted layer's weight (DequantizeLinear only)."""
    weights = sum(1 for m in qmodel.modules() if isinstance(m, _QuantWeighted))
    weight_q = {id(m.weight_quantizer) for m in qmodel.modules() if isinstance(m, _QuantWeighted)}
    acts = [m for m in qmodel.modules() if isinstance(m, (UniformQuantizer, TwinUniformQuantizer))
            and id(m) not in weight_q]
    pairs = sum(2 if isinstance(m, TwinUniformQuantizer) and not isinstance(m, AdaptiveLogTwinQuantizer) else 1
                for m in acts)  # the adaptive-log one: a QDQ pair for its negatives, Log/Pow for the rest
    logs = sum(1 for m in qmodel.modules() if isinstance(m, LogQuantizer))
    return {"activation_qdq": pairs, "weight_dq": weights, "softmax": logs}
