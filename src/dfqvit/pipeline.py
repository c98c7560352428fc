"""`run`: the whole chain, writing one output directory atomically."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import api
from .correction.distill import DistillOptions
from .data.colour import chroma_scale_on, chroma_scale_text
from .correction.reconstruct import ReconstructOptions
from .errors import CheckpointError, ConfigError
from .export import save_quantized
from .models import LoadedModel, load_model, load_model_config
from .models.loading import fingerprint
from .models.tiny import TINY_MODEL_NAME
from .outputs import atomic_output_dir, check_output_dir, release_output, staging_dir
from .quant.config import QuantConfig
from .report import write_report
from .synthesis import Method, SynthesisOptions, SynthesisResult, get_method
from .synthesis.methods import DEFAULT_METHOD  # noqa: F401 (the CLI reads it from here)
from .synthesis.loop import run_identity
from .utils import check_device

CHECKPOINT_NAME = "synthesis_checkpoint.pt"
FINISHED_IMAGES = "synthetic.pt"  # kept on failure: --resume after an interrupted quantization reuses them
DEFAULT_ACM_EVERY = 0  # `dfqvit run` without --method: ACM off (measured: it hurts with synthetic images)
DEFAULT_NUM_IMAGES = 128  # `dfqvit run` without --method: 128 images (measured: W4A8 +2.1 points over 32)
PAPERS_NUM_IMAGES = 32  # the papers' calibration set: `--num-images` when a method is named


@dataclass
class RunOptions:
    model: str | None = None
    checkpoint: str | None = None
    model_args: dict[str, Any] | str | None = None
    model_config: str | None = None  # JSON: timm model, model args, data config, weights, class names
    model_dir: str | None = None  # a local transformers image-classification folder
    class_names: list[str] | None = None
    method: str = DEFAULT_METHOD
    quant: QuantConfig = field(default_factory=QuantConfig)
    preset: str | None = None  # the preset `quant` came from (recorded in the report)
    synthesis: SynthesisOptions = field(default_factory=SynthesisOptions)
    schedule: str | None = None  # override the method's crop schedule
    gradient_tilt: float | None = None  # override the method's synthesis gradient tilt (Method.gradient_tilt)
    chroma_scale: float | tuple[float, float] | None = None  # override the method's synthesis chroma scale
    #                                                          (Method.chroma_scale; a pair: red-blue, green-magenta)
    acm_every: int | None = None  # override the method's γ
    acm_variant: str | None = None  # override the method's ACM variant
    distill_steps: int | None = None
    distill_terms: tuple[str, ...] | None = None
    distill_lr: float = 1e-2
    distill_weight_lr: float = 0.0
    reconstruct_steps: int = 0
    reconstruct: dict[str, Any] = field(default_factory=dict)  # ReconstructOptions fields: objective, lr, first_blocks
    calib_data: str | None = None
    data: str | None = None
    out: str = "dfqvit-out"
    overwrite: bool = False
    device: str | None = None
    resume: bool = False
    progress: bool = True
    skip_bad_images: bool = False
    export: str | None = None  # "onnx": also write model.onnx and measure it in ONNX Runtime
    threads: int | None = None  # CPU threads per process of `synthesize` (None: cores / processes)


def default_run_options(w_bits: int = QuantConfig.w_bits, a_bits: int = QuantConfig.a_bits,
                        **overrides: Any) -> RunOptions:
    """The best data-free combination measured, as `dfqvit run` without --method runs it: DFQ-ViT
    images, 128 of them, the `auto` preset at these bits (strong-synthetic; at ≤ 4-bit activations
    strong-synthetic+recon, with its reconstruction of the first blocks; at 4-bit weights over wider
    activations strong-synthetic+recon-relative, every block), no ACM.
    RunOptions() alone keeps each method as published (32 images, the method's own ACM)."""
    from .presets import DEFAULT_PRESET, get_preset, quant_config, resolve_preset

    quant = overrides.get("quant")
    if quant is not None and (quant.w_bits, quant.a_bits) != (w_bits, a_bits):
        raise ConfigError(f"quant= is W{quant.w_bits}A{quant.a_bits} but the preset was chosen for W{w_bits}A{a_bits}: "
                          f"pass default_run_options(w_bits={quant.w_bits}, a_bits={quant.a_bits}, ...)")
    preset = resolve_preset(DEFAULT_PRESET, real_images=False, w_bits=w_bits, a_bits=a_bits)
    chosen = get_preset(preset)
    base: dict[str, Any] = {"method": DEFAULT_METHOD, "acm_every": DEFAULT_ACM_EVERY, "preset": preset,
                            "quant": quant_config(preset, w_bits=w_bits, a_bits=a_bits),
                            "reconstruct_steps": chosen.reconstruct_steps, "reconstruct": dict(chosen.reconstruct),
                            "synthesis": SynthesisOptions(num_images=DEFAULT_NUM_IMAGES)}
    return RunOptions(**{**base, **overrides})


def load_for(opts: Any) -> LoadedModel:
    """The float model named by `--model-config`, `--model-dir`, or `--model` / `--checkpoint` / `--model-args`."""
    if getattr(opts, "model_dir", None):
        if opts.model_config:
            raise ConfigError("--model-dir and --model-config both name a model: give one")
        loaded = load_model(opts.model, opts.checkpoint, model_args=opts.model_args, hf_dir=opts.model_dir)
    elif opts.model_config:
        if opts.model or opts.checkpoint or opts.model_args:
            raise ConfigError("--model-config already names the model, its weights and overrides; "
                              "drop --model / --checkpoint / --model-args")
        loaded = load_model_config(opts.model_config)
    else:
        loaded = load_model(opts.model, opts.checkpoint, model_args=opts.model_args)
    if opts.class_names:
        if len(opts.class_names) != loaded.num_classes:
            raise ConfigError(f"{len(opts.class_names)} class names given, the model has {loaded.num_classes} classes")
        loaded.class_names = list(opts.class_names)
    return loaded


def check_image_budget(num_images: int, loaded: LoadedModel, where: Path | None = None) -> None:
    """Refuse, before any work, an image count whose images cannot exist here: in memory (`run`
    holds them all: at most half the machine's memory) or, for shards, on the disk under `where`."""
    import math
    import shutil

    size = tuple(loaded.data_config["input_size"])
    need = num_images * math.prod(size) * 4  # float32
    if where is None:
        try:
            have = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
        except (ValueError, OSError, AttributeError):
            return
        place = "half of this machine's memory"
    else:
        probe = where.parent
        while not probe.exists():
            probe = probe.parent
        have = shutil.disk_usage(probe).free
        place = f"the free disk space under {probe}"
    if need > have:
        hint = "; `dfqvit synthesize` writes them as shards and `quantize --images` streams them" if where is None else ""
        raise ConfigError(f"--num-images {num_images}: {need / 1e9:.3g} GB of {size} images do not fit in {place} "
                          f"({have / 1e9:.3g} GB){hint}")


def resolve_method(opts: RunOptions) -> Method:
    return get_method(opts.method).with_options(schedule=opts.schedule, gradient_tilt=opts.gradient_tilt,
                                                chroma_scale=opts.chroma_scale,
                                                acm_every=opts.acm_every,
                                                acm_variant=opts.acm_variant, distill_steps=opts.distill_steps,
                                                distill_terms=opts.distill_terms)


def distill_options(method: Method, opts: RunOptions) -> DistillOptions | None:
    if method.distill_steps <= 0:
        return None
    return DistillOptions(steps=method.distill_steps, terms=tuple(method.distill_terms), lr=opts.distill_lr,
                          weight_lr=opts.distill_weight_lr, batch_size=opts.synthesis.batch_size,
                          seed=opts.synthesis.seed)


def validate(opts: RunOptions) -> tuple[Method, DistillOptions | None, ReconstructOptions | None]:
    """Every check that needs no model and no data, so a bad value fails before any work."""
    check_device(opts.device)
    method = resolve_method(opts)
    if method.acm_every < 0:
        raise ConfigError(f"--acm-every must be >= 0, got {method.acm_every}")
    if not 0 <= method.gradient_tilt <= 4:  # NaN fails too
        raise ConfigError(f"--gradient-tilt must be in [0, 4] (1: a photograph's spectrum), got {method.gradient_tilt}")
    scales = method.chroma_scale if isinstance(method.chroma_scale, (tuple, list)) else (method.chroma_scale,)
    if len(scales) not in (1, 2) or not all(0 < s <= 1 for s in scales):  # NaN fails too
        raise ConfigError(f"--chroma-scale must be one value or two (red-blue, green-magenta), each in (0, 1] "
                          f"(1: off), got {chroma_scale_text(method.chroma_scale) if len(scales) <= 2 else scales}")
    if opts.export not in (None, "onnx"):
        raise ConfigError(f"--export must be onnx, got {opts.export!r}")
    if opts.resume and not method.synthesizes:
        raise ConfigError(f"--resume: method '{method.name}' optimises nothing, so there is nothing to resume")
    if method.source == "real" and opts.calib_data is None and opts.model_config is None \
            and opts.model not in (None, "", TINY_MODEL_NAME):
        raise ConfigError("--method real needs --calib-data FOLDER")
    for what, folder in (("--data", opts.data), ("--calib-data", opts.calib_data)):
        if folder is not None and not Path(folder).is_dir():
            raise ConfigError(f"{what} {folder}: folder not found")
    recon = ReconstructOptions(steps=opts.reconstruct_steps, batch_size=opts.synthesis.batch_size,
                               seed=opts.synthesis.seed, **opts.reconstruct) \
        if opts.reconstruct_steps else None
    check_output_dir(opts.out, opts.overwrite, opts.resume,
                     inputs=[("--calib-data", opts.calib_data), ("--data", opts.data), ("--checkpoint", opts.checkpoint),
                             ("--model-config", opts.model_config)])
    return method, distill_options(method, opts), recon


def parts_run(method: Method, quant: QuantConfig, n_images: int, distill: DistillOptions | None,
              recon: ReconstructOptions | None, qinfo: dict[str, Any]) -> list[str]:
    parts = []
    if method.source == "synthetic":
        terms = ", ".join(f"{k}×{v:g}" for k, v in method.terms.items())
        rounds = f"; {len(method.rounds)} rounds" if method.rounds else ""
        tilt = f"; gradient tilted to f^-{method.gradient_tilt:g}" if method.gradient_tilt else ""
        lowpass = f"; low-pass σ {method.lowpass:g} px" if method.lowpass else ""
        chroma = f"; chroma scaled by {chroma_scale_text(method.chroma_scale)}" \
            if chroma_scale_on(method.chroma_scale) else ""
        parts.append(f"synthesis[{method.name}: {terms}; crop schedule {method.schedule}; "
                     f"{'soft' if method.soft_labels else 'one-hot'} labels{rounds}{tilt}{lowpass}{chroma}]")
    else:
        parts.append(f"calibration images: {method.source}")
    extra = quant.parts()
    if quant.calib_blur == "auto" and "calibration_blur_sigma" in qinfo:
        extra.append(f"low-pass σ taken: {qinfo['calibration_blur_sigma']:g} px")
    parts.append(f"calibration[{n_images} images; {quant.weight_observer} weights, {quant.act_observer} activations"
                 f"{'; ' + ', '.join(extra) if extra else ''}]")
    if recon is not None:
        weighted = {"fisher": f"; Fisher-weighted (T={recon.fisher_temperature:g})",
                    "relative": "; error relative to each float token's variance"}.get(recon.objective, "")
        done = len(qinfo.get("reconstruct", {}).get("block_loss", []))
        which = ""
        if recon.first_blocks:  # a model shallower than the preset's reach: say that every block ran
            which = f"; first {recon.first_blocks} blocks" + (f": all {done}" if 0 < done < recon.first_blocks else "")
        fresh = "; a new crop/flip of its images every step" if recon.fresh_views else ""
        parts.append(f"block reconstruction[{recon.steps} steps per block: AdaRound + activation steps, QDrop"
                     f"{weighted}{which}{fresh}]")
    if distill is not None and distill.steps > 0:
        parts.append(f"distillation[{distill.steps} steps: {', '.join(distill.terms)}"
                     f"{'; weights learn' if distill.weight_lr > 0 else ''}]")
    if qinfo.get("acm_blocks"):
        parts.append(f"acm[{qinfo.get('acm_variant', 'mean')}; blocks {qinfo['acm_blocks']}]")
    return parts


SHARD_KEEP = ("synthetic-*.pt", "shard-*.ckpt.pt", CHECKPOINT_NAME)


def synthesize_folder(opts: RunOptions) -> dict[str, Any]:
    """`dfqvit synthesize`: shards + manifest + grid into `opts.out`, on every process torchrun started.

    Rank 0 checks and owns the output folder; the others write their shards into its staging
    folder after a barrier. Returns the report (on every rank)."""
    import torch

    from .synthesis.sharded import distributed_context

    rank, world = distributed_context()
    if opts.threads:
        torch.set_num_threads(opts.threads)
    elif world > 1 and not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    method = validate(opts)[0] if rank == 0 else resolve_method(opts)
    try:
        return _synthesize_folder(opts, method, rank, world)
    finally:
        if rank == 0:
            release_output(opts.out)


def _synthesize_folder(opts: RunOptions, method: Method, rank: int, world: int) -> dict[str, Any]:
    import torch

    from .synthesis.loop import save_grid
    from .synthesis.sharded import SHARD_PATTERN, barrier, load_shards, shard_count, synthesize_shards, write_manifest

    loaded = load_for(opts)
    if rank == 0:
        check_image_budget(opts.synthesis.num_images, loaded, Path(opts.out).expanduser().resolve())
    device = api.resolve_device(opts.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    out, stage = Path(opts.out), staging_dir(Path(opts.out))
    cfg = loaded.data_config

    def make_shards() -> None:
        if method.synthesizes:
            synthesize_shards(api.observable_copy(loaded.model), method, tuple(cfg["input_size"]), loaded.num_classes,
                              cfg["mean"], cfg["std"], opts.synthesis, stage, device, opts.resume, rank, world,
                              opts.progress)
        elif rank == 0:  # noise or real images: nothing to optimise, cut them into shards
            syn = api.synthesize(loaded, method, opts.synthesis, opts.device, calib_data=opts.calib_data,
                                 progress=False, skip_bad_images=opts.skip_bad_images)
            b = opts.synthesis.batch_size
            for i in range(shard_count(opts.synthesis)):
                torch.save({"images": syn.images[i * b:(i + 1) * b], "targets": syn.targets[i * b:(i + 1) * b],
                            "final_terms": {}, "seed": opts.synthesis.seed, "index": i}, stage / SHARD_PATTERN.format(i))

    if rank != 0:
        barrier()  # rank 0 has checked --out and created the staging folder
        make_shards()
        barrier()  # every shard written
        barrier()  # rank 0 has written the manifest and moved the folder
        _leave_process_group()
        return {}
    import time

    t0 = time.perf_counter()
    with atomic_output_dir(out, keep_on_failure=SHARD_KEEP, overwrite=opts.overwrite, resume=opts.resume) as stage_dir:
        barrier()
        make_shards()
        barrier()
        manifest = write_manifest(stage_dir, method, opts.synthesis, world)
        save_grid(load_shards(stage_dir, limit=64), cfg["mean"], cfg["std"], stage_dir / "synthetic.png")
        report = {"model": loaded.name, "model_args": loaded.arch_kwargs, "method": method.to_dict(),
                  "synthesis": {"seconds": time.perf_counter() - t0, "processes": world,
                                "threads_per_process": torch.get_num_threads(),
                                "num_images": opts.synthesis.num_images, "shards": len(manifest["shards"]),
                                "options": manifest["options"], "grid": "synthetic.png", "manifest": "manifest.json",
                                "final_terms": manifest["shards"][-1]["final_terms"]}}
        write_report(stage_dir, report)
    barrier()
    _leave_process_group()
    return report


def _leave_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def run(opts: RunOptions) -> dict[str, Any]:
    """Synthesize → quantize → calibrate → correct → evaluate → export into `opts.out`."""
    method, distill_opts, recon = validate(opts)  # takes the output's lock
    try:
        return _run(opts, method, distill_opts, recon)
    finally:
        release_output(opts.out)


def _run(opts: RunOptions, method: Method, distill_opts: DistillOptions | None,
         recon: ReconstructOptions | None) -> dict[str, Any]:
    import torch

    loaded = load_for(opts)
    check_image_budget(opts.synthesis.num_images, loaded)
    out = Path(opts.out)
    ckpt = staging_dir(out) / CHECKPOINT_NAME
    keep = (CHECKPOINT_NAME, FINISHED_IMAGES) if method.synthesizes else ()  # what --resume can continue from
    with atomic_output_dir(out, keep_on_failure=keep, overwrite=opts.overwrite, resume=opts.resume) as stage:
        cfg = loaded.data_config
        identity = run_identity(method, opts.synthesis, fingerprint(loaded.model)) if method.synthesizes else None
        finished = stage / FINISHED_IMAGES
        if opts.resume and finished.is_file():  # interrupted after synthesis: the images are done
            syn = SynthesisResult.load_finished(finished, identity, method, opts.synthesis)
        else:
            if opts.resume and not ckpt.is_file():
                raise CheckpointError(f"--resume: {staging_dir(out)} holds neither a synthesis checkpoint nor "
                                      f"finished images; start over with --overwrite")
            syn = api.synthesize(loaded, method, opts.synthesis, opts.device, ckpt, opts.resume, opts.calib_data,
                                 opts.progress, opts.skip_bad_images)
            syn.save(stage, cfg["mean"], cfg["std"], identity)
        qmodel, qinfo = api.quantize(loaded, syn.images, opts.quant, method.acm_every, distill_opts, opts.device,
                                     opts.synthesis.batch_size, opts.progress, recon, method.acm_variant)
        evaluation = api.evaluate(qmodel, loaded, opts.data, fp_model=loaded.model, device=opts.device,
                                  progress=opts.progress, skip_bad_images=opts.skip_bad_images)
        path = save_quantized(qmodel, loaded, stage / "quantized.safetensors", {"method": method.to_dict()})
        onnx_report = None
        if opts.export == "onnx":
            from .onnx_export import OnnxRuntimeModel, export_onnx

            info = export_onnx(qmodel, loaded, stage / "model.onnx")
            ort_eval = api.evaluate(OnnxRuntimeModel(stage / "model.onnx"), loaded, opts.data, fp_model=qmodel,
                                    device="cpu", progress=opts.progress, skip_bad_images=opts.skip_bad_images)
            onnx_report = {"file": "model.onnx", "ops": info["ops"], "bytes": info["bytes"], "top1": ort_eval["top1"],
                           "agreement_with_pytorch": ort_eval["agreement_top1"],
                           "kl_to_pytorch": ort_eval["kl_to_fp"], "images_per_s": ort_eval["images_per_s"]}
        fp_params = sum(p.numel() for p in loaded.model.parameters())
        report = {
            "model": loaded.name,
            "model_args": loaded.arch_kwargs,
            "method": method.to_dict(),
            "preset": opts.preset,
            "parts_run": parts_run(method, opts.quant, len(syn.images), distill_opts, recon, qinfo),
            "seed": opts.synthesis.seed,
            "device": str(api.resolve_device(opts.device)),
            "threads": torch.get_num_threads(),  # float sums (and so images) depend on it
            "synthesis": {"seconds": syn.seconds, "final_terms": syn.final_terms, "options": syn.options,
                          "resumed_from": syn.resumed_from, "grid": "synthetic.png", "images": "synthetic.pt"},
            "quantize": qinfo,
            "evaluation": evaluation,
            "sizes": {"fp32_mb": fp_params * 4 / 1e6, "packed_mb": qmodel.weight_bits_total() / 8 / 1e6,
                      "file_mb": path.stat().st_size / 1e6},
            "artefacts": {"quantized_model": "quantized.safetensors", "report": "report.md"},
        }
        if onnx_report:
            report["onnx"] = onnx_report
            report["artefacts"]["onnx"] = "model.onnx"
        write_report(stage, report)
    return report
