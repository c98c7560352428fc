"""One entry point for every published table: `python -m benchmarks <table> [options] [-- script options]`.

    python -m benchmarks list                          # the tables, their scripts and JSON
    python -m benchmarks lowbit -- --rows real --bits 4/4
    python -m benchmarks runtime --budget-minutes 30   # stopped after 30 minutes; cells already written stay
    python -m benchmarks imagenet-methods --device cuda
    python -m benchmarks report                        # regenerate every generated table in README.md and docs/

Each table is one script of benchmarks/ with its default arguments (docs/reproduce.md shows
the exact command behind each published table). `--device` is passed to the scripts that take
one; `--budget-minutes` stops the script after that long (the scripts write their JSON after
every cell, so what was measured is kept, and a rerun skips the cells it has).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Table:
    script: str  # relative to benchmarks/
    args: tuple[str, ...] = ()
    json: tuple[str, ...] = ()  # files under benchmarks/results/
    what: str = ""
    device: bool = False  # the script takes --device


TABLES: dict[str, Table] = {
    "imagenet-methods": Table("imagenet_gpu.py", ("--deadline", "420"), ("imagenet_gpu.json",),
                              "ImageNet ViT-Tiny, every method at the papers' setting (a GPU; --report-only anywhere)",
                              device=True),
    "imagenet-quantizer": Table("quantizer_table.py", (), ("quantizer_imagenet.json",),
                                "ImageNet ViT-Tiny, each quantizer option alone and the presets", device=True),
    "data-gap": Table("data_gap.py", (), ("data_gap.json",), "ImageNet ViT-Tiny, data-free vs real images, ACM variants",
                      device=True),
    "lowbit": Table("lowbit_table.py", (), ("lowbit_imagenet.json",),
                    "ImageNet ViT-Tiny at W6A6 / W4A8 / W4A4 / W3A3, real and data-free", device=True),
    "lowbit-cifar": Table("lowbit_table.py", ("--model", "cifar-deit"), ("lowbit_cifar-deit.json",),
                          "CIFAR DeiT at low bits: nothing lost with the low-bit options", device=True),
    "lowbit-sensitivity": Table("lowbit_sensitivity.py", ("--bits", "4/4", "--preset", "strong", "--images", "300"),
                                ("lowbit_sensitivity.json",), "which quantizer group a W4A4 / W3A3 model loses to"),
    "swap": Table("swap_calibration.py", (), ("swap_calibration.json",),
                  "which calibration stage synthetic images hurt (real images for one stage at a time)"),
    "diagnosis": Table("diagnose_imagenet.py", (), ("diagnosis_imagenet/report.md",),
                       "per-block statistics of data-free vs real calibration images"),
    "cifar": Table("cifar10_table.py", (), ("cifar10_deit.json", "cifar10_swin.json"),
                   "CIFAR-10 DeiT and Swin, every source × bits × 3 seeds", device=True),
    "runtime": Table("runtime_speed.py", ("--model", "imagenet", "--bits", "8/8,4/8,4/4", "--presets",
                                          "basic,strong-synthetic", "--softmax", "emulate,uint8", "--threads", "1",
                                          "--runtimes", "onnxruntime,openvino"),
                     ("runtime_speed_imagenet.json",), "ONNX Runtime / OpenVINO / PyTorch: parity and speed"),
    "runtime-int8": Table("runtime_speed.py", ("--model", "imagenet", "--bits", "8/8,4/8", "--presets",
                                               "basic,strong-synthetic", "--softmax", "uint8", "--gelu", "split,uniform",
                                               "--threads", "1", "--runtimes", "onnxruntime,openvino", "--tag=-int8"),
                          ("runtime_speed_imagenet-int8.json",),
                          "the A8 exports in their all-integer forms (softmax uint8, GELU split or uniform): speed"),
    "runtime-cifar": Table("runtime_speed.py", ("--model", "cifar-deit"), ("runtime_speed_cifar-deit.json",),
                           "the same on the CIFAR DeiT"),
    "onnx-size": Table("onnx_size.py", ("--images", "200"), ("onnx_size_imagenet.json",),
                       "file size of FP32, W8A8, W4A8, W4A4 ONNX exports"),
    "peers-repq": Table("peers/repq_vit.py", ("--repo", "/tmp/repq", "--bits", "6/6,4/8,4/4,3/3"),
                        ("peers_repq_vit.json",), "RepQ-ViT's own code on the same model and images"),
    "peers-ort": Table("peers/ort_static.py", ("--threads", "1"), ("peers_ort_static.json",),
                       "ONNX Runtime quantize_static of the FP32 export: accuracy and speed"),
    "hf-crosscheck": Table("hf_crosscheck.py", ("--threads", "1"), ("hf_crosscheck.json",),
                           "the ImageNet ViT-Tiny as timm and as a transformers folder"),
    "synthesis-speed": Table("synthesis_speed.py", (), ("synthesis_speed_*.json",),
                             "ms per synthesis iteration per method", device=True),
    "term-speed": Table("term_speed.py", (), (), "ms of each synthesis loss term alone", device=True),
    "graph-check": Table("graph_check.py", (), ("graph_check_cuda*.json",),
                         "CUDA-graph steps against eager steps: the same images, the speed (a GPU)"),
}


def run_table(table: Table, extra: list[str], device: str | None, budget_minutes: float | None) -> int:
    args = list(table.args)
    if device and table.device:
        args += ["--device", device]
    cmd = [sys.executable, str(HERE / table.script), *args, *extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")]))}
    print("$", " ".join(cmd), flush=True)
    try:
        return subprocess.run(cmd, cwd=HERE.parent, env=env, timeout=budget_minutes * 60 if budget_minutes else None
                              ).returncode
    except subprocess.TimeoutExpired:
        print(f"stopped after {budget_minutes} minutes; the cells written so far are in benchmarks/results/",
              file=sys.stderr)
        return 124


def report() -> int:
    """Regenerate the generated tables (`<!-- table:NAME -->` blocks) of README.md and docs/*.md."""
    sys.path.insert(0, str(HERE))
    import readme_tables

    for path in readme_tables.DOCUMENTS:
        text = path.read_text()
        filled = readme_tables.fill(text)
        if filled != text:
            path.write_text(filled)
            print(f"updated {path.relative_to(HERE.parent)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("table", choices=["list", "report", *TABLES])
    p.add_argument("--device", default=None, help="cpu, cuda, ... for the tables whose script takes one")
    p.add_argument("--budget-minutes", type=float, default=None, help="stop the script after this long")
    a = p.parse_args(argv)
    if a.table == "list":
        for name, t in TABLES.items():
            print(f"{name:20s} {t.what}\n{'':20s} benchmarks/{t.script} {' '.join(t.args)} → "
                  f"{', '.join('results/' + j for j in t.json) or '(prints)'}")
        return 0
    if a.table == "report":
        return report()
    return run_table(TABLES[a.table], extra, a.device, a.budget_minutes)


if __name__ == "__main__":
    sys.exit(main())
