"""The README's result tables, printed from the benchmark JSON files (nothing typed by hand).

    python benchmarks/readme_tables.py
"""
from __future__ import annotations

import json
from collections import Counter

from common import RESULTS, Results, summarize


def cell(v: dict | None, std: bool = False, kl_digits: int = 3) -> str:
    if v is None:
        return "–"
    s = f" ± {v['top1_std']:.1f}" if std and v["n"] > 1 else ""
    return f"{v['top1']:.1f}{s} / {v['agreement']:.1f} / {v['kl']:.{kl_digits}f}"


def rows_markdown(entries: list[tuple[str, str, dict | None]], cols: list[str], std: bool = False) -> str:
    """entries: (label, preset, summarized cells or None); rows without cells are left out.
    With `std`, a last column gives the seeds per cell (fewest-most where a row is unfinished)."""
    seeds = " seeds |" if std else ""
    lines = ["| calibration | quantizer | " + " | ".join(cols) + " |" + seeds,
             "| --- | --- |" + " --- |" * (len(cols) + bool(std))]
    for label, preset, got in entries:
        if not got:
            continue
        line = f"| {label} | {preset} | " + " | ".join(cell(got.get(c), std) for c in cols) + " |"
        if std:
            n = sorted(got[c]["n"] for c in cols if c in got)
            line += f" {n[0]} |" if n[0] == n[-1] else f" {n[0]}-{n[-1]} |"
        lines.append(line)
    return "\n".join(lines)


def table(name: str, rows: list[tuple[str, str, str]], cols: list[str], std: bool = False) -> str:
    """rows: (label, preset, row name) looked up in results/<name>.json."""
    path = RESULTS / f"{name}.json"
    if not path.is_file():
        return f"({path.name} not measured yet)"
    r = Results(path, {})
    s = summarize(r)
    head = f"FP top-1 {r.data['fp']['top1']:.1f}. Cells: top-1 % / agreement with FP % / KL(FP ‖ quantized).\n\n"
    return head + rows_markdown([(label, preset, s.get(preset, {}).get(row)) for label, preset, row in rows], cols, std)


GAP_ROWS = [  # (label, results file, row, preset)
    ("dfq-vit, 32 images, no ACM", "quantizer_imagenet", "dfq-vit", "strong-synthetic"),
    ("dfq-vit + ACM", "quantizer_imagenet", "dfq-vit + ACM", "strong-synthetic"),
    ("real + ACM, same quantizer", "quantizer_imagenet", "real + ACM", "strong-synthetic"),
    ("real, same quantizer", "quantizer_imagenet", "real", "strong-synthetic"),
    ("real + ACM, its best quantizer", "data_gap", "real + ACM", "strong"),
    ("real, its best quantizer", "data_gap", "real, no ACM", "strong"),
    ("noise, same quantizer", "quantizer_imagenet", "noise", "strong-synthetic"),
    ("dfq-vit + ACM (shrunk)", "data_gap", "dfq-vit + ACM (shrunk)", "strong-synthetic"),
    ("dfq-vit + ACM (agree)", "data_gap", "dfq-vit + ACM (agree)", "strong-synthetic"),
    ("mimiq + ACM", "data_gap", "mimiq + ACM", "strong-synthetic"),
    ("psaq (faithful) + ACM", "data_gap", "psaq (faithful) + ACM", "strong-synthetic"),
    ("dfq-vit + ACM (mean)", "data_gap", "dfq-vit + ACM", "strong"),
    ("dfq-vit + ACM (shrunk)", "data_gap", "dfq-vit + ACM (shrunk)", "strong"),
    ("dfq-vit + ACM (agree)", "data_gap", "dfq-vit + ACM (agree)", "strong"),
    ("dfq-vit + ACM (channel)", "data_gap", "dfq-vit + ACM (channel)", "strong"),
    ("dfq-vit, no ACM", "data_gap", "dfq-vit, no ACM", "strong"),
    ("real + ACM (shrunk)", "data_gap", "real + ACM (shrunk)", "strong"),
    ("real + ACM (agree)", "data_gap", "real + ACM (agree)", "strong"),
    ("real + ACM (channel)", "data_gap", "real + ACM (channel)", "strong"),
    ("noise + ACM", "data_gap", "noise + ACM", "strong"),
]


GPU_GAP_ROWS = [  # (label, row of imagenet_gpu.json); quantizer strong-synthetic on both sides
    ("**default: dfq-vit, 128 images, no ACM**", "dfq-vit 128 images"),
    ("dfq-vit, 128 images + ACM", "dfq-vit 128 images + ACM"),
    ("dfq-vit, 32 images (the papers'), no ACM", "dfq-vit without ACM"),
    ("real + ACM", "real + ACM"),
    ("real", "real"),
]


def gpu_gap_table(cols: list[str]) -> str:
    s = summarize(Results(RESULTS / "imagenet_gpu.json", {})).get("strong-synthetic", {})
    return rows_markdown([(label, "strong-synthetic", s.get(row)) for label, row in GPU_GAP_ROWS], cols, std=True)


def gap_table(cols: list[str]) -> str:
    sums = {name: summarize(Results(RESULTS / f"{name}.json", {})) for name in ("quantizer_imagenet", "data_gap")}
    return rows_markdown([(label, preset, sums[name].get(preset, {}).get(row))
                          for label, name, row, preset in GAP_ROWS], cols)


