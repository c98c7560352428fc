"""The README's result tables, printed from the benchmark JSON files (nothing typed by hand).

    python benchmarks/readme_tables.py
"""
from __future__ import annotations

import json

from common import RESULTS, Results, summarize


def cell(v: dict | None, std: bool = False) -> str:
    if v is None:
        return "–"
    s = f" ± {v['top1_std']:.1f}" if std and v["n"] > 1 else ""
    return f"{v['top1']:.1f}{s} / {v['agreement']:.1f} / {v['kl']:.3f}"


def table(name: str, rows: list[tuple[str, str, str]], cols: list[str], std: bool = False) -> str:
    """rows: (label, preset, row name) looked up in results/<name>.json."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return f"({path.name} not measured yet)"
    r = Results(path, {})
    s = summarize(r)
    fp = r.data["fp"]["top1"]
    lines = [f"FP top-1 {fp:.1f}. Cells: top-1 % / agreement with FP % / KL(FP ‖ quantized).", "",
             "| calibration | quantizer | " + " | ".join(cols) + " |", "| --- | --- |" + " --- |" * len(cols)]
    for label, preset, row in rows:
        got = s.get(preset, {}).get(row)
        if got:
            lines.append(f"| {label} | {preset} | " + " | ".join(cell(got.get(c), std) for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    q = []
    for src in ("noise", "real", "dfq-vit"):
        for preset in ("basic", "+reparam (RepQ post-LN)", "+log√2 softmax", "+twin post-GELU", "+MSE weights",
                       "+GPTQ (MSE) weights", "+output-error ranges", "strong", "strong − GPTQ", "strong − output search",
                       "strong − GPTQ − search", "strong + reconstruction"):
            q.append((src, preset, src))
    for src in ("real + ACM", "dfq-vit + ACM"):
        for preset in ("strong", "strong − GPTQ"):
            q.append((src, preset, src))
    print("## ImageNet quantizer\n")
    print(table("quantizer_imagenet", q, ["W8A8", "W6A6", "W4A8", "W4A4"]))
    gap = json.loads((RESULTS / "data_gap.json").read_text()) if (RESULTS / "data_gap.json").is_file() else {}
    rows = sorted({k.split("|")[0] for k in gap.get("cells", {})})
    print("\n## Data gap\n")
    print(table("data_gap", [(n, "strong", n) for n in rows], ["W8A8", "W4A8"]))
    for m in ("deit", "swin"):
        path = RESULTS / f"cifar10_{m}.json"
        if path.is_file():
            names = sorted({k.split("|")[0] for k in json.loads(path.read_text())["cells"]})
            presets = sorted({k.split("|")[2] for k in json.loads(path.read_text())["cells"]})
            print(f"\n## CIFAR-10 {m}\n")
            print(table(f"cifar10_{m}", [(n, p, n) for n in names for p in presets],
                        ["W8A8", "W6A6", "W4A8", "W4A4", "W4A3", "W3A3"], std=True))


if __name__ == "__main__":
    main()
