"""The `dfqvit` command: run | synthesize | quantize | evaluate | methods | models.

Every verb checks all of its values (numbers, device, output location, folders, files)
before it loads a model or starts any work; a bad one is one `dfqvit: error: …` line
and exit status 2, with nothing written.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .errors import DfqvitError


class Formatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each option's default, except None: an option whose default depends on others says so."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)

    def _split_lines(self, text: str, width: int) -> list[str]:  # names such as dfq-vit-natural stay whole
        import textwrap

        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="timm model name (e.g. deit_tiny_patch16_224; `dfqvit models` lists the tested ones); "
                        "none: the embedded tiny ViT")
    g.add_argument("--checkpoint", default=None, help="local weights file (.pth, .safetensors, .npz); never downloaded")
    g.add_argument("--model-args", default=None,
                   help="architecture overrides for timm.create_model, e.g. img_size=32,patch_size=4,num_classes=10")
    g.add_argument("--model-config", default=None,
                   help="JSON naming timm model, model_args, data_config, weights (relative to the JSON), class_names")
    g.add_argument("--model-dir", default=None,
                   help="local transformers image-classification folder (config.json, model.safetensors, "
                        "preprocessor_config.json): ViT, DeiT or Swin; read offline, checked against transformers")
    g.add_argument("--class-names", default=None, help="file with one class name per line, in class-index order")
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    g.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads per process (default: torch's, all cores; with --nproc N, cores / N). Float "
                        "sums depend on it: synthetic sets are bit-identical across --nproc at equal --threads")
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    g.add_argument("--skip-bad-images", action="store_true",
                   help="leave unreadable images out (the report names them) instead of refusing the folder")


def chroma_scale_arg(text: str) -> float | tuple[float, float]:
    """`--chroma-scale 0.3` (every chroma axis) or `0.28,0.13` (red-blue, green-magenta)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or two (red-blue,green-magenta), got {text!r}") from None
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"expected a number or two (red-blue,green-magenta), got {text!r}")
    return values[0] if len(values) == 1 else values


def _synthesis_args(p: argparse.ArgumentParser) -> None:
    from .pipeline import DEFAULT_METHOD
    from .synthesis.methods import METHODS

    g = p.add_argument_group("calibration images")
    g.add_argument("--method", default=DEFAULT_METHOD, choices=list(METHODS), action=_NamedMethod,
                   help="where calibration images come from (`dfqvit methods` describes each); `run` without it: "
                        "dfq-vit-natural images, 128 of them, preset auto, no ACM (the best data-free combination measured)")
    g.add_argument("--calib-data", default=None, help="ImageNet-layout folder for --method real")
    g.add_argument("--num-images", type=int, default=None,
                   help="calibration images to make or take (default: 32, the papers'; 128 for `run` without --method "
                        "and for real images under strong+recon)")
    g.add_argument("--batch-size", type=int, default=32, help="images optimised together")
    g.add_argument("--iterations", type=int, default=500, help="per round")
    g.add_argument("--lr", type=float, default=0.2, help="Adam learning rate of the images")
    g.add_argument("--schedule", default=None, choices=["none", "fixed", "e2h", "h2e"],
                   help="override the method's crop schedule")
    g.add_argument("--gradient-tilt", type=float, default=None,
                   help="scale each step's image gradient's Fourier amplitudes by f^-α (energy kept) before Adam, so "
                        "large structures grow as fast as texture (1: a photograph's f^-2 spectrum; 0 = off; "
                        "default: the method's)")
    g.add_argument("--chroma-scale", type=chroma_scale_arg, default=None,
                   help="scale the colour (each pixel's deviation from its grey) of the starting noise and of each "
                        "step's change by this, in (0, 1], or by two values, red-blue,green-magenta (e.g. 0.28,0.13): "
                        "photographs vary far less in colour than in brightness (1 = off; default: the method's)")
    g.add_argument("--crop-lower", type=float, default=0.08, help="δ_l of the crop schedules")
    g.add_argument("--crop-upper", type=float, default=1.0, help="δ_u of the crop schedules")
    g.add_argument("--amp", action="store_true", help="synthesize through a bf16 copy of the model (for GPUs; images and Adam stay fp32)")
    g.add_argument("--checkpoint-every", type=int, default=50, help="iterations between synthesis checkpoints")
    g.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                   help="run every synthesis step eagerly on CUDA instead of replaying it as a CUDA graph")
    g.add_argument("--resume", action="store_true", help="continue from <out>.partial/synthesis_checkpoint.pt")