REAL_COUNT_ROWS = [  # (label, preset, [(results file, variant), ...]): real calibration by image count
    ("32 real images", "strong", [("lowbit_imagenet", "strong + adalog"), ("quantizer_imagenet", "strong")]),
    ("128 real images", "strong", [("lowbit_imagenet-n128", "strong + adalog")]),
    # the W4A4 cell of today's strong+recon was measured under its earlier variant name (the same config)
    ("32 real images", "strong+recon", [("lowbit_imagenet", "strong+recon, fisher"),
                                        ("lowbit_imagenet", "strong + adalog + fisher recon, lr 0.1")]),
    ("128 real images", "strong+recon", [("lowbit_imagenet-n128", "strong+recon, fisher")]),
    ("256 real images", "strong+recon", [("lowbit_imagenet-n256", "strong+recon, fisher")]),
]


FRESH_ROWS = [  # (label, quantizer variant, row) of lowbit_imagenet-resyn.json: one DFQ-ViT set, three reconstructions
    ("dfq-vit", "strong-synthetic, no recon", "dfq-vit"),
    ("dfq-vit", "strong-synthetic+recon, first 6 blocks", "dfq-vit"),
    ("dfq-vit", "strong-synthetic+recon, first 6 blocks, fresh views", "dfq-vit"),
]


def fresh_views_table() -> str:
    """Reconstruction on fixed inputs against a new crop/flip of the images every step, on one image set."""
    return table("lowbit_imagenet-resyn", FRESH_ROWS, ["W4A8", "W4A4"])


# the two synthetic-image reconstructions auto chooses between, on every image set both ran on (2026-12-04/07)
RECON_SETS = [("ImageNet ViT-Tiny", "lowbit_imagenet"), ("ImageNet ViT-Tiny", "lowbit_imagenet-seed1"),
              ("ImageNet ViT-Tiny", "lowbit_imagenet-seed2"),
              ("CIFAR DeiT", "lowbit_cifar-deit-seed1"), ("CIFAR DeiT", "lowbit_cifar-deit-set2"),
              ("CIFAR Swin", "lowbit_cifar-swin-seed1"), ("CIFAR Swin", "lowbit_cifar-swin-set2")]
FIRST_SIX = "strong-synthetic+recon, first 6 blocks, fresh views"
EVERY_RELATIVE = "strong-synthetic+recon, every block, relative"
NATURAL = "dfq-vit, chroma 0.3 and 1/f gradient in synthesis"  # dfq-vit-natural, the default method


def recon_sets_table() -> str:
    """The first 6 blocks on fresh views (plain MSE) against every block with the relative objective,
    cell by cell on the same DFQ-ViT images (one row per image set and bit setting both measured)."""
    lines = ["| model | images (SHA-1) | bits | first 6 blocks, fresh views | every block, relative | KL change |",
             "| --- | --- | --- | --- | --- | --- |"]
    for model, name in RECON_SETS:
        path = RESULTS / f"{name}.json"
        if not path.is_file():
            continue
        cells = json.loads(path.read_text())["cells"]
        for col in ("W4A8", "W4A4", "W3A3"):
            pair = [next((v for k, v in cells.items() if k.split("|")[:3] == ["dfq-vit", col, variant]), None)
                    for variant in (FIRST_SIX, EVERY_RELATIVE)]
            if None in pair:
                continue
            old, new = ({**v, "n": 1} for v in pair)
            digits = 3 if old["kl"] >= 0.1 else 4  # the CIFAR models' W4A8 KL is ~0.004
            lines.append(f"| {model} | `{old['images_sha1']}` | {col} | {cell(old, kl_digits=digits)} | "
                         f"{cell(new, kl_digits=digits)} | "
                         f"{100 * (new['kl'] / old['kl'] - 1):+.0f} % |")
    return "\n".join(lines)


