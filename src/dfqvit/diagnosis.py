"""Which layers do synthetic calibration images get wrong? Compare each source's activation
statistics, layer by layer, with those of real images, and its Activation Correction
Matrices with the ones real images give.

Per block of the float model:
- `range`: |log2| of the ratio of the block output's per-tensor range (max − min) to real's;
- `channel_mean`: mean over channels of |μ_src − μ_real| / σ_real of the block output;
- `channel_range`: mean over channels of |log2| of the ratio of per-channel ranges;
- `softmax_entropy`: mean attention-row entropy minus real's (nats);
- `acm_cosine`: cosine similarity between the source's ACM of the block and real images' ACM
  (same quantizer; 1 = the same correction).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .models import LoadedModel, find_blocks, make_observable
from .models.attention import PointRecorder

METRICS = ("range", "channel_mean", "channel_range", "softmax_entropy", "acm_cosine")


@torch.no_grad()
def activation_stats(model: nn.Module, images: torch.Tensor, batch_size: int = 32) -> list[dict[str, torch.Tensor]]:
    """Per block: output min/max, per-channel mean/std/min/max, mean attention-row entropy."""
    blocks = [b for _, b in find_blocks(model)]
    outs: list[torch.Tensor] = []
    handles = [b.register_forward_hook(lambda _m, _i, o: outs.append(o.detach())) for b in blocks]
    probs = PointRecorder(model, "probs_point")
    acc: list[dict[str, Any]] = [dict(n=0, s=0.0, s2=0.0, lo=None, hi=None, ent=0.0, rows=0) for _ in blocks]
    try:
        for start in range(0, len(images), batch_size):
            outs.clear()
            probs.clear()
            model(images[start:start + batch_size])
            for a, o, p in zip(acc, outs, probs.values):
                flat = o.double().reshape(-1, o.shape[-1])
                a["n"] += flat.shape[0]
                a["s"] = a["s"] + flat.sum(0)
                a["s2"] = a["s2"] + (flat * flat).sum(0)
                lo, hi = flat.min(0).values, flat.max(0).values
                a["lo"] = lo if a["lo"] is None else torch.minimum(a["lo"], lo)
                a["hi"] = hi if a["hi"] is None else torch.maximum(a["hi"], hi)
                pp = p.double().clamp(min=1e-12)
                a["ent"] += float(-(pp * pp.log()).sum(-1).sum())
                a["rows"] += pp[..., 0].numel()
    finally:
        for h in handles:
            h.remove()
        probs.remove()
    stats = []
    for a in acc:
        mean = a["s"] / a["n"]
        std = (a["s2"] / a["n"] - mean * mean).clamp(min=0).sqrt()
        stats.append({"mean": mean, "std": std, "lo": a["lo"], "hi": a["hi"], "entropy": a["ent"] / max(a["rows"], 1)})
    return stats


def compare_stats(src: list[dict], ref: list[dict]) -> list[dict[str, float]]:
    """Per block, the distance metrics of `src` statistics to the reference (real) ones."""
    rows = []
    for s, r in zip(src, ref):
        eps = 1e-6
        rng_s, rng_r = float(s["hi"].max() - s["lo"].min()), float(r["hi"].max() - r["lo"].min())
        ch_s, ch_r = (s["hi"] - s["lo"]).clamp(min=eps), (r["hi"] - r["lo"]).clamp(min=eps)
        rows.append({
            "range": abs(math.log2(max(rng_s, eps) / max(rng_r, eps))),
            "channel_mean": float(((s["mean"] - r["mean"]).abs() / (r["std"] + eps)).mean()),
            "channel_range": float(torch.log2(ch_s / ch_r).abs().mean()),
            "softmax_entropy": s["entropy"] - r["entropy"],
        })
    return rows


def acm_matrices(loaded: LoadedModel, images: torch.Tensor, config, batch_size: int = 32) -> list[torch.Tensor]:
    from . import api

    q, _ = api.quantize(loaded, images, config, acm_every=1, batch_size=batch_size, progress=False)
    return [b.correction.detach().flatten().double() for b in q.blocks]


def compare_calibration(loaded: LoadedModel, sources: dict[str, torch.Tensor], reference: str = "real",
                        config=None, batch_size: int = 32) -> dict[str, Any]:
    """Distances of every source's statistics (and ACMs under `config`) to the reference source, per block."""
    from .quant.config import QuantConfig

    if reference not in sources:
        raise ValueError(f"the reference source '{reference}' is not among {list(sources)}")
    model = make_observable(__import__("copy").deepcopy(loaded.model)).eval()
    stats = {name: activation_stats(model, imgs, batch_size) for name, imgs in sources.items()}
    config = config or QuantConfig()
    acms = {name: acm_matrices(loaded, imgs, config, batch_size) for name, imgs in sources.items()}
    table: dict[str, list[dict[str, float]]] = {}
    for name in sources:
        if name == reference:
            continue
        rows = compare_stats(stats[name], stats[reference])
        for row, a, r in zip(rows, acms[name], acms[reference]):
            row["acm_cosine"] = float(torch.nn.functional.cosine_similarity(a, r, dim=0))
        table[name] = rows
    summary = {name: {m: sum(abs(r[m]) for r in rows) / len(rows) for m in METRICS} for name, rows in table.items()}
    worst = {name: sorted(range(len(rows)), key=lambda i: -rows[i]["channel_mean"])[:3] for name, rows in table.items()}
    return {"reference": reference, "quant_config": config.to_dict(), "per_block": table, "summary": summary,
            "worst_blocks": worst}


def write_diagnosis(result: dict[str, Any], directory: Path) -> None:
    """report.json, report.md (table + the blocks each source gets most wrong) and diagnosis.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (directory / "report.json").write_text(json.dumps({"model": result.get("model"), "diagnosis": result},
                                                      indent=2) + "\n")
    ref = result["reference"]
    lines = ["# dfqvit calibration diagnosis", "",
             f"Each source's block-output statistics against `{ref}` images (0 = identical; `acm_cosine` 1 = the same "
             "correction). Mean over blocks:", "",
             "| source | " + " | ".join(METRICS) + " | blocks furthest from real (channel means) |",
             "| --- |" + " --- |" * (len(METRICS) + 1)]
    for name, s in result["summary"].items():
        lines.append(f"| {name} | " + " | ".join(f"{s[m]:.3f}" for m in METRICS)
                     + f" | {', '.join(str(i) for i in result['worst_blocks'][name])} |")
    lines += ["", "Per block:", "", "| source | block | " + " | ".join(METRICS) + " |", "| --- | --- |"
              + " --- |" * len(METRICS)]
    for name, rows in result["per_block"].items():
        for i, r in enumerate(rows):
            lines.append(f"| {name} | {i} | " + " | ".join(f"{r[m]:.3f}" for m in METRICS) + " |")
    lines += ["", "![diagnosis](diagnosis.png)", ""]
    (directory / "report.md").write_text("\n".join(lines))
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), dpi=100)
    for name, rows in result["per_block"].items():
        for ax, m in zip(axes, ("channel_mean", "channel_range", "acm_cosine")):
            ax.plot([r[m] for r in rows], marker="o", label=name)
            ax.set_title(m, fontsize=10)
            ax.set_xlabel("block")
            ax.set_xticks(range(len(rows)))
            ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"distance of each calibration source to {ref} images, per block", fontsize=10)
    fig.tight_layout()
    fig.savefig(directory / "diagnosis.png")
    plt.close(fig)
