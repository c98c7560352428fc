"""ONNX QDQ export: a valid graph with QDQ at every quantized point, run by ONNX Runtime like PyTorch."""
import json

import pytest
import timm
import torch

from dfqvit.api import quantize, real_images, save_quantized
from dfqvit.models.loading import LoadedModel
from dfqvit.onnx_export import OnnxRuntimeModel, count_quantized_points, export_onnx, optimized_ops
from dfqvit.quant.config import QuantConfig

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def small_swin():
    torch.manual_seed(0)
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, img_size=64, window_size=4, embed_dim=24,
                             depths=(2, 2), num_heads=(2, 4), num_classes=10).eval()
    return LoadedModel(swin, "custom", {"input_size": (3, 64, 64), "mean": (0.5,) * 3, "std": (0.5,) * 3})


def _parity(qmodel, loaded, x, path):
    info = export_onnx(qmodel, loaded, path)
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    ops = info["ops"]
    expected = count_quantized_points(qmodel)
    assert ops["QuantizeLinear"] == expected["activation_qdq"]  # one pair per activation point (two per twin)
    assert ops["DequantizeLinear"] == expected["activation_qdq"] + expected["weight_dq"]
    assert info["integer_weights"] == expected["weight_dq"]
    ints = [i for i in model.graph.initializer if i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT4)]
    assert len(ints) >= expected["weight_dq"]  # weights are stored as integer codes
    with torch.no_grad():
        ref = qmodel(x)
    out = OnnxRuntimeModel(path)(x)  # batch size differs from the export's: the batch axis is dynamic
    return ref, out


@pytest.mark.parametrize("bits", [(8, 8), (4, 8)])
def test_tiny_default_exports_and_ort_matches_pytorch(tiny, digits_heldout, tmp_path, bits):
    calib = real_images(tiny, None, 32)[0]
    q, _ = quantize(tiny, calib, QuantConfig(w_bits=bits[0], a_bits=bits[1]), acm_every=1, progress=False)
    x = digits_heldout[0][:200]
    ref, out = _parity(q, tiny, x, tmp_path / "t.onnx")
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.99
    assert (out - ref).abs().mean() < 0.01 * ref.abs().mean()


@pytest.mark.parametrize("bits", [(8, 8), (4, 8)])
def test_small_swin_exports_and_ort_matches_pytorch(small_swin, tmp_path, bits):
    gen = torch.Generator().manual_seed(0)
    calib = torch.randn(16, 3, 64, 64, generator=gen)
    q, _ = quantize(small_swin, calib, QuantConfig(w_bits=bits[0], a_bits=bits[1]), acm_every=1, progress=False)
    ref, out = _parity(q, small_swin, torch.randn(5, 3, 64, 64, generator=gen), tmp_path / "s.onnx")
    assert torch.allclose(out, ref, atol=1e-4 * ref.abs().max().item() + 1e-6)


def test_strong_preset_exports_with_twin_and_log_sqrt2(tiny, digits_heldout, tmp_path):
    from dfqvit.presets import quant_config

    calib = real_images(tiny, None, 32)[0]
    q, _ = quantize(tiny, calib, quant_config("strong", w_bits=4, a_bits=4), progress=False)
    ref, out = _parity(q, tiny, digits_heldout[0][:200], tmp_path / "st.onnx")
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.99