def _quant_args(p: argparse.ArgumentParser) -> None:
    from .presets import AUTO, DEFAULT_PRESET, PRESETS
    from .correction.acm import ACM_VARIANTS
    from .correction.reconstruct import OBJECTIVES as RECON_OBJECTIVES
    from .quant.config import ACT_COMPENSATIONS, ACT_SEARCHES, MLP_ACTIVATIONS, REPARAMS, WEIGHT_ROUNDINGS
    from .quant.quantizers import GELU_QUANTIZERS, SOFTMAX_QUANTIZERS
    from .quant.observers import OBSERVERS

    g = p.add_argument_group("quantization (unset options take the preset's value)")
    g.add_argument("--preset", default=DEFAULT_PRESET, choices=[AUTO, *PRESETS],
                   help="quantizer preset; auto: strong for real calibration images, strong-synthetic (no GPTQ) otherwise, "
                        "each +recon (block reconstruction) at <= 4-bit weights or activations (synthetic images at "
                        "4-bit weights over wider activations: strong-synthetic+recon-relative, every block)")
    g.add_argument("--w-bits", type=int, default=4, help="weight bits, 2..8")
    g.add_argument("--a-bits", type=int, default=8, help="activation bits, 2..8")
    g.add_argument("--head-bits", type=int, default=8, help="classifier weight and input bits")
    g.add_argument("--embed-bits", type=int, default=8, help="patch-embedding weight and input bits")
    g.add_argument("--weight-observer", default=None, choices=list(OBSERVERS), help="weight range search")
    g.add_argument("--act-observer", default=None, choices=list(OBSERVERS), help="activation range search")
    g.add_argument("--reparam", default=None, choices=list(REPARAMS),
                   help="fold per-channel ranges into float parameters: postln (RepQ-ViT) or all (+ attention output)")
    g.add_argument("--reparam-skip-blocks", type=int, default=None,
                   help="the first N blocks keep per-tensor post-LayerNorm inputs (synthetic images misjudge their scales)")
    g.add_argument("--act-search", default=None, choices=list(ACT_SEARCHES),
                   help="output: choose Linear-input ranges by the layer's output error")
    g.add_argument("--softmax-quantizer", default=None, choices=list(SOFTMAX_QUANTIZERS),
                   help="attention-probability quantizer")
    g.add_argument("--gelu-quantizer", default=None, choices=list(GELU_QUANTIZERS), help="fc2-input quantizer")
    g.add_argument("--weight-rounding", default=None, choices=list(WEIGHT_ROUNDINGS),
                   help="round to nearest, or GPTQ error compensation")
    g.add_argument("--gptq-damp", type=float, default=None,
                   help="GPTQ's damping: a ridge of this fraction of the input Hessian's mean diagonal (default 0.01; "
                        "larger trusts the calibration images' input correlations less)")
    g.add_argument("--act-compensation", default=None, choices=list(ACT_COMPENSATIONS),
                   help="ridge: re-fit each Linear's weights to its rounded inputs before rounding them (ERQ)")
    g.add_argument("--mlp-activation", default=None, choices=list(MLP_ACTIVATIONS),
                   help="relu: every MLP's GELU replaced by a ReLU with fc1/fc2 re-fitted on the calibration images "
                        "(APHQ-ViT's MLP reconstruction: a post-ReLU fc2 input suits a uniform grid at <= 4 bits)")
    g.add_argument("--calib-views", type=int, default=None,
                   help="calibration views per image: k > 1 adds k − 1 random-resized crops/flips of each image "
                        "(default: the preset's; strong-synthetic takes 4)")
    g.add_argument("--calib-blur", type=_blur_sigma, default=None,
                   help="Gaussian low-pass of the calibration images: a σ in input pixels (0 = off), or auto (the "
                        "smallest σ that gives them a photograph's f^-2 spectrum; synthetic images can be near white "
                        "noise at the pixel scale); default: the preset's (strong-synthetic: auto)")
    g.add_argument("--reconstruct-steps", type=int, default=None, help="block reconstruction steps per block (0 = off)")
    g.add_argument("--reconstruct-blocks", type=int, default=None,
                   help="reconstruct only the first N blocks (0 = all; default: the preset's)")
    g.add_argument("--reconstruct-objective", default=None, choices=list(RECON_OBJECTIVES),
                   help="block output error to reconstruct: plain squared error, weighted by the float "
                        "model's Fisher diagonal (which outputs its prediction depends on), or relative to each "
                        "float token's variance (as the next LayerNorm reads it); default: the preset's")
    g.add_argument("--reconstruct-views", default=None, choices=["fixed", "fresh"],
                   help="reconstruct on the calibration set's fixed block inputs, or on a new random crop/flip of "
                        "its images every step (block inputs recomputed; slower); default: the preset's")
    g.add_argument("--reconstruct-lr", type=float, default=None,
                   help="AdaRound gate learning rate (default: the preset's, else 0.01)")
    g.add_argument("--acm-every", type=int, default=None, help="ACM every γ blocks (0 = off); default: the method's (off for `run` without --method)")
    g.add_argument("--acm-variant", default=None, choices=list(ACM_VARIANTS), help="default: the method's")
    g.add_argument("--distill-steps", type=int, default=None, help="distillation steps (0 = off); default: the method's")
    g.add_argument("--distill-terms", default=None, help="comma list of logits,attention")
    g.add_argument("--distill-lr", type=float, default=1e-2, help="step-size lr, relative to each scale")
    g.add_argument("--distill-weight-lr", type=float, default=0.0, help="> 0 also learns weights")


