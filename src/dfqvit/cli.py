"""The `dfqvit` command: run | synthesize | quantize | evaluate | methods."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from .errors import DfqvitError


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help="timm model name (e.g. deit_tiny_patch16_224); default: the embedded tiny ViT")
    g.add_argument("--checkpoint", default=None, help="local weights file (.pth, .safetensors, .npz); never downloaded")
    g.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--quiet", action="store_true", help="no progress bars")


def _synthesis_args(p: argparse.ArgumentParser) -> None:
    from .synthesis.methods import METHODS

    g = p.add_argument_group("calibration images")
    g.add_argument("--method", default="dfq-vit", choices=list(METHODS), help="default: dfq-vit")
    g.add_argument("--calib-data", default=None, help="ImageNet-layout folder for --method real")
    g.add_argument("--num-images", type=int, default=32)
    g.add_argument("--batch-size", type=int, default=32)
    g.add_argument("--iterations", type=int, default=500)
    g.add_argument("--lr", type=float, default=0.2)
    g.add_argument("--schedule", default=None, choices=["none", "fixed", "e2h", "h2e"], help="override the method's crop schedule")
    g.add_argument("--crop-lower", type=float, default=0.08, help="δ_l of the crop schedules")
    g.add_argument("--crop-upper", type=float, default=1.0, help="δ_u of the crop schedules")
    g.add_argument("--amp", action="store_true", help="bf16 autocast on CUDA")
    g.add_argument("--checkpoint-every", type=int, default=50)
    g.add_argument("--resume", action="store_true", help="continue from <out>.partial/synthesis_checkpoint.pt")


def _quant_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("quantization")
    g.add_argument("--w-bits", type=int, default=4, help="weight bits, 2..8 (default 4)")
    g.add_argument("--a-bits", type=int, default=8, help="activation bits, 2..8 (default 8)")
    g.add_argument("--head-bits", type=int, default=8)
    g.add_argument("--embed-bits", type=int, default=8)
    g.add_argument("--weight-observer", default="minmax", choices=["minmax", "percentile", "mse"])
    g.add_argument("--act-observer", default="percentile", choices=["minmax", "percentile", "mse"])
    g.add_argument("--acm-every", type=int, default=None, help="ACM every γ blocks (0 = off); default: the method's")
    g.add_argument("--distill-steps", type=int, default=None, help="distillation steps (0 = off); default: the method's")
    g.add_argument("--distill-terms", default=None, help="comma list of logits,attention")
    g.add_argument("--distill-lr", type=float, default=1e-2, help="step-size lr, relative to each scale")
    g.add_argument("--distill-weight-lr", type=float, default=0.0, help="> 0 also learns weights")


def _quant_config(a: argparse.Namespace):
    from .quant.config import QuantConfig

    return QuantConfig(w_bits=a.w_bits, a_bits=a.a_bits, head_bits=a.head_bits, embed_bits=a.embed_bits,
                       weight_observer=a.weight_observer, act_observer=a.act_observer)


def _synthesis_options(a: argparse.Namespace):
    from .synthesis import SynthesisOptions

    return SynthesisOptions(num_images=a.num_images, batch_size=a.batch_size, iterations=a.iterations, lr=a.lr,
                            crop_lower=a.crop_lower, crop_upper=a.crop_upper, seed=a.seed, amp=a.amp,
                            checkpoint_every=a.checkpoint_every)


def cmd_run(a: argparse.Namespace) -> int:
    from .pipeline import RunOptions, run

    report = run(RunOptions(
        model=a.model, checkpoint=a.checkpoint, method=a.method, quant=_quant_config(a), synthesis=_synthesis_options(a),
        schedule=a.schedule, acm_every=a.acm_every, distill_steps=a.distill_steps,
        distill_terms=tuple(a.distill_terms.split(",")) if a.distill_terms else None, distill_lr=a.distill_lr,
        distill_weight_lr=a.distill_weight_lr, calib_data=a.calib_data, data=a.data, out=a.out, device=a.device,
        resume=a.resume, progress=not a.quiet))
    ev = report["evaluation"]
    print(f"{report['model']} {report['method']['name']} W{a.w_bits}A{a.a_bits}: top-1 {ev['top1']:.2f} "
          f"(FP {ev['fp']['top1']:.2f}), agreement {ev['agreement_top1']:.2f}; wrote {a.out}/")
    return 0


def cmd_synthesize(a: argparse.Namespace) -> int:
    from . import api
    from .models import load_model
    from .pipeline import CHECKPOINT_NAME
    from .report import write_report
    from .utils import atomic_output_dir, staging_dir

    loaded = load_model(a.model, a.checkpoint)
    ckpt = staging_dir(Path(a.out)) / CHECKPOINT_NAME
    with atomic_output_dir(a.out, keep_on_failure=(CHECKPOINT_NAME,)) as stage:
        syn = api.synthesize(loaded, a.method, _synthesis_options(a), a.device, ckpt, a.resume, a.calib_data, not a.quiet)
        syn.save(stage, loaded.data_config["mean"], loaded.data_config["std"])
        write_report(stage, {"model": loaded.name, "method": syn.method,
                             "synthesis": {"seconds": syn.seconds, "final_terms": syn.final_terms, "options": syn.options,
                                           "grid": "synthetic.png", "images": "synthetic.pt"}})
    print(f"wrote {len(syn.images)} images to {a.out}/synthetic.pt and {a.out}/synthetic.png ({syn.seconds:.1f} s)")
    return 0


def cmd_quantize(a: argparse.Namespace) -> int:
    from . import api
    from .correction.distill import DistillOptions
    from .errors import DataError
    from .export import save_quantized
    from .models import load_model
    from .report import write_report
    from .utils import atomic_output_dir

    loaded = load_model(a.model, a.checkpoint)
    if a.images:
        path = Path(a.images)
        if not path.is_file():
            raise DataError(f"calibration images not found: {path}")
        images = torch.load(path, map_location="cpu", weights_only=True)["images"]
        source = str(path)
    else:
        images, _ = api.real_images(loaded, a.calib_data, a.num_images, a.seed)
        source = a.calib_data or "digits train split"
    distill = None
    if a.distill_steps:
        distill = DistillOptions(steps=a.distill_steps, lr=a.distill_lr, weight_lr=a.distill_weight_lr,
                                 terms=tuple((a.distill_terms or "logits").split(",")), seed=a.seed)
    with atomic_output_dir(a.out) as stage:
        qmodel, info = api.quantize(loaded, images, _quant_config(a), a.acm_every or 0, distill, a.device,
                                    progress=not a.quiet)
        save_quantized(qmodel, loaded, stage / "quantized.safetensors")
        write_report(stage, {"model": loaded.name, "calibration_source": source, "quantize": info})
    print(f"wrote {a.out}/quantized.safetensors")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from . import api
    from .export import load_quantized
    from .models import load_model

    if a.quantized:
        model, loaded, _ = load_quantized(a.quantized)
        fp = None
        if loaded.name == "tiny-vit-digits" or a.checkpoint:
            fp = load_model(loaded.name, a.checkpoint).model
    else:
        loaded = load_model(a.model, a.checkpoint)
        model, fp = loaded.model, None
    result = api.evaluate(model, loaded, a.data, fp_model=fp, device=a.device, progress=not a.quiet)
    if a.save_logits:
        torch.save(api.predict_logits(model, loaded, a.data, a.device), a.save_logits)
    print(json.dumps(result, indent=2))
    return 0


def cmd_methods(a: argparse.Namespace) -> int:
    from .synthesis.methods import METHODS

    for m in METHODS.values():
        terms = ", ".join(f"{k}×{v:g}" for k, v in m.terms.items()) or "-"
        print(f"{m.name:8s} {m.description}\n         terms: {terms}; schedule: {m.schedule}; acm-every: {m.acm_every}; "
              f"distill-steps: {m.distill_steps}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dfqvit", description="Data-free quantization for Vision Transformers.")
    sub = p.add_subparsers(dest="verb", required=True)
    r = sub.add_parser("run", help="synthesize, quantize, calibrate, correct, evaluate and save, in one go")
    _model_args(r); _synthesis_args(r); _quant_args(r)
    r.add_argument("--data", default=None, help="ImageNet-layout folder to evaluate on (default for the tiny model: digits held-out)")
    r.add_argument("--out", default="dfqvit-out")
    r.set_defaults(fn=cmd_run)
    s = sub.add_parser("synthesize", help="make calibration images from the model alone")
    _model_args(s); _synthesis_args(s)
    s.add_argument("--out", default="dfqvit-synthetic")
    s.set_defaults(fn=cmd_synthesize)
    q = sub.add_parser("quantize", help="quantize and calibrate on saved synthetic images or a real folder")
    _model_args(q); _quant_args(q)
    q.add_argument("--images", default=None, help="synthetic.pt written by `dfqvit synthesize`")
    q.add_argument("--calib-data", default=None, help="ImageNet-layout folder of real calibration images")
    q.add_argument("--num-images", type=int, default=32)
    q.add_argument("--out", default="dfqvit-quantized")
    q.set_defaults(fn=cmd_quantize)
    e = sub.add_parser("evaluate", help="top-1 / top-5 / agreement of a float or saved quantized model")
    _model_args(e)
    e.add_argument("--quantized", default=None, help="quantized.safetensors written by run or quantize")
    e.add_argument("--data", default=None, help="ImageNet-layout folder (default for the tiny model: digits held-out)")
    e.add_argument("--save-logits", default=None, help="also write the logits to this .pt file")
    e.set_defaults(fn=cmd_evaluate)
    m = sub.add_parser("methods", help="list the registered methods")
    m.set_defaults(fn=cmd_methods)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except DfqvitError as exc:
        print(f"dfqvit: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dfqvit: interrupted (a synthesis checkpoint, if any, is kept for --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
