"""report.json (everything, machine-readable) and report.md (what a person reads first)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(v: Any) -> str:
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def write_report(directory: Path, report: dict[str, Any]) -> None:
    (directory / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    lines = ["# dfqvit report", ""]
    lines += [f"- model: `{report.get('model')}`", f"- method: `{report.get('method', {}).get('name')}`"]
    q = report.get("quantize", {}).get("quant_config")
    if q:
        lines.append(f"- bits: W{q['w_bits']}A{q['a_bits']} (head {q['head_bits']}, patch-embed {q['embed_bits']}, "
                     f"observers: weights {q['weight_observer']}, activations {q['act_observer']})")
    if report.get("preset"):
        lines.append(f"- quantizer preset: `{report['preset']}`")
    parts = report.get("parts_run")
    if parts:
        lines.append(f"- parts run: {', '.join(parts)}")
    ev = report.get("evaluation")
    if ev:
        lines += ["", f"## Evaluation on {ev.get('data')}", "", "| model | top-1 | top-5 | agreement with FP | images/s |",
                  "| --- | --- | --- | --- | --- |"]
        fp = ev.get("fp")
        if fp:
            lines.append(f"| FP | {_fmt(fp['top1'])} | {_fmt(fp['top5'])} | 100.00 | {_fmt(fp['images_per_s'])} |")
        lines.append(f"| quantized | {_fmt(ev['top1'])} | {_fmt(ev['top5'])} | {_fmt(ev.get('agreement_top1', '-'))} | "
                     f"{_fmt(ev['images_per_s'])} |")
    syn = report.get("synthesis")
    if syn:
        lines += ["", "## Synthesis", "", f"- seconds: {_fmt(syn['seconds'])}",
                  f"- final loss terms: {', '.join(f'{k} {v:.4f}' for k, v in syn.get('final_terms', {}).items()) or '-'}"]
        if syn.get("grid"):
            lines += ["", f"![synthetic images]({syn['grid']})"]
    qi = report.get("quantize", {})
    if qi.get("block_gap_before_acm"):
        lines += ["", "## FP vs quantized block-output gap (mean |Δ|, calibration images)", "",
                  "| block | before ACM | after ACM |", "| --- | --- | --- |"]
        after = qi.get("block_gap_after_acm") or [None] * len(qi["block_gap_before_acm"])
        for i, (b, a) in enumerate(zip(qi["block_gap_before_acm"], after)):
            lines.append(f"| {i} | {b:.4f} | {'-' if a is None else f'{a:.4f}'} |")
    ox = report.get("onnx")
    if ox:
        lines += ["", "## ONNX (QDQ) in ONNX Runtime", "",
                  f"- `{ox['file']}` ({ox['bytes'] / 1e6:.3f} MB): top-1 {ox['top1']:.2f}, top-1 agreement with the "
                  f"PyTorch quantized model {ox['agreement_with_pytorch']:.2f} %, KL to it {ox['kl_to_pytorch']:.5f}, "
                  f"{ox['images_per_s']:.0f} images/s"]
    sizes = report.get("sizes")
    if sizes:
        lines += ["", "## Sizes", "", f"- FP32 weights: {sizes['fp32_mb']:.3f} MB",
                  f"- quantized, bit-packed: {sizes['packed_mb']:.3f} MB", f"- file on disk: {sizes['file_mb']:.3f} MB"]
    (directory / "report.md").write_text("\n".join(lines) + "\n")
