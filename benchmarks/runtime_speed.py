"""Images/s of the same model four ways: PyTorch FP32, PyTorch fake-quant (dfqvit), ONNX Runtime FP32,
ONNX Runtime QDQ (after ORT's own fusions), at batch 1 and 64, plus which operators ORT ran in integer.

    python benchmarks/runtime_speed.py                         # CIFAR DeiT, W8A8 and W4A8, strong and basic
    python benchmarks/runtime_speed.py --model cifar-swin --bits 8/8

Also measures ONNX ↔ PyTorch parity on 1,000 CIFAR val images (top-1 and agreement).
Writes benchmarks/results/runtime_speed.{json,md}.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import RESULTS, Results, eval_set, load, machine, shared
from dfqvit import api
from dfqvit.deploy import is_integer_kernel, runtime_kernels
from dfqvit.onnx_export import OnnxRuntimeModel, export_float_onnx, export_onnx, optimized_ops
from dfqvit.presets import quant_config
from dfqvit.quant.quantizers import TwinUniformQuantizer

# name → (model config, evaluation folder, calibration folder, images per class of the evaluation folder)
MODELS = {"cifar-deit": ("cifar10/models/deit_tiny_cifar10.json", "cifar10/val", "cifar10/calib", 100),
          "cifar-swin": ("cifar10/models/swin_micro_cifar10.json", "cifar10/val", "cifar10/calib", 100),
          "imagenet": ("imagenet/vit_tiny_patch16_224.json", "imagenet/sample", "imagenet/calib", None)}


def images_per_s(model, x: torch.Tensor, batch: int, seconds: float = 4.0) -> float:
    n, start = 0, time.perf_counter()
    with torch.no_grad():
        model(x[:batch])  # warm-up
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            i = (n * batch) % (len(x) - batch + 1)
            model(x[i:i + batch])
            n += 1
    return n * batch / (time.perf_counter() - start)


STATIC_ROW = "ONNX Runtime quantize_static (MatMul/Gemm, Percentile 99.99)"


def static_row(loaded, tmp: Path, calib: torch.Tensor, x: torch.Tensor, y: torch.Tensor, threads: int,
               results: Results) -> OnnxRuntimeModel:
    """ORT's own quantizer of the FP32 export, the deploy anchor, timed in the same rounds as dfqvit's graphs;
    its top-1, agreement and KL against the PyTorch float model go to results["ort_static"]."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from peers.ort_static import quantize_static_graph

    quant_pre_process(str(tmp / "fp.onnx"), str(tmp / "fp-pre.onnx"))
    quantize_static_graph(tmp / "fp-pre.onnx", tmp / "static.onnx", calib, ["MatMul", "Gemm"], "Percentile", 99.99)
    model = OnnxRuntimeModel(tmp / "static.onnx", verify=False, threads=threads)
    got = api.evaluate(model, loaded, (x, y), fp_model=loaded.model, progress=False)
    results.data["ort_static"] = {"top1": got["top1"], "agreement_with_fp": got["agreement_top1"],
                                  "kl_to_fp": got["kl_to_fp"], "onnx_bytes": (tmp / "static.onnx").stat().st_size,
                                  "integer_ops": runtime_kernels(tmp / "static.onnx")["integer"]}
    results.save()
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cifar-deit", choices=list(MODELS))
    p.add_argument("--bits", default="8/8,4/8")
    p.add_argument("--presets", default="basic,strong")
    p.add_argument("--runtimes", default="onnxruntime", help="comma list: onnxruntime, openvino")
    p.add_argument("--softmax", default="emulate", help="comma list of export softmax forms: emulate, uint8")
    p.add_argument("--gelu", default="split", help="comma list of export post-GELU forms: split, uniform (only for "
                                                   "exports that have twin / adaptive-log GELU quantizers)")
    p.add_argument("--threads", type=int, default=None, help="torch and runtime threads (default: all cores)")
    p.add_argument("--tag", default="", help="suffix of the result files")
    p.add_argument("--rounds", type=int, default=3,
                   help="timing rounds; each times every row in turn (the median is reported: drift hits all rows)")
    p.add_argument("--seconds", type=float, default=3.0, help="timing per row, batch size and round")
    p.add_argument("--ort-static", action="store_true",
                   help="add ONNX Runtime's own quantize_static of the FP32 export (MatMul/Gemm, Percentile 99.99, "
                        "the same 32 calibration images) to the timed rows (peers/ort_static.py)")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    openvino = "openvino" in a.runtimes.split(",")
    if openvino:
        from dfqvit.runtimes import OpenVinoModel
    torch.set_num_threads(max(1, torch.get_num_threads()))
    config, folder, calib_folder, per_class = MODELS[a.model]
    loaded = load(config)
    x, y = eval_set(loaded, folder, per_class=per_class)
    calib, _ = api.real_images(loaded, shared(calib_folder), 32)
    threads = torch.get_num_threads()
    results = Results(RESULTS / f"runtime_speed_{a.model}{a.tag}.json", {"model": config, "machine": machine(),
                                                                         "threads": threads})
    tmp = Path(tempfile.mkdtemp())
    fp_onnx = OnnxRuntimeModel(verify=False, threads=threads,
                               path=export_float_onnx(loaded.model, tuple(loaded.data_config["input_size"]), tmp / "fp.onnx"))
    rows = {"PyTorch FP32": loaded.model, "ONNX Runtime FP32": fp_onnx}
    if openvino:
        rows["OpenVINO FP32"] = OpenVinoModel(tmp / "fp.onnx", threads=threads, verify=False)
    for preset in a.presets.split(","):
        for bits in a.bits.split(","):
            w, act = (int(v) for v in bits.split("/"))
            q, _ = api.quantize(loaded, calib, quant_config(preset, w_bits=w, a_bits=act), progress=False)
            parity_q = api.evaluate(q, loaded, (x, y), progress=False, return_logits=True)
            rows[f"PyTorch fake-quant ({preset} W{w}A{act})"] = q
            twin = any(isinstance(m, TwinUniformQuantizer) for m in q.modules())
            forms = [(s, g) for s in a.softmax.split(",") for g in (a.gelu.split(",") if twin else ["split"])]
            for softmax, gelu in forms:
                name = (f"{preset} W{w}A{act}" + (f", softmax {softmax}" if softmax != "emulate" else "")
                        + (f", gelu {gelu}" if gelu != "split" else ""))
                path = tmp / f"{preset}-{w}{act}-{softmax}-{gelu}.onnx"
                info = export_onnx(q, loaded, path, softmax=softmax, gelu=gelu)
                ort_q = OnnxRuntimeModel(path, threads=threads)
                ops = optimized_ops(path)
                parity_o = api.evaluate(ort_q, loaded, (x, y), progress=False, fp_logits=parity_q["logits"])
                plain = api.evaluate(OnnxRuntimeModel(path, optimize=False, threads=threads), loaded, (x, y),
                                     progress=False, fp_logits=parity_q["logits"])
                results.data.setdefault("parity", {})[name] = {
                    "pytorch_top1": parity_q["top1"], "onnx_top1": parity_o["top1"],
                    "agreement": parity_o["agreement_top1"], "kl": parity_o["kl_to_fp"],
                    "unoptimized_top1": plain["top1"], "unoptimized_agreement": plain["agreement_top1"],
                    "integer_ops": {k: v for k, v in ops.items() if is_integer_kernel(k)},
                    "float_matmuls_left": ops.get("MatMul", 0) + ops.get("Gemm", 0), "onnx_bytes": info["bytes"]}
                rows[f"ONNX Runtime QDQ ({name})"] = ort_q
                if openvino:
                    ov_q = OpenVinoModel(path, threads=threads)
                    parity_v = api.evaluate(ov_q, loaded, (x, y), progress=False, fp_logits=parity_q["logits"])
                    results.data["parity"][name]["openvino"] = {
                        "top1": parity_v["top1"], "agreement": parity_v["agreement_top1"], "kl": parity_v["kl_to_fp"]}
                    rows[f"OpenVINO QDQ ({name})"] = ov_q
                results.save()
                print(name, results.data["parity"][name], flush=True)
    if a.ort_static:
        rows[STATIC_ROW] = static_row(loaded, tmp, calib, x, y, threads, results)
    timed: dict[str, list[float]] = {}
    for r in range(a.rounds):  # every row once per round: slow drift of the machine hits every row alike
        for batch in (1, 64):
            for name, model in rows.items():
                timed.setdefault(f"{name}|{batch}", []).append(images_per_s(model, x, batch, a.seconds))
                print(f"round {r + 1}, {name}, batch {batch}: {timed[f'{name}|{batch}'][-1]:.0f} images/s", flush=True)
        results.data["speed_rounds"] = timed
        results.data["speed"] = {k: statistics.median(v) for k, v in timed.items()}
        results.save()
    lines = [f"{config}, {machine()['device']}, {torch.get_num_threads()} threads, median of {a.rounds} rounds", "",
             "| model | batch 1 images/s | batch 64 images/s |", "| --- | --- | --- |"]
    for name in rows:
        lines.append(f"| {name} | {results.data['speed'][f'{name}|1']:.0f} | {results.data['speed'][f'{name}|64']:.0f} |")
    lines += ["", "| export | PyTorch top-1 | ORT top-1 | agreement % | KL | ORT without its fusions: top-1 / agreement "
              "| integer ops in ORT | float MatMul/Gemm left | OpenVINO top-1 / agreement / KL |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k, v in results.data["parity"].items():
        ints = ", ".join(f"{op} ×{n}" for op, n in v["integer_ops"].items()) or "none"
        ov = v.get("openvino")
        ov_cell = f"{ov['top1']:.2f} / {ov['agreement']:.2f} / {ov['kl']:.5f}" if ov else "–"
        lines.append(f"| {k} | {v['pytorch_top1']:.2f} | {v['onnx_top1']:.2f} | {v['agreement']:.2f} | {v['kl']:.5f} | "
                     f"{v['unoptimized_top1']:.2f} / {v['unoptimized_agreement']:.2f} | {ints} | "
                     f"{v['float_matmuls_left']} | {ov_cell} |")
    if "ort_static" in results.data:
        st = results.data["ort_static"]
        lines += ["", f"{STATIC_ROW}: top-1 {st['top1']:.2f}, agreement with the float model {st['agreement_with_fp']:.2f} %, "
                  f"KL {st['kl_to_fp']:.4f}, {st['onnx_bytes'] / 1e6:.2f} MB"]
    (RESULTS / f"runtime_speed_{a.model}{a.tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