def _blur_sigma(value: str) -> float | str:
    """--calib-blur: 'auto' or a number of pixels (its range is QuantConfig's check)."""
    if value == "auto":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is neither auto nor a number of pixels") from None


def _out_args(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--out", default=default, help="output folder (never an existing folder dfqvit did not write)")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier dfqvit output at --out")


def _inputs(a: argparse.Namespace, *names: str) -> list[tuple[str, str | None]]:
    """(option, path) of the inputs a command reads, which its output must stay clear of."""
    names = (*names, "checkpoint", "model_config", "model_dir", "class_names")
    return [("--" + n.replace("_", "-"), getattr(a, n, None)) for n in names]


def _model_options(a: argparse.Namespace) -> dict:
    """The RunOptions fields that name the float model."""
    return {"model": a.model, "checkpoint": a.checkpoint, "model_args": a.model_args, "model_config": a.model_config,
            "model_dir": a.model_dir, "class_names": _class_names(a)}


def _class_names(a: argparse.Namespace):
    from .data.folder import read_class_names

    return read_class_names(a.class_names) if a.class_names else None


def _preset(a: argparse.Namespace) -> str:
    """The preset name, `auto` resolved by the calibration source: real images or not."""
    from .presets import resolve_preset

    return resolve_preset(a.preset, _real_calibration(a), w_bits=getattr(a, "w_bits", 8),
                          a_bits=getattr(a, "a_bits", 8))


def _real_calibration(a: argparse.Namespace) -> bool:
    if hasattr(a, "images"):  # `quantize`: synthetic images from --images, else real ones
        return a.images is None
    return getattr(a, "method", None) == "real"


def _quant_config(a: argparse.Namespace):
    from .presets import quant_config

    return quant_config(_preset(a), w_bits=a.w_bits, a_bits=a.a_bits, head_bits=a.head_bits, embed_bits=a.embed_bits,
                        weight_observer=a.weight_observer, act_observer=a.act_observer, reparam=a.reparam,
                        reparam_skip_blocks=a.reparam_skip_blocks,
                        act_search=a.act_search,
                        softmax_quantizer=a.softmax_quantizer, gelu_quantizer=a.gelu_quantizer,
                        weight_rounding=a.weight_rounding, gptq_damp=a.gptq_damp,
                        act_compensation=a.act_compensation, calib_views=a.calib_views,
                        calib_blur=a.calib_blur, mlp_activation=a.mlp_activation)


def _reconstruct_overrides(a: argparse.Namespace) -> dict[str, Any]:
    """The preset's reconstruction options (objective, lr, first blocks) with the flags given on top; checked."""
    from .correction.reconstruct import ReconstructOptions
    from .presets import get_preset

    given = {"first_blocks": a.reconstruct_blocks, "objective": a.reconstruct_objective, "lr": a.reconstruct_lr,
             "fresh_views": None if a.reconstruct_views is None else a.reconstruct_views == "fresh"}
    out = {**get_preset(_preset(a)).reconstruct, **{k: v for k, v in given.items() if v is not None}}
    ReconstructOptions(**out)  # a bad value is a one-line ConfigError now, not after synthesis
    return out


def _reconstruct_steps(a: argparse.Namespace) -> int:
    from .errors import ConfigError
    from .presets import get_preset

    steps = get_preset(_preset(a)).reconstruct_steps if a.reconstruct_steps is None else a.reconstruct_steps
    if steps < 0:
        raise ConfigError(f"--reconstruct-steps must be >= 0, got {steps}")
    return steps


def _synthesis_options(a: argparse.Namespace):
    from .synthesis import SynthesisOptions

    return SynthesisOptions(num_images=a.num_images, batch_size=a.batch_size, iterations=a.iterations, lr=a.lr,
                            crop_lower=a.crop_lower, crop_upper=a.crop_upper, seed=a.seed, amp=a.amp,
                            checkpoint_every=a.checkpoint_every, cuda_graphs=a.cuda_graphs)