# (model, reconstruction, results file, row, bits, variant as synthesized, with σ 1 px, with the spectrum's σ, that σ):
# cells on the same images; the spectrum's σ is natural_sigma of the set's first 32 images
BLUR_ROWS = [
    ("ImageNet ViT", "none", "lowbit_imagenet", "dfq-vit", "W8A8", "strong-synthetic, no recon",
     "strong-synthetic, no recon, blur 1", "strong-synthetic, no recon, blur auto", 0.7),
    ("ImageNet ViT", "none", "lowbit_imagenet", "dfq-vit", "W6A6", "strong-synthetic, no recon",
     "strong-synthetic, no recon, blur 1", "strong-synthetic, no recon, blur auto", 0.7),
    ("ImageNet ViT", "none", "lowbit_imagenet", "dfq-vit", "W4A4", "strong-synthetic, no recon",
     "strong-synthetic, no recon, blur 1", "strong-synthetic, no recon, blur auto", 0.7),
    ("ImageNet ViT", "every block, relative (W4A8 preset)", "lowbit_imagenet", "dfq-vit", "W4A8",
     "strong-synthetic+recon, every block, relative", "strong-synthetic+recon, every block, relative, blur 1",
     "strong-synthetic+recon, every block, relative, blur auto", 0.7),
    ("ImageNet ViT", "every block, relative (W4A8 preset)", "lowbit_imagenet-seed1", "dfq-vit", "W4A8",
     "strong-synthetic+recon, every block, relative", "strong-synthetic+recon, every block, relative, blur 1",
     "strong-synthetic+recon, every block, relative, blur auto", 0.7),
    ("ImageNet ViT", "every block, relative (W4A8 preset)", "lowbit_imagenet-seed2", "dfq-vit", "W4A8",
     "strong-synthetic+recon, every block, relative", "strong-synthetic+recon, every block, relative, blur 1",
     "strong-synthetic+recon, every block, relative, blur auto", 0.7),
    ("ImageNet ViT", "first 6 blocks, fresh views (W4A4 preset)", "lowbit_imagenet", "dfq-vit", "W4A4", FIRST_SIX,
     FIRST_SIX + ", blur 1", FIRST_SIX + ", blur auto", 0.7),
    ("ImageNet ViT", "first 6 blocks, fresh views (W4A4 preset)", "lowbit_imagenet-seed1", "dfq-vit", "W4A4",
     FIRST_SIX, FIRST_SIX + ", blur 1", FIRST_SIX + ", blur auto", 0.7),
    ("ImageNet ViT", "first 6 blocks, fresh views (W4A4 preset)", "lowbit_imagenet-seed2", "dfq-vit", "W4A4",
     FIRST_SIX, FIRST_SIX + ", blur 1", FIRST_SIX + ", blur auto", 0.7),
    ("CIFAR DeiT", "first 6 blocks, fresh views (W4A4 preset)", "lowbit_cifar-deit-set2", "dfq-vit", "W4A4",
     FIRST_SIX, FIRST_SIX + ", blur 1", FIRST_SIX, 0.0),
    ("CIFAR DeiT", "first 6 blocks, fresh views (W4A4 preset)", "lowbit_cifar-deit-set2", "dfq-vit", "W3A3",
     FIRST_SIX, FIRST_SIX + ", blur 1", FIRST_SIX, 0.0),
    ("CIFAR Swin", "first 6 blocks, fresh views (W4A4 preset)", "lowbit_cifar-swin-set2", "dfq-vit", "W4A4",
     FIRST_SIX, FIRST_SIX + ", blur 1", FIRST_SIX + ", blur 0.6", 0.6),
    ("CIFAR Swin", "first 6 blocks, fresh views (W4A4 preset)", "lowbit_cifar-swin-set2", "dfq-vit", "W3A3",
     FIRST_SIX, FIRST_SIX + ", blur 1", FIRST_SIX + ", blur 0.6", 0.6),
]


