"""`run`: the whole chain, writing one output directory atomically."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import api
from .correction.distill import DistillOptions
from .errors import ConfigError
from .export import save_quantized
from .models import load_model
from .quant.config import QuantConfig
from .report import write_report
from .synthesis import SynthesisOptions, get_method
from .utils import atomic_output_dir, staging_dir

CHECKPOINT_NAME = "synthesis_checkpoint.pt"


@dataclass
class RunOptions:
    model: str | None = None
    checkpoint: str | None = None
    method: str = "dfq-vit"
    quant: QuantConfig = field(default_factory=QuantConfig)
    synthesis: SynthesisOptions = field(default_factory=SynthesisOptions)
    schedule: str | None = None  # override the method's crop schedule
    acm_every: int | None = None  # override the method's γ
    distill_steps: int | None = None
    distill_terms: tuple[str, ...] | None = None
    distill_lr: float = 1e-2
    distill_weight_lr: float = 0.0
    calib_data: str | None = None
    data: str | None = None
    out: str = "dfqvit-out"
    device: str | None = None
    resume: bool = False
    progress: bool = True


def parts_run(method, quant: QuantConfig, n_images: int, distill: DistillOptions | None, acm_blocks: list[int]) -> list[str]:
    parts = []
    if method.source == "synthetic":
        terms = ", ".join(f"{k}×{v:g}" for k, v in method.terms.items())
        parts.append(f"synthesis[{method.name}: {terms}; crop schedule {method.schedule}; "
                     f"{'soft' if method.soft_labels else 'one-hot'} labels]")
    else:
        parts.append(f"calibration images: {method.source}")
    parts.append(f"calibration[{n_images} images; {quant.weight_observer} weights, {quant.act_observer} activations]")
    if distill is not None and distill.steps > 0:
        parts.append(f"distillation[{distill.steps} steps: {', '.join(distill.terms)}"
                     f"{'; weights learn' if distill.weight_lr > 0 else ''}]")
    if acm_blocks:
        parts.append(f"acm[blocks {acm_blocks}]")
    return parts


def run(opts: RunOptions) -> dict[str, Any]:
    """Synthesize → quantize → calibrate → correct → evaluate → export into `opts.out`."""
    loaded = load_model(opts.model, opts.checkpoint)
    method = get_method(opts.method).with_options(schedule=opts.schedule, acm_every=opts.acm_every,
                                                  distill_steps=opts.distill_steps, distill_terms=opts.distill_terms)
    if method.source == "real" and opts.calib_data is None and loaded.name != "tiny-vit-digits":
        raise ConfigError("--method real needs --calib-data FOLDER")
    distill_opts = None
    if method.distill_steps > 0:
        distill_opts = DistillOptions(steps=method.distill_steps, terms=tuple(method.distill_terms), lr=opts.distill_lr,
                                      weight_lr=opts.distill_weight_lr, batch_size=opts.synthesis.batch_size,
                                      seed=opts.synthesis.seed)
    out = Path(opts.out)
    ckpt = staging_dir(out) / CHECKPOINT_NAME
    with atomic_output_dir(out, keep_on_failure=(CHECKPOINT_NAME,)) as stage:
        syn = api.synthesize(loaded, method, opts.synthesis, opts.device, ckpt, opts.resume, opts.calib_data, opts.progress)
        cfg = loaded.data_config
        syn.save(stage, cfg["mean"], cfg["std"])
        qmodel, qinfo = api.quantize(loaded, syn.images, opts.quant, method.acm_every, distill_opts, opts.device,
                                     opts.synthesis.batch_size, opts.progress)
        evaluation = api.evaluate(qmodel, loaded, opts.data, fp_model=loaded.model, device=opts.device,
                                  progress=opts.progress)
        path = save_quantized(qmodel, loaded, stage / "quantized.safetensors", {"method": method.to_dict()})
        fp_params = sum(p.numel() for p in loaded.model.parameters())
        report = {
            "model": loaded.name,
            "method": method.to_dict(),
            "parts_run": parts_run(method, opts.quant, len(syn.images), distill_opts, qinfo["acm_blocks"]),
            "seed": opts.synthesis.seed,
            "device": str(api.resolve_device(opts.device)),
            "synthesis": {"seconds": syn.seconds, "final_terms": syn.final_terms, "options": syn.options,
                          "grid": "synthetic.png", "images": "synthetic.pt"},
            "quantize": qinfo,
            "evaluation": evaluation,
            "sizes": {"fp32_mb": fp_params * 4 / 1e6, "packed_mb": qmodel.weight_bits_total() / 8 / 1e6,
                      "file_mb": path.stat().st_size / 1e6},
            "artefacts": {"quantized_model": "quantized.safetensors", "report": "report.md"},
        }
        write_report(stage, report)
    return report