def _run_options(a: argparse.Namespace, **extra):
    from .correction.distill import DistillOptions
    from .pipeline import RunOptions

    terms = tuple(a.distill_terms.split(",")) if a.distill_terms else None
    # Build once for its checks (a negative lr or step count is an error now, not after synthesis).
    DistillOptions(steps=a.distill_steps or 0, lr=a.distill_lr, weight_lr=a.distill_weight_lr,
                   terms=terms or ("logits",))
    return RunOptions(
        **_model_options(a), method=a.method, quant=_quant_config(a), preset=_preset(a),
        synthesis=_synthesis_options(a),
        schedule=a.schedule, gradient_tilt=a.gradient_tilt, chroma_scale=a.chroma_scale, acm_every=a.acm_every, acm_variant=a.acm_variant,
        distill_steps=a.distill_steps,
        distill_terms=terms, distill_lr=a.distill_lr, distill_weight_lr=a.distill_weight_lr,
        reconstruct_steps=_reconstruct_steps(a), reconstruct=_reconstruct_overrides(a), calib_data=a.calib_data, data=a.data, out=a.out,
        overwrite=a.overwrite, device=a.device, resume=a.resume, progress=not a.quiet,
        skip_bad_images=a.skip_bad_images, export=getattr(a, "export", None), **extra)


def cmd_run(a: argparse.Namespace) -> int:
    from .pipeline import run

    report = run(_run_options(a))
    ev = report["evaluation"]
    print(f"{report['model']} {report['method']['name']} W{a.w_bits}A{a.a_bits}: top-1 {ev['top1']:.2f} "
          f"(FP {ev['fp']['top1']:.2f}), agreement {ev['agreement_top1']:.2f}, KL {ev['kl_to_fp']:.4f}; wrote {a.out}/")
    return 0


def cmd_synthesize(a: argparse.Namespace) -> int:
    import os

    from .pipeline import RunOptions, synthesize_folder, validate

    ropts = RunOptions(**_model_options(a), method=a.method, synthesis=_synthesis_options(a),
                       schedule=a.schedule, gradient_tilt=a.gradient_tilt, chroma_scale=a.chroma_scale,
                       calib_data=a.calib_data, out=a.out,
                       overwrite=a.overwrite,
                       device=a.device, resume=a.resume, progress=not a.quiet, skip_bad_images=a.skip_bad_images,
                       threads=a.threads)
    if a.nproc < 1:
        from .errors import ConfigError

        raise ConfigError(f"--nproc must be >= 1, got {a.nproc}")
    if a.nproc > 1 and "WORLD_SIZE" not in os.environ:
        from .outputs import release_output

        validate(ropts)  # every check here, before any process starts
        release_output(a.out)  # rank 0 takes the output's lock itself
        argv = list(sys.argv[1:])
        k = argv.index("--nproc")
        del argv[k:k + 2]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={a.nproc}",
               "-m", "dfqvit", *argv]
        return run_process_group(cmd)
    report = synthesize_folder(ropts)
    if report:
        s = report["synthesis"]
        print(f"wrote {s['num_images']} images in {s['shards']} shard(s) to {a.out}/ (manifest.json, synthetic.png; "
              f"{s['seconds']:.1f} s on {s['processes']} process(es))")
    return 0


# What torchrun gets after Ctrl-C before SIGKILL. Its workers run in sessions of their own (torch elastic starts
# them so), out of reach of our killpg: torchrun itself passes the signal on and SIGKILLs them after its own 30 s,
# so ours waits longer, or a worker still writing its checkpoint would lose its killer and outlive the command.
INTERRUPT_GRACE_S = 45.0