def test_cli_export_and_evaluate_onnx(tiny, tmp_path, capsys):
    from dfqvit.cli import main

    calib = real_images(tiny, None, 16)[0]
    q, _ = quantize(tiny, calib, QuantConfig(w_bits=8, a_bits=8), progress=False)
    art = save_quantized(q, tiny, tmp_path / "q.safetensors")
    onnx_path = tmp_path / "m.onnx"
    assert main(["export", "--quantized", str(art), "--out", str(onnx_path)]) == 0
    out = capsys.readouterr().out
    assert "QuantizeLinear" in out and "softmax emulate, gelu split" in out
    assert main(["export", "--quantized", str(art), "--out", str(onnx_path)]) == 2  # exists: refused
    assert "pass --overwrite" in capsys.readouterr().err
    assert main(["evaluate", "--quiet", "--onnx", str(onnx_path), "--quantized", str(art)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["agreement_top1"] >= 99.0 and abs(result["top1"] - result["fp"]["top1"]) <= 1.0


@pytest.mark.parametrize("bits", [(4, 8), (3, 4)])
def test_weights_of_four_bits_or_fewer_are_stored_as_uint4(tiny, digits_heldout, tmp_path, bits):
    """Two codes a byte in an opset-21 graph; the weights' share of the file is within 10 % of the
    artefact's bit-packed size at 4 bits (3-bit codes take 4 bits: ONNX has no 3-bit type)."""
    import math

    from dfqvit.quant.modules import _QuantWeighted

    calib = real_images(tiny, None, 32)[0]
    q, _ = quantize(tiny, calib, QuantConfig(w_bits=bits[0], a_bits=bits[1]), progress=False)
    info = export_onnx(q, tiny, tmp_path / "w.onnx")
    model = onnx.load(str(tmp_path / "w.onnx"))
    onnx.checker.check_model(model)
    low = [m for m in q.modules() if isinstance(m, _QuantWeighted) and m.weight_quantizer.bits <= 4]
    uint4 = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.UINT4]
    assert info["opset"] == 21 and info["int4_weights"] == len(low) == 16
    weights = {tuple(i.dims) for i in uint4 if len(i.dims) == 2}
    assert weights == {tuple(reversed(m.inner.weight.shape)) for m in low}  # Wᵀ, laid out for MatMul
    assert all(len(i.raw_data) == math.ceil(math.prod(i.dims) / 2) for i in uint4)
    stored = sum(len(i.raw_data) or i.ByteSize() for i in model.graph.initializer)
    packed = (q.weight_bits_total() + sum(m.inner.weight.numel() * (4 - bits[0]) for m in low)) / 8  # 4-bit codes
    assert abs(stored - packed) <= 0.10 * packed
    wide = export_onnx(q, tiny, tmp_path / "u8.onnx", int4=False)
    assert wide["opset"] == 17 and wide["int4_weights"] == 0 and info["bytes"] < 0.85 * wide["bytes"]
    # the runtime folds the Cast and runs the 4-bit weights in the same integer kernels as one-byte codes
    kernels = {p: {op: n for op, n in optimized_ops(p).items() if "MatMul" in op or "Gemm" in op}
               for p in (tmp_path / "w.onnx", tmp_path / "u8.onnx")}
    assert kernels[tmp_path / "w.onnx"] == kernels[tmp_path / "u8.onnx"]
    assert kernels[tmp_path / "w.onnx"].get("MatMulIntegerToFloat", 0) >= len(low)
    x = digits_heldout[0][:200]
    with torch.no_grad():
        ref = q(x)
    out = OnnxRuntimeModel(tmp_path / "w.onnx")(x)
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.99
    assert (out - ref).abs().mean() < 0.01 * ref.abs().mean()


@pytest.mark.parametrize("bits", [(8, 8), (4, 8)])
def test_openvino_runs_the_same_graph_as_pytorch(tiny, digits_heldout, tmp_path, capsys, bits):
    pytest.importorskip("openvino", reason="OpenVINO is an optional extra: pip install -e '.[openvino]'")
    from dfqvit.cli import main
    from dfqvit.runtimes import OpenVinoModel

    calib = real_images(tiny, None, 32)[0]
    q, _ = quantize(tiny, calib, QuantConfig(w_bits=bits[0], a_bits=bits[1]), progress=False)
    export_onnx(q, tiny, tmp_path / "m.onnx")
    x = digits_heldout[0][:200]
    with torch.no_grad():
        ref = q(x)
    out = OpenVinoModel(tmp_path / "m.onnx", threads=1)(x)
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.99
    # OpenVINO's CPU plugin re-derives its own low-precision kernels from the QDQ pairs and rounds
    # in another order than fake-quant: measured mean |Δlogit| 4.6-4.8 % of the mean |logit| here
    # (ONNX Runtime: under 1 %), with the same top-1
    assert (out - ref).abs().mean() < 0.08 * ref.abs().mean()
    save_quantized(q, tiny, tmp_path / "q.safetensors")
    assert main(["evaluate", "--quiet", "--onnx", str(tmp_path / "m.onnx"), "--runtime", "openvino",
                 "--quantized", str(tmp_path / "q.safetensors")]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["agreement_top1"] >= 99.0


def test_export_benchmark_report_matches_the_graph(tiny, tmp_path, capsys):
    """`export --benchmark`: the report's sizes are the files', its kernel counts those of the graph
    ORT runs, every body Linear got an integer kernel, and the summary line says so."""
    from dfqvit.cli import main
    from dfqvit.deploy import FLOAT_KERNELS, is_integer_kernel
    from dfqvit.onnx_export import optimized_ops

    q = tmp_path / "q"
    assert main(["quantize", "--num-images", "8", "--w-bits", "8", "--a-bits", "8", "--preset", "basic", "--quiet",
                 "--out", str(q)]) == 0
    out = tmp_path / "m.onnx"
    assert main(["export", "--quantized", str(q / "quantized.safetensors"), "--out", str(out), "--benchmark",
                 "--benchmark-seconds", "0.2"]) == 0
    report = json.loads((tmp_path / "m.onnx.report.json").read_text())
    assert report["bytes"] == out.stat().st_size and 0 < report["size_vs_fp32"] < 0.5
    ops = optimized_ops(out)
    assert report["kernels"]["integer"] == {k: v for k, v in ops.items() if is_integer_kernel(k)}
    assert report["kernels"]["float"] == {k: v for k, v in ops.items() if k in FLOAT_KERNELS}
    body_linears = 4 * len(tiny.model.blocks)  # qkv, proj, fc1, fc2 of every block
    assert sum(report["kernels"]["integer"].values()) >= body_linears
    s = report["speed"]
    assert s["speedup_batch1"] == pytest.approx(s["fp32"]["batch1_ms_per_image"] / s["exported"]["batch1_ms_per_image"])
    printed = capsys.readouterr().out
    assert f"{report['size_vs_fp32']:.2f}× the FP32 graph" in printed and "ms/image" in printed
    assert "faster: --softmax uint8" in printed  # the log2 softmax is emulated in float
    assert "--gelu uniform" not in printed  # basic has no twin post-GELU quantizer
    # a second export refuses to replace the report without --overwrite
    assert main(["export", "--quantized", str(q / "quantized.safetensors"), "--out", str(tmp_path / "m2.onnx"),
                 "--benchmark", "--benchmark-seconds", "0.2"]) == 0
    assert main(["export", "--quantized", str(q / "quantized.safetensors"), "--out", str(out), "--benchmark"]) == 2


def test_twin_gelu_input_exports_as_two_integer_matmuls(tiny, digits_heldout, tmp_path):
    """fc2 behind the twin-uniform quantizer: pos·W − neg·W, each an integer kernel in ORT (the
    Where-merged form left fc2 in float), with the PyTorch model's logits."""
    from dfqvit.deploy import runtime_kernels

    x = digits_heldout[0][:200]
    config = QuantConfig(w_bits=8, a_bits=8, gelu_quantizer="twin")
    q, _ = quantize(tiny, real_images(tiny, None, 32)[0], config, progress=False)
    path = tmp_path / "twin.onnx"
    ref, out = _parity(q, tiny, x, path)  # float sums in another order: a code flips here and there, no more
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.99
    assert (out - ref).abs().mean() < 0.01 * ref.abs().mean()
    kernels = runtime_kernels(path)
    blocks = len(tiny.model.blocks)
    assert sum(kernels["integer"].values()) >= 5 * blocks  # qkv, proj, fc1 and fc2 twice per block
    assert "MatMulNBits" not in kernels["integer"]


def test_gelu_uniform_export_is_one_grid_and_one_integer_fc2(tiny, digits_heldout, tmp_path):
    """`gelu="uniform"`: the twin becomes one uniform grid over its range (error ≤ half a step there), one
    QDQ pair and one integer fc2 matmul per block; ORT runs it like the same form in PyTorch."""
    from dfqvit.deploy import runtime_kernels
    from dfqvit.errors import ConfigError
    from dfqvit.onnx_export import _ExportTwinAsUniform, export_view
    from dfqvit.quant.quantizers import TwinUniformQuantizer

    x = digits_heldout[0][:200]
    q, _ = quantize(tiny, real_images(tiny, None, 32)[0], QuantConfig(w_bits=8, a_bits=8, gelu_quantizer="twin"),
                    progress=False)
    twin = next(m for m in q.modules() if isinstance(m, TwinUniformQuantizer))
    grid = _ExportTwinAsUniform(twin)
    lo, hi = -twin.half_levels * float(twin.neg_scale), (twin.half_levels - 1) * float(twin.pos_scale)
    v = torch.linspace(lo, hi, 10001)
    assert grid.scale <= (hi - lo) / 255 * (1 + 1e-6)
    assert (grid(v) - v).abs().max() <= grid.scale / 2 * (1 + 1e-4)
    split, uniform = tmp_path / "split.onnx", tmp_path / "uniform.onnx"
    export_onnx(q, tiny, split)
    info = export_onnx(q, tiny, uniform, gelu="uniform")
    blocks = len(tiny.model.blocks)
    assert info["ops"]["QuantizeLinear"] == count_quantized_points(q)["activation_qdq"] - blocks
    assert json.loads({p.key: p.value for p in onnx.load(str(uniform)).metadata_props}["dfqvit"])["gelu"] == "uniform"
    ints_split, ints_uniform = (sum(runtime_kernels(p)["integer"].values()) for p in (split, uniform))
    assert ints_uniform == ints_split - blocks
    with torch.no_grad(), export_view(q, gelu="uniform") as m:
        ref = m(x)
    out = OnnxRuntimeModel(uniform)(x)
    assert (out.argmax(1) == ref.argmax(1)).float().mean() >= 0.99
    assert (out - ref).abs().mean() < 0.01 * ref.abs().mean()
    with pytest.raises(ConfigError, match="gelu export must be one of"):
        export_onnx(q, tiny, tmp_path / "bad.onnx", gelu="int4")
    from dfqvit.deploy import faster_forms

    assert any("two fc2 matmuls" in h for h in faster_forms(q, "uint8", "split"))  # what export --benchmark prints
    assert faster_forms(q, "uint8", "uniform") == []