def _cell_of(name: str, row: str, col: str, variant: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    cells = json.loads(path.read_text())["cells"] if path.is_file() else {}
    return next(({**v, "n": 1} for k, v in cells.items() if k.split("|")[:3] == [row, col, variant]), None)


def blur_table() -> str:
    """strong-synthetic with and without the low-pass of its calibration images (σ 1 px, and the σ the
    images' spectrum asks for), on the same images."""
    lines = ["| model | reconstruction | images (SHA-1) | bits | as synthesized | σ 1 px | spectrum's σ | "
             "low-passed to it | KL change |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for model, label, name, row, col, without, one, natural, sigma in BLUR_ROWS:
        old, new = _cell_of(name, row, col, without), _cell_of(name, row, col, one)
        nat = _cell_of(name, row, col, natural) if natural else None
        if not old:
            continue
        digits = 4 if old["kl"] < 0.1 else 3  # the CIFAR models' W4A4 KL is ~0.02
        to_it = cell(nat, kl_digits=digits) if nat else "–"
        change = f"{100 * (nat['kl'] / old['kl'] - 1):+.0f} %" if nat and sigma else ("σ 0: as synthesized" if nat else "–")
        lines.append(f"| {model} | {label} | `{old['images_sha1']}` | {col} | {cell(old, kl_digits=digits)} | "
                     f"{cell(new, kl_digits=digits) if new else '–'} | {sigma:g} | {to_it} | {change} |")
    return "\n".join(lines)


# The synthesis-side image priors under today's presets, each on its own images: (model, results file, seed, bits,
# preset label, {column: (row, variant)}). Where a set's `--calib-blur auto` σ is 0 (images already falling as f^-2,
# or the CIFAR models' small patches) the cell measured with the blur pinned off is the same calibration.
RELATIVE = "strong-synthetic+recon, every block, relative"
NATURAL = "dfq-vit, chroma 0.3 and 1/f gradient in synthesis"  # dfq-vit-natural, the default method
PRIOR_COLUMNS = ["DFQ-ViT", "low-pass 1 px", "1/f gradient", "chroma 0.3", "chroma 0.3 + 1/f gradient (dfq-vit-natural)",
                 "chroma 0.28/0.13 + 1/f gradient", "chroma 0.3 + 1/f gradient + soft labels"]
PRIOR_SOURCES = {"DFQ-ViT": "dfq-vit", "low-pass 1 px": "dfq-vit, low-pass 1 in synthesis",
                 "1/f gradient": "dfq-vit, 1/f gradient in synthesis", "chroma 0.3": "dfq-vit, chroma 0.3 in synthesis",
                 "chroma 0.3 + 1/f gradient (dfq-vit-natural)": NATURAL,
                 "chroma 0.28/0.13 + 1/f gradient": "dfq-vit, chroma 0.28/0.13 and 1/f gradient in synthesis",
                 "chroma 0.3 + 1/f gradient + soft labels": "dfq-vit, chroma 0.3, 1/f gradient and soft labels in synthesis"}


def _prior_variants(preset: str, pinned_off: tuple[str, ...] = ()) -> dict[str, str]:
    """The variant each column's cell was measured with: the preset with `blur auto`, or (for the columns in
    `pinned_off`, whose auto σ is 0) the same preset with the blur pinned off."""
    return {c: preset if c in pinned_off else preset + ", blur auto" for c in PRIOR_COLUMNS}


PRIOR_ROWS = [
    ("ImageNet ViT", "lowbit_imagenet", 0, "W8A8", "no recon", _prior_variants("strong-synthetic, no recon")),
    ("ImageNet ViT", "lowbit_imagenet", 0, "W6A6", "no recon", _prior_variants("strong-synthetic, no recon")),
    ("ImageNet ViT", "lowbit_imagenet", 0, "W4A4", "W4A4 preset", _prior_variants(FIRST_SIX, ("low-pass 1 px",))),
    ("ImageNet ViT", "lowbit_imagenet-seed1", 1, "W4A4", "W4A4 preset", _prior_variants(FIRST_SIX)),
    ("ImageNet ViT", "lowbit_imagenet", 0, "W4A8", "W4A8 preset", _prior_variants(RELATIVE, ("low-pass 1 px",))),
    ("ImageNet ViT", "lowbit_imagenet-seed1", 1, "W4A8", "W4A8 preset", _prior_variants(RELATIVE)),
    # at W4A4 under the W4A8 preset (every block, relative objective)
    ("ImageNet ViT", "lowbit_imagenet", 0, "W4A4", "W4A8 preset", _prior_variants(RELATIVE)),
    ("ImageNet ViT", "lowbit_imagenet-seed1", 1, "W4A4", "W4A8 preset", _prior_variants(RELATIVE)),
    ("ImageNet ViT", "lowbit_imagenet", 0, "W3A3", "W4A4 preset", _prior_variants(FIRST_SIX)),
    ("CIFAR DeiT", "lowbit_cifar-deit-set2", 0, "W4A4", "W4A4 preset", _prior_variants(FIRST_SIX, ("DFQ-ViT",))),
    ("CIFAR DeiT", "lowbit_cifar-deit-set2", 0, "W4A8", "W4A8 preset", _prior_variants(RELATIVE, ("DFQ-ViT",))),
    ("CIFAR Swin", "lowbit_cifar-swin-set2", 0, "W4A4", "W4A4 preset", _prior_variants(FIRST_SIX, ("DFQ-ViT",))),
    ("CIFAR Swin", "lowbit_cifar-swin-set2", 0, "W4A8", "W4A8 preset", _prior_variants(RELATIVE, ("DFQ-ViT",))),
]


def priors_table() -> str:
    """DFQ-ViT images made with and without each synthesis-side prior (a low-pass, a tilted gradient, less colour),
    each calibrated under today's preset for its bits: top-1 / agreement / KL."""
    lines = ["| model | seed | bits (preset) | " + " | ".join(PRIOR_COLUMNS) + " |",
             "| --- | --- | --- |" + " --- |" * len(PRIOR_COLUMNS)]
    for model, name, seed, col, label, variants in PRIOR_ROWS:
        got = {c: _cell_of(name, PRIOR_SOURCES[c], col, variants[c]) for c in PRIOR_COLUMNS}
        if not any(got.values()):
            continue
        digits = 4 if any(v and v["kl"] < 0.1 for v in got.values()) else 3
        lines.append(f"| {model} | {seed} | {col} ({label}) | "
                     + " | ".join(cell(got[c], kl_digits=digits) for c in PRIOR_COLUMNS) + " |")
    return "\n".join(lines)


def real_count_table() -> str:
    """Real-image calibration by count (the `real` row of each file): the reconstruction, not the
    quantizer alone, makes use of more images."""
    sums: dict[str, dict] = {}
    entries = []
    for label, preset, sources in REAL_COUNT_ROWS:
        got: dict = {}
        for name, variant in sources:
            if name not in sums:
                path = RESULTS / f"{name}.json"
                sums[name] = summarize(Results(path, {})) if path.is_file() else {}
            got = {**sums[name].get(variant, {}).get("real", {}), **got}  # the first source wins a column
        entries.append((label, preset, got))
    return rows_markdown(entries, ["W4A8", "W4A4", "W3A3"])


def main() -> None:
    q = []
    for src in ("noise", "real", "dfq-vit"):
        for preset in ("basic", "+reparam (RepQ post-LN)", "+log√2 softmax", "+twin post-GELU", "+MSE weights",
                       "+GPTQ (MSE) weights", "+output-error ranges", "strong", "strong − GPTQ", "strong − output search",
                       "strong − GPTQ − search", "strong-synthetic", "strong + reconstruction"):
            q.append((src, preset, src))
    print("## ImageNet quantizer\n")
    print(table("quantizer_imagenet", q, ["W8A8", "W6A6", "W4A8", "W4A4"]))
    print("\n## ImageNet, every method, 500 iterations (GPU)\n")
    gpu_md = RESULTS / "imagenet_gpu.md"  # written by imagenet_gpu.py --report-only
    print(gpu_md.read_text() if gpu_md.is_file() else "(imagenet_gpu.md not written yet)")
    print("\n## Data gap (GPU, 500 iterations)\n")
    print(gpu_gap_table(["W8A8", "W4A8"]))
    print("\n## Data gap (CPU, 200 iterations)\n")
    print(gap_table(["W8A8", "W4A8"]))
    print("\n## Swap\n")
    print(swap_table())
    print("\n## Low bits\n")
    print(lowbit_table())
    print("\n## ONNX size\n")
    print(onnx_size_table())
    print("\n## Swap at W4A4\n")
    print(swap_table_w4a4())
    diag = RESULTS / "diagnosis_imagenet" / "report.md"
    if diag.is_file():
        print("\n## Diagnosis\n")
        print(diag.read_text().split("\n\n")[2])
    # deit-n128: cifar10_table.py --num-images 128 --tag=-n128; *-gpu: gpu_session.sh ... cifar10 (--tag=-gpu)
    for m in ("deit", "swin", "deit-n128", "deit-gpu", "swin-gpu"):
        path = RESULTS / f"cifar10_{m}.json"
        if path.is_file():
            cells = json.loads(path.read_text())["cells"]
            names = sorted({k.split("|")[0] for k in cells})
            presets = sorted({k.split("|")[2] for k in cells})
            print(f"\n## CIFAR-10 {m}\n")
            print(table(f"cifar10_{m}", [(n, p, n) for n in names for p in presets],
                        ["W8A8", "W6A6", "W4A8", "W4A4", "W4A3", "W3A3"], std=True))
            where = Counter(v.get("quantized_on", "not recorded") for v in cells.values())
            print("\ncells quantized on: " + ", ".join(f"{k} {n}" for k, n in sorted(where.items())))


LOWBIT_COLS = ["W6A6", "W4A8", "W4A4", "W3A3"]
LOWBIT_ROWS = [  # (label, quantizer variant, row of lowbit_imagenet.json)
    ("real", "strong", "real"),
    ("real", "strong + adalog", "real"),
    ("real", "strong + compensation", "real"),
    ("real", "strong-synthetic", "real"),
    ("real", "strong-synthetic + adalog", "real"),
    ("real", "strong-synthetic + compensation", "real"),
    ("real", "strong-synthetic + adalog + compensation", "real"),
    ("real", "strong+recon + compensation", "real"),
    ("dfq-vit", "strong-synthetic", "dfq-vit"),
    ("dfq-vit", "strong-synthetic + adalog", "dfq-vit"),
    ("dfq-vit", "strong-synthetic + compensation", "dfq-vit"),
    ("dfq-vit", "strong-synthetic + adalog + compensation", "dfq-vit"),
    ("dfq-vit", "strong", "dfq-vit"),
    ("dfq-vit", "strong + compensation", "dfq-vit"),
    ("dfq-vit + 200 steps logit/attention distillation", "strong-synthetic + adalog", "dfq-vit + distillation"),
    ("real", "strong + adalog + recon", "real"),
    ("dfq-vit", "strong-synthetic + adalog + recon", "dfq-vit"),
    ("real", "strong + adalog + adalog softmax", "real"),
    ("dfq-vit", "strong-synthetic + adalog + adalog softmax", "dfq-vit"),
    ("dfq-vit", "strong-synthetic + adalog + 4 views", "dfq-vit"),
    ("real", "strong + adalog + 4 views", "real"),
    ("real, 32 images as 128 crop/flip views", "strong + adalog", "real, 32 images as 128 crop/flip views"),
    ("dfq-vit, 32 images as 128 crop/flip views", "strong-synthetic + adalog", "dfq-vit, 32 images as 128 crop/flip views"),
    ("dfq-vit", "strong-synthetic + adalog + 4 views, no search", "dfq-vit"),
    ("dfq-vit", "strong-synthetic + adalog + 4 views + adalog softmax", "dfq-vit"),
    ("dfq-vit", "strong-synthetic + adalog + 8 views", "dfq-vit"),
    ("dfq-vit", "strong-synthetic + adalog + 16 views", "dfq-vit"),
    ("dfq-vit", "strong-synthetic + adalog + 4 views + recon", "dfq-vit"),
    ("dfq-vit", "strong-synthetic + adalog + 4 views + recon, lr 0.1", "dfq-vit"),
    ("dfq-vit", "strong-synthetic + adalog + 4 views + fisher recon, lr 0.1", "dfq-vit"),
    ("dfq-vit", "strong-synthetic + adalog + 4 views + recon of blocks 0-2", "dfq-vit"),
    ("real", "strong + adalog + fisher recon, lr 0.1", "real"),
    ("dfq-vit", "strong-synthetic + 4 views", "dfq-vit"),
    # the presets as they stand, on today's cached DFQ-ViT images (the rows above mix three syntheses)
    ("dfq-vit", "strong-synthetic, no recon", "dfq-vit"),
    ("dfq-vit", "strong-synthetic+recon", "dfq-vit"),
    ("psaq (faithful)", "strong-synthetic, no recon", "psaq"),
    ("psaq (faithful)", "strong-synthetic+recon", "psaq"),
    # the preset since 2026-12-03 (the first 6 blocks), on every synthesis method's 32 images
    ("dfq-vit", "strong-synthetic+recon, first 6 blocks", "dfq-vit"),
    ("psaq (faithful)", "strong-synthetic+recon, first 6 blocks", "psaq"),
    ("sardfq", "strong-synthetic, no recon", "sardfq"),
    ("sardfq", "strong-synthetic+recon, first 6 blocks", "sardfq"),
    ("mimiq", "strong-synthetic, no recon", "mimiq"),
    ("mimiq", "strong-synthetic+recon, first 6 blocks", "mimiq"),
    ("real", "strong+recon, fisher", "real"),
    ("real", "strong+recon, fisher, 300 steps", "real"),
]


def lowbit_table() -> str:
    """The low-bit table: dfqvit's rows from lowbit_imagenet.json, RepQ-ViT's own code from peers_repq_vit.json."""
    body = table("lowbit_imagenet", LOWBIT_ROWS, LOWBIT_COLS)
    peer = RESULTS / "peers_repq_vit.json"
    if peer.is_file():
        cells = json.loads(peer.read_text())["cells"]
        body += "\n| RepQ-ViT's own code, real (head at W/A bits) | its defaults | " + " | ".join(
            cell({**cells[c], "n": 1}) if c in cells else "–" for c in LOWBIT_COLS) + " |"
    return body


def swap_table() -> str:
    path = RESULTS / "swap_calibration.json"
    if not path.is_file():
        return "(swap_calibration.json not measured yet)"
    cells = json.loads(path.read_text())["cells"]
    base = json.loads((RESULTS / "quantizer_imagenet.json").read_text())["cells"]
    rows = [("all stages on DFQ-ViT images", base.get("dfq-vit|W4A8|strong − GPTQ|seed0"))]
    rows += [(k.split("|")[0], v) for k, v in cells.items() if k.endswith("|W4A8")]  # the W4A4 ones: lowbit
    rows += [("all stages on real images", base.get("real|W4A8|strong − GPTQ|seed0"))]
    lines = ["| W4A8, strong − GPTQ, no ACM | top-1 / agreement / KL |", "| --- | --- |"]
    lines += [f"| {name} | {cell(v)} |" for name, v in rows if v]
    return "\n".join(lines)


def onnx_size_table() -> str:
    """File sizes of the ImageNet ViT-Tiny exports (onnx_size.py)."""
    path = RESULTS / "onnx_size_imagenet.json"
    if not path.is_file():
        return "(onnx_size_imagenet.json not measured yet)"
    d = json.loads(path.read_text())
    lines = [f"| export | artefact, bit-packed | ONNX, ≤ 4-bit weights as UINT4 | ONNX, one byte per code | "
             f"ORT top-1 agreement with PyTorch ({d['images']} images) |", "| --- | --- | --- | --- | --- |",
             f"| FP32 | – | {d['fp32_bytes'] / 1e6:.2f} MB | – | – |"]
    for name, c in d["cells"].items():
        u4, u8 = c["uint4"], c["uint8"]
        lines.append(f"| {d['preset']} {name} | {c['packed_mb']:.2f} MB | {u4['bytes'] / 1e6:.2f} MB "
                     f"({u4['vs_fp32']:.2f}× FP32, opset {u4['opset']}) | {u8['bytes'] / 1e6:.2f} MB "
                     f"({u8['vs_fp32']:.2f}×) | {u4['agreement_with_pytorch']:.1f} % |")
    return "\n".join(lines)


def swap_table_w4a4() -> str:
    """Which calibration stage DFQ-ViT's images get wrong at W4A4 (swap_calibration.py --bits 4/4 --iterations 500)."""
    path = RESULTS / "swap_calibration.json"
    cells = json.loads(path.read_text())["cells"] if path.is_file() else {}
    rows = [(k.split("|")[0], v) for k, v in cells.items() if "|W4A4|500 iterations" in k]
    if not rows:
        return "(not measured yet)"
    lines = ["| W4A4, strong − GPTQ, no ACM, DFQ-ViT images | top-1 / agreement / KL |", "| --- | --- |"]
    lines += [f"| {name} | {cell(v)} |" for name, v in rows]
    return "\n".join(lines)


def swap_groups_table() -> str:
    """Which activation quantizers DFQ-ViT's images calibrate wrongly at W4A4 (swap_groups.py)."""
    path = RESULTS / "swap_groups.json"
    cells = json.loads(path.read_text())["cells"] if path.is_file() else {}
    names = {"synthetic": "every quantizer from DFQ-ViT images", "real": "every quantizer from real images"}
    rows = [(names.get(k.split("|")[0], k.split("|")[0]), v) for k, v in cells.items() if k.endswith("|W4A4")]
    if not rows:
        return "(not measured yet)"
    lines = ["| W4A4, strong-synthetic (4 views, no reconstruction) | quantizers | top-1 / agreement / KL |",
             "| --- | --- | --- |"]
    lines += [f"| {name} | {v.get('quantizers', '–')} | {cell(v)} |" for name, v in rows]
    return "\n".join(lines)


HEADLINE_COLS = ["W8A8", "W6A6", "W4A8", "W4A4"]
# row label → column → (results file, row, preset, note mark) or a peer file's cell name; † marks 32-image cells
HEADLINE = [
    ("dfqvit, data-free: `dfqvit run` (dfq-vit-natural images, preset auto → strong-synthetic, +recon at ≤ 4 bits)", {
        # one set of 32 (seed 0) of the default method, dfq-vit-natural: measured as the row `dfq-vit` with its two
        # priors as overrides (the same images: test_dfq_vit_natural_is_dfq_vit_with_the_two_priors...), under
        # today's presets (the images low-passed where `--calib-blur auto` finds them whiter than f^-2)
        "W8A8": ("lowbit_imagenet", NATURAL, "strong-synthetic, no recon, blur auto", "†"),
        "W6A6": ("lowbit_imagenet", NATURAL, "strong-synthetic, no recon, blur auto", "†"),
        # the preset auto takes at W4A8: every block, relative objective; at W4A4 the first 6 blocks on fresh views
        "W4A8": ("lowbit_imagenet", NATURAL, "strong-synthetic+recon, every block, relative, blur auto", "†"),
        "W4A4": ("lowbit_imagenet", NATURAL, "strong-synthetic+recon, first 6 blocks, fresh views, blur auto", "†")}),
    ("dfqvit, data-free, DFQ-ViT images as published: `--method dfq-vit --num-images 128 --acm-every 0`", {
        c: ("lowbit_imagenet", "dfq-vit", v, "†") for c, v in (
            ("W8A8", "strong-synthetic, no recon, blur auto"), ("W6A6", "strong-synthetic, no recon, blur auto"),
            ("W4A8", "strong-synthetic+recon, every block, relative, blur auto"),
            ("W4A4", "strong-synthetic+recon, first 6 blocks, fresh views, blur auto"))}),
    ("dfqvit, real `calib/` images: `--method real` (preset auto → strong on 32, +recon on 128 at ≤ 4 bits)", {
        "W8A8": ("quantizer_imagenet", "real", "strong", ""), "W6A6": ("quantizer_imagenet", "real", "strong", ""),
        # today's strong+recon (Fisher-weighted, lr 0.1) on the 128 images it takes by default
        "W4A8": ("lowbit_imagenet-n128", "real", "strong+recon, fisher", ""),
        "W4A4": ("lowbit_imagenet-n128", "real", "strong+recon, fisher", "")}),
]
PEERS = [  # (label, results file, column → cell name)
    ("RepQ-ViT's own code, 32 real images (head at the W/A bits)", "peers_repq_vit",
     {c: c for c in HEADLINE_COLS}),
    ("ONNX Runtime `quantize_static`, 32 real images (MatMul/Gemm, Percentile 99.99)", "peers_ort_static",
     {"W8A8": "MatMul/Gemm, Percentile 99.99"}),
]


def headline_table() -> str:
    """The README's one table: FP, dfqvit data-free and with real images, the peers run here."""
    sums: dict[str, dict] = {}
    fp = json.loads((RESULTS / "imagenet_gpu.json").read_text())["fp"]["top1"]
    lines = [f"| ImageNet ViT-Tiny, 1,000 `sample/` images, FP {fp:.1f} | " + " | ".join(HEADLINE_COLS) + " |",
             "| --- |" + " --- |" * len(HEADLINE_COLS)]
    for label, cols in HEADLINE:
        cells = []
        for c in HEADLINE_COLS:
            name, row, preset, mark = cols[c]
            if name not in sums:
                sums[name] = summarize(Results(RESULTS / f"{name}.json", {}))
            v = sums[name].get(preset, {}).get(row, {}).get(c)
            cells.append(cell(v) + mark if v else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for label, name, names in PEERS:
        path = RESULTS / f"{name}.json"
        got = json.loads(path.read_text())["cells"] if path.is_file() else {}
        lines.append(f"| {label} | " + " | ".join(cell({**got[names[c]], "n": 1}) if c in names and names[c] in got
                                                  else "–" for c in HEADLINE_COLS) + " |")
    return "\n".join(lines)


def runtime_table(file: str = "runtime_speed_imagenet.json", peer: bool = True) -> str:
    """ImageNet ViT-Tiny exports in ONNX Runtime and OpenVINO: parity with PyTorch, kernels, speed
    (runtime_speed.py --model imagenet), beside ONNX Runtime's own quantize_static (peers/ort_static.py)."""
    path = RESULTS / file
    if not path.is_file():
        return f"({file} not measured yet)"
    d = json.loads(path.read_text())
    lines = ["| export | PyTorch top-1 | ORT top-1 / agreement with PyTorch | ORT without its fusions: agreement | "
             "OpenVINO top-1 / agreement | integer kernels in ORT | float MatMul/Gemm left | MB |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, v in d.get("parity", {}).items():
        ints = ", ".join(f"{op} ×{n}" for op, n in v["integer_ops"].items()) or "none"
        ov = v.get("openvino")
        lines.append(f"| {name} | {v['pytorch_top1']:.1f} | {v['onnx_top1']:.1f} / {v['agreement']:.1f} | "
                     f"{v['unoptimized_agreement']:.1f} | " + (f"{ov['top1']:.1f} / {ov['agreement']:.1f}" if ov else "–")
                     + f" | {ints} | {v['float_matmuls_left']} | {v['onnx_bytes'] / 1e6:.2f} |")
    speed = d.get("speed", {})
    fp1, fp64 = speed.get("ONNX Runtime FP32|1"), speed.get("ONNX Runtime FP32|64")
    lines += ["", f"Speed, {d['threads']} thread(s), {d['machine']['device']}:", "",
              "| model | batch 1 ms/image | batch 64 images/s | × ORT FP32 at batch 1 | × ORT FP32 at batch 64 |",
              "| --- | --- | --- | --- | --- |"]
    for name in dict.fromkeys(k.rsplit("|", 1)[0] for k in speed):
        b1, b64 = speed.get(f"{name}|1"), speed.get(f"{name}|64")
        if b1 and b64 and fp1 and fp64:
            lines.append(f"| {name} | {1000 / b1:.1f} | {b64:.1f} | {b1 / fp1:.2f} | {b64 / fp64:.2f} |")
    if "ort_static" in d:  # timed in the same rounds as the rows above (runtime_speed.py --ort-static)
        st = d["ort_static"]
        lines += ["", f"ONNX Runtime quantize_static in this run: top-1 {st['top1']:.1f}, agreement with the float "
                  f"model {st['agreement_with_fp']:.1f} %, KL {st['kl_to_fp']:.3f}, {st['onnx_bytes'] / 1e6:.2f} MB; "
                  "speeds are medians of " + str(len(next(iter(d["speed_rounds"].values())))) + " interleaved rounds"]
    peer_path = RESULTS / "peers_ort_static.json"
    if peer and peer_path.is_file():
        p = json.loads(peer_path.read_text())
        fp = p["cells"]["ORT FP32"]
        lines += ["", f"ONNX Runtime's own `quantize_static` of the FP32 export ({p['peer']}; 32 real `calib/` images; "
                  f"{p['threads']} thread(s); its own ORT FP32 run: {1000 / fp['batch1_images_per_s']:.1f} ms/image, "
                  f"{fp['batch64_images_per_s']:.1f} images/s):", "",
                  "| quantize_static | top-1 / agreement with FP / KL | batch 1 ms/image | batch 64 images/s | "
                  "× its ORT FP32 at batch 1 / 64 | integer kernels | MB |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, c in p["cells"].items():
            if name == "ORT FP32":
                continue
            ints = ", ".join(f"{op} ×{n}" for op, n in c["integer_ops"].items())
            lines.append(f"| {name} | {c['top1']:.1f} / {c['agreement']:.1f} / {c['kl']:.3f} | "
                         f"{1000 / c['batch1_images_per_s']:.1f} | {c['batch64_images_per_s']:.1f} | "
                         f"{c['speedup_batch1']:.2f} / {c['speedup_batch64']:.2f} | {ints} | {c['bytes'] / 1e6:.2f} |")
    return "\n".join(lines)


QUANTIZER_ROWS = [(src, preset, src) for src in ("noise", "real", "dfq-vit") for preset in (
    "basic", "+reparam (RepQ post-LN)", "+log√2 softmax", "+twin post-GELU", "+MSE weights", "+GPTQ (MSE) weights",
    "+output-error ranges", "strong", "strong − GPTQ", "strong − output search", "strong − GPTQ − search",
    "strong-synthetic", "strong + reconstruction")]
CIFAR_COLS = ["W8A8", "W6A6", "W4A8", "W4A4", "W4A3", "W3A3"]


def cifar_table(m: str) -> str:
    """Every row × preset of results/cifar10_<m>.json, mean ± std over seeds."""
    cells = json.loads((RESULTS / f"cifar10_{m}.json").read_text())["cells"]
    names = sorted({k.split("|")[0] for k in cells})
    presets = sorted({k.split("|")[2] for k in cells})
    return table(f"cifar10_{m}", [(n, p, n) for n in names for p in presets], CIFAR_COLS, std=True)


def imagenet_methods_table() -> str:
    """The table lines of imagenet_gpu.py --report-only (every method at the papers' setting)."""
    import sys

    here = str(RESULTS.parent)
    if here not in sys.path:  # imported from the tests: benchmarks/ is not on the path
        sys.path.insert(0, here)
    from common import markdown
    from imagenet_gpu import NAMES

    md = markdown(Results(RESULTS / "imagenet_gpu.json", {}), NAMES, ["W8A8", "W6A6", "W4A8", "W4A4"], "")
    return "\n".join(line for line in md.splitlines() if line.startswith("|"))


def table_lines(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if line.startswith("|"))


GENERATED = {"lowbit": lowbit_table, "runtime": runtime_table,
             "runtime-int8": lambda: runtime_table("runtime_speed_imagenet-int8.json", peer=False),
             "imagenet-methods": imagenet_methods_table,
             "imagenet-quantizer": lambda: table_lines(table("quantizer_imagenet", QUANTIZER_ROWS,
                                                             ["W8A8", "W6A6", "W4A8", "W4A4"])),
             "data-gap-cpu": lambda: gap_table(["W8A8", "W4A8"]), "swap": swap_table,
             "cifar-deit-gpu": lambda: table_lines(cifar_table("deit-gpu")),
             "cifar-swin-gpu": lambda: table_lines(cifar_table("swin-gpu")), "onnx-size": onnx_size_table, "swap-w4a4": swap_table_w4a4,
             "swap-groups-w4a4": swap_groups_table, "real-count": real_count_table,
             "fresh-views": fresh_views_table, "recon-sets": recon_sets_table, "blur": blur_table, "priors": priors_table,
             "headline": headline_table}
ROOT = RESULTS.parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]  # where generated tables live


def fill(text: str) -> str:
    """The README with every `<!-- table:NAME -->` … `<!-- /table -->` block regenerated from the JSON."""
    import re

    def put(m: "re.Match") -> str:
        return f"<!-- table:{m.group(1)} -->\n{GENERATED[m.group(1)]()}\n<!-- /table -->"

    return re.sub(r"<!-- table:([\w-]+) -->\n.*?<!-- /table -->", put, text, flags=re.S)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] == ["--fill"]:  # the generated tables of README.md and docs/ (python -m benchmarks report)
        for doc in DOCUMENTS:
            doc.write_text(fill(doc.read_text()))
        sys.exit(0)
    main()