def run_process_group(cmd: list[str]) -> int:
    """Run `cmd` (torchrun and its workers) in a process group of its own and wait for it.

    Ctrl-C or SIGTERM to this process is passed to torchrun's group; torchrun passes it to each worker
    (every worker checkpoints and stops) and kills the ones still running after 30 s; after
    INTERRUPT_GRACE_S whatever is left of torchrun's group is killed."""
    import os
    import signal
    import subprocess

    proc = subprocess.Popen(cmd, start_new_session=True)
    pgid = proc.pid

    def kill_group(sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass

    old_term = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        kill_group(signal.SIGINT)
        try:
            proc.wait(timeout=INTERRUPT_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        raise
    finally:
        signal.signal(signal.SIGTERM, old_term)
        kill_group(signal.SIGKILL)  # nothing of the group survives, finished or not
        if proc.poll() is None:
            proc.wait()


def _streamed_fallbacks(images: Any, a: argparse.Namespace, config: Any, recon: Any) -> tuple[Any, Any]:
    """A streamed shard set keeps no images in memory: the preset's calibration views and fresh reconstruction
    views (options the user did not give) fall back to the images alone, each with a one-line message."""
    import dataclasses

    from .synthesis.sharded import ShardImages

    if not isinstance(images, ShardImages):
        return config, recon
    if a.calib_views is None and config.calib_views > 1:
        print(f"dfqvit: {a.images} is streamed shard by shard: calibrating on its images alone (the preset's "
              f"{config.calib_views} views per image need the images in memory; --calib-views 1 says so)",
              file=sys.stderr)
        config = dataclasses.replace(config, calib_views=1)
    if a.reconstruct_views is None and recon is not None and recon.fresh_views:
        print(f"dfqvit: {a.images} is streamed shard by shard: reconstructing on its images' fixed block inputs "
              f"(a new view every step would read every shard every step; --reconstruct-views fixed says so)",
              file=sys.stderr)
        recon = dataclasses.replace(recon, fresh_views=False)
    return config, recon


def _read_images(path: str) -> Any:
    """A `dfqvit synthesize` output folder (shards + manifest; streamed shard by shard above 1 GiB),
    or a single synthetic.pt."""
    import torch

    from .errors import DataError

    p = Path(path)
    if p.is_dir():
        from .synthesis.sharded import open_shards

        return open_shards(p)
    if not p.is_file():
        raise DataError(f"--images {p}: file not found")
    try:
        data = torch.load(p, map_location="cpu", weights_only=True)
    except Exception:
        raise DataError(f"--images {p} is not a synthetic.pt written by `dfqvit synthesize`") from None
    if not isinstance(data, dict) or "images" not in data:
        raise DataError(f"--images {p} holds no 'images' tensor (expected a synthetic.pt written by `dfqvit synthesize`)")
    return data["images"]


def cmd_quantize(a: argparse.Namespace) -> int:
    from . import api
    from .correction.distill import DistillOptions
    from .correction.reconstruct import ReconstructOptions
    from .errors import ConfigError
    from .export import save_quantized
    from .outputs import atomic_output_dir, check_output_dir
    from .pipeline import RunOptions, load_for
    from .report import write_report
    from .utils import check_device

    check_device(a.device)
    config = _quant_config(a)
    steps = _reconstruct_steps(a)
    if (a.acm_every or 0) < 0:
        raise ConfigError(f"--acm-every must be >= 0, got {a.acm_every}")
    distill = DistillOptions(steps=a.distill_steps or 0, lr=a.distill_lr, weight_lr=a.distill_weight_lr,
                             terms=tuple((a.distill_terms or "logits").split(",")), seed=a.seed)
    recon = ReconstructOptions(steps=steps, seed=a.seed, **_reconstruct_overrides(a)) if steps else None
    if a.images and a.calib_data:
        raise ConfigError("give either --images or --calib-data, not both")
    if a.num_images < 1:
        raise ConfigError(f"--num-images must be an integer >= 1, got {a.num_images}")
    if a.calib_data and not Path(a.calib_data).is_dir():
        raise ConfigError(f"--calib-data {a.calib_data}: folder not found")
    check_output_dir(a.out, a.overwrite, inputs=_inputs(a, "images", "calib_data"))
    images = _read_images(a.images) if a.images else None
    skipped: list[str] = []
    loaded = load_for(RunOptions(**_model_options(a)))
    if images is not None:
        source = a.images
        api.check_images(images, loaded, f"--images {a.images}")
        config, recon = _streamed_fallbacks(images, a, config, recon)
    else:
        images, _ = api.real_images(loaded, a.calib_data, a.num_images, a.seed, a.skip_bad_images, skipped)
        source = a.calib_data or "digits train split"
        if skipped:
            from .outputs import printable

            print(f"dfqvit: skipped {len(skipped)} unreadable calibration image(s): "
                  f"{printable(', '.join(skipped[:5]))}{' …' if len(skipped) > 5 else ''}", file=sys.stderr)
    with atomic_output_dir(a.out, overwrite=a.overwrite) as stage:
        qmodel, info = api.quantize(loaded, images, config, a.acm_every or 0, distill, a.device, progress=not a.quiet,
                                    reconstruct_options=recon, acm_variant=a.acm_variant or "mean")
        save_quantized(qmodel, loaded, stage / "quantized.safetensors")
        write_report(stage, {"model": loaded.name, "model_args": loaded.arch_kwargs, "calibration_source": source,
                             "preset": _preset(a), "quantize": info,
                             **({"skipped_calibration_images": {"count": len(skipped), "files": skipped}}
                                if skipped else {})})
    print(f"wrote {a.out}/quantized.safetensors")
    return 0


def cmd_evaluate(a: argparse.Namespace) -> int:
    from . import api
    from .errors import ConfigError
    from .export import load_quantized, read_metadata
    from .models.tiny import TINY_MODEL_NAME
    from .outputs import check_output_file
    from .pipeline import RunOptions, load_for
    from .utils import check_device

    check_device(a.device)
    if a.data is not None and not Path(a.data).is_dir():
        raise ConfigError(f"--data {a.data}: folder not found")
    logits_path = check_output_file(a.save_logits, a.overwrite, "--save-logits",
                                    _inputs(a, "quantized", "onnx", "data")) if a.save_logits else None
    opts = RunOptions(**_model_options(a))
    if a.runtime and not a.onnx:
        raise ConfigError("--runtime runs an exported file: give it with --onnx FILE")
    if a.onnx:
        from .runtimes import open_exported

        model = open_exported(a.onnx, a.runtime or "onnxruntime", a.threads)
        loaded = model.loaded_model()
        reference = load_quantized(a.quantized)[0] if a.quantized else None
        result = api.evaluate(model, loaded, a.data, fp_model=reference, device="cpu", progress=not a.quiet,
                              skip_bad_images=a.skip_bad_images)
        if reference is not None:
            result["reference"] = "the PyTorch quantized model (--quantized); its metrics are under 'fp'"
        print(json.dumps(result, indent=2))
        return 0
    if a.quantized:
        meta = read_metadata(a.quantized)
        if a.model and a.model != meta["model"]:
            raise ConfigError(f"--model {a.model} does not match the quantized model's {meta['model']}; "
                              f"drop --model (the artefact names its model)")
        if a.model_args:
            raise ConfigError("--model-args: the quantized model records its architecture; drop --model-args")
        model, loaded, _ = load_quantized(a.quantized)
        if a.class_names:
            loaded.class_names = opts.class_names
        fp = None
        if a.model_config or a.model_dir or a.checkpoint or meta["model"] == TINY_MODEL_NAME:  # the float reference
            opts.model, opts.model_args = (None, None) if a.model_config or a.model_dir else (
                meta["model"], meta.get("arch_kwargs"))
            fp = load_for(opts).model
    else:
        loaded = load_for(opts)
        model, fp = loaded.model, None
    result = api.evaluate(model, loaded, a.data, fp_model=fp, device=a.device, progress=not a.quiet,
                          skip_bad_images=a.skip_bad_images, return_logits=logits_path is not None)
    logits = result.pop("logits", None)
    print(json.dumps(result, indent=2))  # the metrics first: a failing write below cannot lose them
    if logits_path is not None:
        import torch

        from .outputs import write_file_atomically

        write_file_atomically(logits_path, lambda tmp: torch.save(logits, tmp))
    return 0


def cmd_compare(a: argparse.Namespace) -> int:
    from . import api
    from .diagnosis import compare_calibration, write_diagnosis
    from .errors import ConfigError
    from .outputs import atomic_output_dir, check_output_dir
    from .pipeline import RunOptions, load_for
    from .synthesis.methods import get_method
    from .utils import check_device

    check_device(a.device)
    names = [n.strip() for n in a.sources.split(",") if n.strip()]
    methods = {n: get_method(n) for n in names}  # unknown names fail here
    if "real" not in methods:
        methods = {"real": get_method("real"), **methods}
    if len(methods) < 2:
        raise ConfigError("--sources needs at least one source besides real (the reference)")
    if a.calib_data and not Path(a.calib_data).is_dir():
        raise ConfigError(f"--calib-data {a.calib_data}: folder not found")
    config = _quant_config(a)
    opts = _synthesis_options(a)
    check_output_dir(a.out, a.overwrite, inputs=_inputs(a, "calib_data"))
    loaded = load_for(RunOptions(**_model_options(a)))
    with atomic_output_dir(a.out, overwrite=a.overwrite) as stage:
        images = {n: api.synthesize(loaded, m, opts, a.device, calib_data=a.calib_data, progress=not a.quiet,
                                    skip_bad_images=a.skip_bad_images).images for n, m in methods.items()}
        result = compare_calibration(loaded, images, "real", config, a.batch_size)
        result["model"] = loaded.name
        write_diagnosis(result, stage)
    for name, s in result["summary"].items():
        print(f"{name:10s} channel-mean gap {s['channel_mean']:.3f}, ACM cosine to real {s['acm_cosine']:.3f}; "
              f"furthest blocks {result['worst_blocks'][name]}")
    print(f"wrote {a.out}/report.md and {a.out}/diagnosis.png")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from .export import load_quantized
    from .onnx_export import export_onnx
    from .outputs import check_output_file

    path = check_output_file(a.out, a.overwrite, inputs=_inputs(a, "quantized"))
    qmodel, loaded, _ = load_quantized(a.quantized)
    report_path = check_output_file(str(path) + ".report.json", a.overwrite, "--out report",
                                    inputs=_inputs(a, "quantized")) if a.benchmark else None
    info = export_onnx(qmodel, loaded, path, softmax=a.softmax, int4=a.int4, gelu=a.gelu)
    print(f"wrote {a.out} ({info['bytes'] / 1e6:.2f} MB, opset {info['opset']}): {info['ops'].get('QuantizeLinear', 0)} "
          f"activation QuantizeLinear, {info['ops'].get('DequantizeLinear', 0)} DequantizeLinear, "
          f"{info['integer_weights']} integer weight initializers ({info['int4_weights']} of them 4-bit); "
          f"softmax {a.softmax}, gelu {a.gelu}")
    if report_path is not None:
        import json

        from .deploy import export_report, faster_forms, summary_line
        from .outputs import write_file_atomically

        report = export_report(path, loaded.model, tuple(loaded.data_config["input_size"]), threads=a.threads or 1,
                               seconds=a.benchmark_seconds)
        report["export"] = {k: v for k, v in info.items() if k != "path"}
        report["quant_config"] = qmodel.config.to_dict()
        write_file_atomically(report_path, lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2) + "\n"))
        print(summary_line(report))
        print(f"wrote {report_path}")
        for hint in faster_forms(qmodel, a.softmax, a.gelu):
            print(f"faster: {hint}; measure its accuracy with `dfqvit evaluate --onnx`")
    return 0


