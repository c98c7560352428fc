"""Shared pieces of the benchmark scripts: models from ../shared, cached synthetic images,
decoded evaluation sets, one cell = quantize + evaluate, JSON written after every cell.

Synthetic images are cached under benchmarks/cache/ (git-ignored), keyed by model, method,
options and seed, so that every quantizer variant of a table calibrates on the same images.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from dfqvit import api
from dfqvit.correction.distill import DistillOptions
from dfqvit.correction.reconstruct import ReconstructOptions
from dfqvit.models import LoadedModel, load_model, load_model_config
from dfqvit.quant.config import QuantConfig
from dfqvit.synthesis import Method, SynthesisOptions

ROOT = Path(__file__).resolve().parent
# ../shared beside the checkout; DFQVIT_SHARED points elsewhere (a GPU machine gets a copy inside the repo)
SHARED = Path(os.environ.get("DFQVIT_SHARED", ROOT.parent / ".." / "shared")).resolve()
CACHE = Path(os.environ.get("DFQVIT_CACHE", ROOT / "cache"))  # another folder: e.g. image sets a GPU made
RESULTS = ROOT / "results"


def shared(path: str) -> Path:
    p = SHARED / path
    if not p.exists():
        raise SystemExit(f"{p} not found: these benchmarks read ../shared (see its README)")
    return p


def machine() -> dict[str, Any]:
    """Where a cell ran. The CPU's vector unit is part of it: the same seed gives the same synthetic images on
    one machine, not always across them (the ImageNet DFQ-ViT set re-synthesized on 2026-12-03 differed)."""
    return {"device": "cuda: " + torch.cuda.get_device_name() if torch.cuda.is_available() else
            f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads, "
            f"{torch.backends.cpu.get_cpu_capability()})",
            "torch": torch.__version__, "platform": platform.platform()}


def speed_model(timm_name: str | None, config: str | None, device: torch.device) -> tuple[LoadedModel, torch.nn.Module, str]:
    """The model a speed benchmark times: a config, a randomly initialised timm model (speed does
    not depend on the weights), or the embedded tiny ViT. Returns it loaded, its observable copy on
    `device` with frozen weights (what synthesis runs), and a name for result files — a config is
    named by its file (the CIFAR DeiT is a deit_tiny_patch16_224 at 32 px: its own name)."""
    if config:
        loaded = load_model_config(config)
    elif timm_name:
        import timm

        net = timm.create_model(timm_name, pretrained=False).eval()
        loaded = LoadedModel(net, timm_name, dict(timm.data.resolve_data_config({}, model=net)))
    else:
        loaded = load_model()
    model = api.observable_copy(loaded.model).to(device)
    for prm in model.parameters():
        prm.requires_grad_(False)
    name = timm_name or (config and Path(config).stem) or "tiny"
    return loaded, model, name.replace("/", "_")


def load(config: str) -> LoadedModel:
    return load_model_config(shared(config))


def eval_set(loaded: LoadedModel, folder: str, limit: int | None = None, per_class: int | None = None,
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoded evaluation images, cached as a tensor file; optionally the first `per_class` of each class."""
    key = hashlib.sha1(json.dumps([folder, loaded.data_config, per_class, limit], default=str).encode()).hexdigest()[:12]
    path = CACHE / f"eval-{key}.pt"
    if path.is_file():
        d = torch.load(path, weights_only=True)
        return d["x"], d["y"]
    x, y = api.load_eval_tensors(loaded, shared(folder))
    if per_class is not None:
        keep = torch.cat([torch.nonzero(y == c).flatten()[:per_class] for c in y.unique()]).sort().values
        x, y = x[keep], y[keep]
    if limit is not None:
        x, y = x[:limit], y[:limit]
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save({"x": x, "y": y}, tmp)
    os.replace(tmp, path)
    return x, y