def cmd_methods(a: argparse.Namespace) -> int:
    from .data.colour import chroma_scale_on, chroma_scale_text
    from .synthesis.methods import METHODS

    width = max(len(name) for name in METHODS)
    for m in METHODS.values():
        terms = ", ".join(f"{k}×{v:g}" for k, v in m.terms.items()) or "-"
        priors = "".join([f"; rounds (jitter px): {list(m.rounds)}" if m.rounds else "",
                          "; soft labels" if m.soft_labels else "",
                          f"; gradient tilt: {m.gradient_tilt:g}" if m.gradient_tilt else "",
                          f"; chroma scale: {chroma_scale_text(m.chroma_scale)}" if chroma_scale_on(m.chroma_scale)
                          else "",
                          f"; low-pass σ: {m.lowpass:g}" if m.lowpass else ""])
        print(f"{m.name:{width}s} {m.description}\n{'':{width}s} terms: {terms}; schedule: {m.schedule}; "
              f"acm-every: {m.acm_every}; distill-steps: {m.distill_steps}{priors}")
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    from .models.loading import KNOWN_MODELS
    from .models.tiny import TINY_MODEL_NAME

    print(f"{TINY_MODEL_NAME:30s} the embedded default (no --model): tiny ViT on scikit-learn digits")
    for name, overrides in KNOWN_MODELS.items():
        print(f"{name:30s} --model-args known to work: {overrides}")
    print("Any other timm ViT / DeiT / Swin name builds too; weights always come from a local file.")
    from .models.hf import ARCHITECTURES

    for arch in ARCHITECTURES:
        tested = "random-init configs" + (" and the ImageNet ViT-Tiny converted" if arch.startswith("ViT") else "")
        print(f"{'transformers ' + arch:30s} --model-dir DIR (a local folder; tested on {tested})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="dfqvit", description="Data-free quantization for Vision Transformers.",
                                formatter_class=Formatter)
    p.add_argument("--version", action="version", version=f"dfqvit {__version__}")
    sub = p.add_subparsers(dest="verb", required=True)
    r = sub.add_parser("run", help="synthesize, quantize, calibrate, correct, evaluate and save, in one go",
                       formatter_class=Formatter)
    _model_args(r); _synthesis_args(r); _quant_args(r)
    r.add_argument("--data", default=None, help="ImageNet-layout folder to evaluate on (tiny model: digits held-out)")
    r.add_argument("--export", default=None, choices=["onnx"],
                   help="also write model.onnx (QDQ) and measure it in ONNX Runtime against the PyTorch model")
    _out_args(r, "dfqvit-out")
    r.set_defaults(fn=cmd_run)
    s = sub.add_parser("synthesize", help="make calibration images from the model alone, in shards of one batch",
                       formatter_class=Formatter)
    _model_args(s); _synthesis_args(s)
    s.add_argument("--nproc", type=int, default=1,
                   help="processes (one per GPU, or CPU processes): launched through torch.distributed.run")
    _out_args(s, "dfqvit-synthetic")
    s.set_defaults(fn=cmd_synthesize)
    q = sub.add_parser("quantize", help="quantize and calibrate on saved synthetic images or a real folder",
                       formatter_class=Formatter)
    _model_args(q); _quant_args(q)
    q.add_argument("--images", default=None, help="the output folder of `dfqvit synthesize` (or a synthetic.pt)")
    q.add_argument("--calib-data", default=None, help="ImageNet-layout folder of real calibration images")
    q.add_argument("--num-images", type=int, default=None,
                   help="real images taken from --calib-data (default: 32; 128 when the preset is strong+recon)")
    _out_args(q, "dfqvit-quantized")
    q.set_defaults(fn=cmd_quantize)
    e = sub.add_parser("evaluate", help="top-1 / top-5 / agreement / KL of a float or saved quantized model",
                       formatter_class=Formatter)
    _model_args(e)
    e.add_argument("--quantized", default=None, help="quantized.safetensors written by run or quantize")
    e.add_argument("--data", default=None, help="ImageNet-layout folder (tiny model: digits held-out)")
    e.add_argument("--onnx", default=None, help="an .onnx file written by `dfqvit export`, run in ONNX Runtime; "
                                               "with --quantized, agreement is measured against that PyTorch model")
    e.add_argument("--runtime", default=None, choices=["onnxruntime", "openvino"],
                   help="the runtime that runs --onnx (default onnxruntime; openvino: pip install -e \".[openvino]\")")
    e.add_argument("--save-logits", default=None, help="also write the logits to this .pt file")
    e.add_argument("--overwrite", action="store_true", help="replace an existing --save-logits file")
    e.set_defaults(fn=cmd_evaluate)
    c = sub.add_parser("compare-calibration", help="which layers each calibration source gets wrong, against real images",
                       formatter_class=Formatter)
    _model_args(c); _synthesis_args(c); _quant_args(c)
    c.add_argument("--sources", default="dfq-vit,noise", help="comma list of methods to compare with real images")
    _out_args(c, "dfqvit-diagnosis")
    c.set_defaults(fn=cmd_compare)
    x = sub.add_parser("export", help="write a quantized model as ONNX (QDQ) for ONNX Runtime",
                       formatter_class=Formatter)
    x.add_argument("--quantized", required=True, help="quantized.safetensors written by run or quantize")
    x.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    x.add_argument("--softmax", default="emulate", choices=["emulate", "uint8"],
                   help="log softmax quantizer: emulated with standard ops (exact) or as 8-bit uniform QDQ")
    x.add_argument("--gelu", default="split", choices=["split", "uniform"],
                   help="twin / adaptive-log post-GELU quantizer: exact, as one QDQ pair and fc2 matmul per sign "
                        "(twice fc2's work), or one uniform grid of the same bits over its range (one fc2 matmul)")
    x.add_argument("--no-int4", dest="int4", action="store_false",
                   help="store ≤ 4-bit weight codes one per byte at opset 17 instead of UINT4 at opset 21")
    x.add_argument("--benchmark", action="store_true",
                   help="also measure it in ONNX Runtime against the FP32 graph of the same architecture: size, "
                        "integer/float kernels after ORT's fusions, ms/image at batch 1, images/s at batch 64; "
                        "written to OUT.report.json")
    x.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads for --benchmark (default 1)")
    x.add_argument("--benchmark-seconds", type=float, default=3.0, help="timing per graph and batch size")
    x.add_argument("--out", default="model.onnx", help="the .onnx file to write")
    x.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    x.set_defaults(fn=cmd_export)
    m = sub.add_parser("methods", help="list the registered synthesis methods", formatter_class=Formatter)
    m.set_defaults(fn=cmd_methods)
    mo = sub.add_parser("models", help="list the tested timm models and the --model-args known to work",
                        formatter_class=Formatter)
    mo.set_defaults(fn=cmd_models)
    return p


class _NamedMethod(argparse.Action):
    """Stores --method and remembers that it was given (abbreviated or `--method=x` included)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, values)
        namespace.method_named = True


def apply_default_combination(args: argparse.Namespace) -> argparse.Namespace:
    """`dfqvit run` without --method runs the best data-free combination measured: DFQ-ViT images
    with natural-image priors (dfq-vit-natural), 128 of them, the auto preset and no ACM (on the ImageNet ViT-Tiny, ACM computed on synthetic
    images cost 2 points at W4A8 and 128 images gained 2 over 32; see the README). Naming --method
    gives that method as published, on the papers' 32 images."""
    from .pipeline import DEFAULT_ACM_EVERY, DEFAULT_NUM_IMAGES, PAPERS_NUM_IMAGES
    from .presets import RECON_REAL_IMAGES

    default_run = args.verb == "run" and not getattr(args, "method_named", False)
    if default_run and args.acm_every is None:
        args.acm_every = DEFAULT_ACM_EVERY
    if getattr(args, "num_images", 0) is None:
        args.num_images = DEFAULT_NUM_IMAGES if default_run else PAPERS_NUM_IMAGES
        if hasattr(args, "preset") and _real_calibration(args) and _preset(args) == "strong+recon" \
                and _reconstruct_steps(args) > 0:
            args.num_images = RECON_REAL_IMAGES  # real images, reconstructed: 128 (the knee measured on ImageNet)
    return args


def dfqvit_start_handler():
    from . import _interrupted_while_starting

    return _interrupted_while_starting


def set_threads(threads: int | None) -> None:
    from .errors import ConfigError

    if threads is None:
        return
    if threads < 1:
        raise ConfigError(f"--threads must be an integer >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> int:
    import signal

    from .outputs import printable, release_output

    try:
        args = apply_default_combination(build_parser().parse_args(argv))
        if signal.getsignal(signal.SIGINT) is dfqvit_start_handler():
            signal.signal(signal.SIGINT, signal.default_int_handler)  # from here Ctrl-C is KeyboardInterrupt
        set_threads(getattr(args, "threads", None))
        return args.fn(args)
    except DfqvitError as exc:
        print(f"dfqvit: error: {printable(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("dfqvit: interrupted (a synthesis checkpoint, if any, is kept for --resume)", file=sys.stderr)
        return 130
    finally:
        release_output()


if __name__ == "__main__":
    sys.exit(main())