def cache_path(loaded: LoadedModel, method: Method, options: SynthesisOptions, calib_folder: str | None = None,
               ) -> tuple[Path, dict[str, Any]]:
    """Where calibration_images keeps the images of (model, method, options, calib folder), and that spec."""
    spec = {"model": loaded.name, "args": loaded.arch_kwargs, "method": method.to_dict(), "options": asdict(options),
            "calib": calib_folder}
    key = hashlib.sha1(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return CACHE / f"syn-{method.name}-{key}.pt", spec


def calibration_images(loaded: LoadedModel, method: Method, options: SynthesisOptions, calib_folder: str | None = None,
                       device: str = "auto") -> tuple[torch.Tensor, float]:
    """(images, seconds it took to make them); synthesized once per key, then read from the cache.

    The key holds `calib_folder` for every method (as run_grid passes it): pass the same folder
    to find the images a table made."""
    path, spec = cache_path(loaded, method, options, calib_folder)
    if path.is_file():
        d = torch.load(path, weights_only=True)
        return d["images"], float(d["seconds"])
    syn = api.synthesize(loaded, method, options, device, calib_data=shared(calib_folder) if calib_folder else None,
                         progress=False)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")  # parallel workers never read a half-written set
    torch.save({"images": syn.images, "seconds": syn.seconds, "spec": json.dumps(spec, default=str)}, tmp)
    os.replace(tmp, path)
    return syn.images, syn.seconds


def cell(loaded: LoadedModel, images: torch.Tensor, config: QuantConfig, eval_x: torch.Tensor, eval_y: torch.Tensor,
         fp_logits: torch.Tensor, acm_every: int = 0, acm_variant: str = "mean", distill: DistillOptions | None = None,
         reconstruct_steps: int = 0, device: str = "auto", seed: int = 0,
         reconstruct_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Quantize on `images`, evaluate on (eval_x, eval_y): top-1, agreement and KL against the FP logits.
    `reconstruct_overrides`: ReconstructOptions fields other than steps and seed (e.g. the objective)."""
    t0 = time.perf_counter()
    recon = ReconstructOptions(steps=reconstruct_steps, seed=seed, **(reconstruct_overrides or {})) \
        if reconstruct_steps else None
    q, info = api.quantize(loaded, images, config, acm_every, distill, device, progress=False,
                           reconstruct_options=recon, acm_variant=acm_variant)
    quantize_s = time.perf_counter() - t0
    ev = api.evaluate(q, loaded, (eval_x, eval_y), device=device, progress=False, fp_logits=fp_logits)
    return {"top1": ev["top1"], "agreement": ev["agreement_top1"], "kl": ev["kl_to_fp"], "quantize_s": quantize_s,
            "images_per_s": ev["images_per_s"]}


def fp_reference(loaded: LoadedModel, eval_x: torch.Tensor, eval_y: torch.Tensor, device: str = "auto") -> dict:
    ev = api.evaluate(loaded.model, loaded, (eval_x, eval_y), device=device, progress=False, return_logits=True)
    return {"top1": ev["top1"], "images_per_s": ev["images_per_s"], "logits": ev["logits"]}


class Results:
    """A JSON file rewritten after every cell, so a long table survives an interruption; cells
    already present are skipped when the script runs again."""

    def __init__(self, path: Path, header: dict[str, Any]) -> None:
        self.path = path
        self.data = json.loads(path.read_text()) if path.is_file() else {}
        self.data.update(header)
        self.data.setdefault("cells", {})

    def has(self, key: str) -> bool:
        return key in self.data["cells"]

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.data["cells"][key] = value
        self.save()

    def save(self) -> None:
        """Merge with the cells on disk first (under a lock): two scripts may fill one file."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.path.is_file():
                on_disk = json.loads(self.path.read_text()).get("cells", {})
                self.data["cells"] = {**on_disk, **self.data["cells"]}
            tmp = self.path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(self.data, indent=1, default=str) + "\n")
            os.replace(tmp, self.path)


# ---------------------------------------------------------------------------------------------
# A table: rows are calibration sources (a method + its corrections), columns are bit settings,
# one table per quantizer preset; cells averaged over seeds.

def row(name: str, method: str, acm: int = 0, distill: int = 0, acm_variant: str = "mean", **overrides: Any) -> dict:
    return {"name": name, "method": method, "acm": acm, "distill": distill, "acm_variant": acm_variant,
            "overrides": overrides}


def augmented_views(images: torch.Tensor, n: int, seed: int = 0, scale: tuple[float, float] = (0.25, 1.0)
                    ) -> torch.Tensor:
    """`images` followed by random-resized crops (area `scale`) with random flips of them, n in all:
    the synthesis augmentations as more calibration views of the same few images."""
    from dfqvit.synthesis.schedules import apply_crop, crop_theta

    gen = torch.Generator().manual_seed(seed)
    extra = n - len(images)
    if extra <= 0:
        return images[:n]
    src = images[torch.randint(len(images), (extra,), generator=gen)]
    views = apply_crop(src, crop_theta(extra, scale, gen))
    flip = torch.rand(extra, generator=gen) < 0.5
    views[flip] = views[flip].flip(-1)
    return torch.cat([images, views])


def images_fingerprint(images: torch.Tensor) -> str:
    """The first 12 hex digits of the images' SHA-1: cells calibrated on the same set share it."""
    return hashlib.sha1(images.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:12]


def cell_key(name: str, w_bits: int, a_bits: int, preset: str, seed: int) -> str:
    """A cell's key in a Results file: row|WxAy|preset|seedN (summarize splits it back)."""
    return f"{name}|W{w_bits}A{a_bits}|{preset}|seed{seed}"


def run_grid(loaded: LoadedModel, eval_x: torch.Tensor, eval_y: torch.Tensor, rows: list[dict],
             bits: list[tuple[int, int]], presets: list[str], seeds: list[int], synthesis: SynthesisOptions,
             calib_folder: str | None, results: Results, device: str = "auto", log=print,
             preset_overrides: dict[str, dict] | None = None, fp: dict | None = None,
             deadline: float | None = None) -> None:
    """Fill `results` cell by cell (skipping cells it already has).

    `fp`: the FP reference (fp_reference) when the caller has it; `deadline`: a time.monotonic()
    after which no new cell starts (a time-boxed run on a lent GPU)."""
    from dataclasses import replace

    from dfqvit.presets import get_preset, quant_config
    from dfqvit.synthesis import get_method

    fp = fp or fp_reference(loaded, eval_x, eval_y, device)
    results.data["fp"] = {"top1": fp["top1"], "images_per_s": fp["images_per_s"], "images": len(eval_y)}
    results.save()
    for r in rows:
        method = get_method(r["method"]).with_options(**r["overrides"])
        for seed in seeds:
            opts = replace(synthesis, seed=seed)
            images = None
            for preset in presets:
                for w, a in bits:
                    key = cell_key(r["name"], w, a, preset, seed)
                    if results.has(key):
                        continue
                    if deadline is not None and time.monotonic() > deadline:
                        log(f"{key}: skipped, past the deadline")
                        return
                    if images is None:
                        images, syn_s = calibration_images(loaded, method, opts, calib_folder, device)
                        for other in r.get("also", ()):  # more images without new synthesis: cached sets joined
                            more, more_s = calibration_images(loaded, get_method(other), opts, calib_folder, device)
                            images, syn_s = torch.cat([images, more]), syn_s + more_s
                        for other_seed in r.get("also_seeds", ()):  # the same method's sets of other seeds joined
                            more, more_s = calibration_images(loaded, method, replace(opts, seed=other_seed),
                                                              calib_folder, device)
                            images, syn_s = torch.cat([images, more]), syn_s + more_s
                        if r.get("first"):  # a subset of the set: the same images, fewer of them
                            images = images[:r["first"]]
                        if r.get("views"):
                            images = augmented_views(images, r["views"], seed)
                        images_sha1 = images_fingerprint(images)  # which image set: a re-synthesis may differ
                    extra = (preset_overrides or {}).get(preset, {})
                    # the tables' cells were measured on the calibration images alone; views only where named
                    cfg = quant_config(extra.get("base", preset), w_bits=w, a_bits=a,
                                       **{"calib_views": 1, **{k: v for k, v in extra.items()
                                                               if k not in ("base", "reconstruct_steps", "reconstruct")}})
                    base = get_preset(extra.get("base", preset))
                    steps = extra.get("reconstruct_steps", base.reconstruct_steps)
                    recon = {**base.reconstruct, **extra.get("reconstruct", {})}
                    terms = tuple(r.get("distill_terms") or method.distill_terms)  # a row may pick its own
                    distill = DistillOptions(steps=r["distill"], terms=terms, seed=seed) if r["distill"] else None
                    out = cell(loaded, images, cfg, eval_x, eval_y, fp["logits"], r["acm"], r["acm_variant"],
                               distill, steps, device, seed, recon)
                    out["synthesis_s"] = syn_s
                    out["images_sha1"] = images_sha1
                    out["quantized_on"] = machine()["device"]  # a table may mix machines (images from a GPU)
                    results.put(key, out)
                    log(f"{key}: top-1 {out['top1']:.2f} agreement {out['agreement']:.2f} KL {out['kl']:.4f} "
                        f"(quantize {out['quantize_s']:.0f} s)")


def summarize(results: Results) -> dict[str, dict[str, dict[str, float]]]:
    """preset → row → column → {top1, top1_std, agreement, kl, n, synthesis_s, quantize_s}."""
    import statistics

    groups: dict[tuple[str, str, str], list[dict]] = {}
    for key, v in results.data["cells"].items():
        name, col, preset, _ = key.split("|")
        groups.setdefault((preset, name, col), []).append(v)
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for (preset, name, col), vals in groups.items():
        t = [v["top1"] for v in vals]
        out.setdefault(preset, {}).setdefault(name, {})[col] = {
            "top1": statistics.fmean(t), "top1_std": statistics.stdev(t) if len(t) > 1 else 0.0,
            "agreement": statistics.fmean(v["agreement"] for v in vals),
            "kl": statistics.fmean(v["kl"] for v in vals), "n": len(vals),
            "synthesis_s": statistics.fmean(v.get("synthesis_s", 0.0) for v in vals),
            "quantize_s": statistics.fmean(v["quantize_s"] for v in vals)}
    return out


def markdown(results: Results, rows: list[str], cols: list[str], title: str) -> str:
    s = summarize(results)
    fp = results.data.get("fp", {})
    lines = [f"### {title}", "",
             f"FP top-1 {fp.get('top1', float('nan')):.2f} on {fp.get('images', '?')} images. "
             "Cells: top-1 % (± std over seeds where > 1) / top-1 agreement with FP % / mean KL(FP ‖ quantized).", ""]
    for preset, table in s.items():
        lines += [f"Quantizer preset `{preset}`:", "",
                  "| calibration | " + " | ".join(cols) + " | synthesis s | quantize s |",
                  "| --- |" + " --- |" * (len(cols) + 2)]
        for name in rows:
            if name not in table:
                continue
            cells = []
            for c in cols:
                v = table[name].get(c)
                if v is None:
                    cells.append("–")
                    continue
                std = f" ± {v['top1_std']:.1f}" if v["n"] > 1 else ""
                cells.append(f"{v['top1']:.1f}{std} / {v['agreement']:.1f} / {v['kl']:.3f}")
            anyc = next(iter(table[name].values()))
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {anyc['synthesis_s']:.0f} | {anyc['quantize_s']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def plot(results: Results, rows: list[str], cols: list[str], path: Path, title: str, preset: str) -> None:
    """Top-1 against bit setting, a line per calibration source, FP as a horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarize(results).get(preset, {})
    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for name in rows:
        if name not in table:
            continue
        present = [c for c in cols if c in table[name]]
        ax.errorbar(present, [table[name][c]["top1"] for c in present],
                    yerr=[table[name][c]["top1_std"] for c in present], marker="o", capsize=3, label=name)
    ax.axhline(results.data["fp"]["top1"], color="black", linestyle="--", label="FP")
    ax.set_xlabel("bits (weights / activations)")
    ax.set_ylabel("top-1 %")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def image_grid(images: torch.Tensor, loaded: LoadedModel, path: Path, nrow: int = 8, limit: int | None = None,
               size: int | None = None) -> None:
    """A grid of the first `limit` images, each resized to `size` px (keeps 224-px grids small in git)."""
    from dfqvit.synthesis.loop import save_grid

    images = images[:limit] if limit else images
    if size:
        images = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_grid(images, loaded.data_config["mean"], loaded.data_config["std"], path)
