"""The one synthesis loop every method shares.

Images start as Gaussian noise and are optimised with Adam, batch by batch, for T
iterations. Every randomness comes from one seeded generator whose state goes into
the checkpoint, so an interrupted run resumed from it ends with the same images.
"""
from __future__ import annotations

import copy
import math
import os
import signal
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..data.colour import chroma_scale_on, image_chroma_scaled, scale_chroma
from ..data.lowpass import low_pass, tilt_spectrum
from ..data.pixels import denormalise, per_channel
from ..errors import CheckpointError, ConfigError, SynthesisDivergedError
from ..models.attention import PointRecorder, attention_modules
from . import graphs, losses
from .losses import TERM_STATE, SynthesisContext, get_term, make_targets, random_attention_priors
from .methods import Method
from .schedules import CropSchedule, apply_crop, apply_permutation, crop_theta, jitter_flip_index, to_device


@dataclass
class SynthesisOptions:
    num_images: int = 32
    batch_size: int = 32
    iterations: int = 500
    lr: float = 0.2  # PSAQ-ViT uses 0.2 (0.25 for Swin), Adam betas (0.5, 0.9)
    warmup_fraction: float = 0.2  # cosine lr with warm-up, PSAQ-ViT: 100 of 500
    crop_lower: float = 0.08
    crop_upper: float = 1.0
    jitter: int | None = None  # max roll in pixels; None → input size / 16
    flip: bool = True
    seed: int = 0
    amp: bool = False  # bf16 forward and backward through a bf16 copy of the frozen model (for GPUs)
    checkpoint_every: int = 50
    cuda_graphs: bool = True  # replay each step as a CUDA graph on CUDA (graphs.py); same draws either way

    def __post_init__(self) -> None:
        for name in ("num_images", "batch_size", "iterations", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1 (an integer), got {value}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise ConfigError(f"lr must be > 0 and finite, got {self.lr}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ConfigError(f"warm-up fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0.0 < self.crop_lower <= self.crop_upper <= 1.0:
            raise ConfigError(f"crop bounds must satisfy 0 < lower <= upper <= 1, got {self.crop_lower}, {self.crop_upper}")
        if self.jitter is not None and self.jitter < 0:
            raise ConfigError(f"jitter must be >= 0, got {self.jitter}")


@dataclass
class SynthesisResult:
    images: torch.Tensor  # normalised model-input space
    targets: torch.Tensor
    final_terms: dict[str, float]
    seconds: float
    method: dict
    options: dict = field(default_factory=dict)
    priors: torch.Tensor | None = None  # attention priors the images were aligned to (SARDFQ)
    resumed_from: dict | None = None  # {"batch", "iteration"} when the run continued a checkpoint

    def save(self, directory: Path, mean: tuple[float, ...], std: tuple[float, ...],
             identity: dict | None = None) -> None:
        """synthetic.pt (images, targets, and what `--resume` needs to reuse them) and the grid."""
        _save_checkpoint(directory / "synthetic.pt", {
            "images": self.images.cpu(), "targets": self.targets.cpu(), "identity": identity,
            "final_terms": self.final_terms, "seconds": self.seconds})
        save_grid(self.images, mean, std, directory / "synthetic.png")

    @classmethod
    def load_finished(cls, path: Path, identity: dict, method: Method, options: "SynthesisOptions") -> "SynthesisResult":
        """The finished images of an interrupted run (its synthetic.pt), if they are this run's."""
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            raise CheckpointError(f"{path} is unreadable (truncated or corrupt); start over with --overwrite") from None
        if not isinstance(data, dict) or not isinstance(data.get("images"), torch.Tensor) \
                or data.get("identity") != identity:
            raise CheckpointError(f"{path} holds images of another method, options, seed or model; resume with the "
                                  f"command that made them, or start over with --overwrite")
        return cls(data["images"], data["targets"], dict(data.get("final_terms") or {}),
                   float(data.get("seconds") or 0.0), method.to_dict(), asdict(options),
                   resumed_from={"finished_images": path.name})


def save_grid(images: torch.Tensor, mean, std, path: Path) -> None:
    from torchvision.utils import save_image

    save_image(denormalise(images.cpu(), mean, std).clamp(0, 1), str(path), nrow=8, padding=2)


SYNC_EVERY = 10  # iterations between reads of the loss values (a host sync on GPUs)


class Bfloat16Model(nn.Module):
    """The frozen model as a bf16 copy: images cast down on the way in, logits up on the way out.

    Autocast would re-cast every weight on every forward (its cast cache keeps only leaves that
    require grad, and a frozen model's do not): ~100 extra kernels a step, which on a GPU bound by
    launches made bf16 slower than fp32 at batch 32. Cast once, the step has fp32's kernel count
    with bf16 matmuls. The images, Adam and the loss sums stay fp32; the KDE terms compute in fp32.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).to(torch.bfloat16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(torch.bfloat16)).float()


def _adam(x: torch.Tensor, lr: float, capturable: bool, state: dict | None) -> torch.optim.Adam:
    """PSAQ-ViT's Adam (betas 0.5, 0.9); fused (one kernel a step) on CUDA; `capturable` — its lr
    a device tensor and its step count on the device — when the step is replayed as a CUDA graph."""
    if capturable:
        optim = torch.optim.Adam([x], lr=torch.tensor(lr, device=x.device), betas=(0.5, 0.9), fused=True,
                                 capturable=True)
    else:
        optim = torch.optim.Adam([x], lr=lr, betas=(0.5, 0.9), fused=(x.device.type == "cuda") or None)
    if state is not None:
        optim.load_state_dict(state)
        if capturable:  # a checkpoint written by eager steps: its lr and step as a captured Adam needs them
            for g in optim.param_groups:
                g["lr"], g["capturable"] = torch.tensor(float(g["lr"]), device=x.device), True
            for st in optim.state.values():
                st["step"] = torch.as_tensor(st["step"], dtype=torch.float32).to(x.device)
    return optim


def _lr_at(t: int, total: int, base: float, warmup: int) -> float:
    if t < warmup:
        return base * (t + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (t - warmup) / max(total - warmup, 1)))


class _DeferredInterrupt:
    """Turn Ctrl-C into a flag checked between iterations, so a checkpoint is always consistent."""

    def __init__(self) -> None:
        self.hit = False
        self._old = None

    def __enter__(self) -> "_DeferredInterrupt":
        try:
            self._old = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread
            self._old = None
        return self

    def _handle(self, *_):
        self.hit = True

    def __exit__(self, exc_type, *_) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        if self.hit and exc_type is None:  # Ctrl-C after the last iteration's check is still Ctrl-C
            raise KeyboardInterrupt


def _save_checkpoint(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def synthesize_images(
    model: nn.Module,
    method: Method,
    input_size: tuple[int, int, int],
    num_classes: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    options: SynthesisOptions | None = None,
    device: torch.device | str = "cpu",
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    on_iteration: Callable[[int, int], None] | None = None,
    model_sha256: str | None = None,
) -> SynthesisResult:
    """Optimise calibration images for `method` on a float model made observable.

    `on_iteration(batch, iteration)` is called between iterations (after the step);
    raising KeyboardInterrupt there behaves like Ctrl-C: checkpoint, then re-raise.
    `model_sha256`: the model's fingerprint when the caller has it (checkpoints record it).
    """
    opts = options or SynthesisOptions()
    device = torch.device(device)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    net = Bfloat16Model(model) if opts.amp else model  # what the step runs
    if opts.amp and device.type == "cpu":
        warnings.warn("--amp on the CPU: bf16 matmuls there are slow (the tiny default's step: 60 ms fp32, "
                      "850 ms bf16); it is meant for GPUs")
    terms = {name: (get_term(name), w) for name, w in method.terms.items()}
    schedule = CropSchedule(method.schedule, opts.crop_upper, opts.crop_lower)
    default_jitter = opts.jitter if opts.jitter is not None else max(1, input_size[1] // 16)
    # PSAQ-style rounds give jitter in pixels at 224 px; other sizes scale it
    jitters = [max(1, round(j * input_size[1] / 224)) for j in method.rounds] or [default_jitter]
    per_batch = len(jitters) * opts.iterations  # iterations per batch, all rounds
    stateful = [name for name in method.terms if name in TERM_STATE]
    batched = device.type in losses.BATCH_ON  # extra views in the main forward (see losses.VIEW_TERMS)
    viewing = [name for name in method.terms if name in losses.VIEW_TERMS] if batched else []
    # steps replayed as a CUDA graph where they can be: only the built-in terms are known to read
    # nothing that changes between steps outside the step's tensors (ctx.iteration, ctx.gen)
    graphed = (opts.cuda_graphs and batched and device.type in graphs.GRAPH_ON and not method.lowpass
               and not method.gradient_tilt and not chroma_scale_on(method.chroma_scale)  # these three: not captured yet
               and all(name in losses.BUILT_IN_TERMS for name in method.terms))
    lo = torch.tensor([(0 - m) / s for m, s in zip(mean, std)], device=device).view(1, -1, 1, 1)
    hi = torch.tensor([(1 - m) / s for m, s in zip(mean, std)], device=device).view(1, -1, 1, 1)
    std_pixels = per_channel(std, lo)  # the chroma projection's per-channel std, built once
    attn_modules = attention_modules(net)
    ckpt = Path(checkpoint_path) if checkpoint_path else None

    gen = torch.Generator().manual_seed(opts.seed)
    if ckpt is not None and model_sha256 is None:
        from ..models.loading import fingerprint

        model_sha256 = fingerprint(model)
    identity = run_identity(method, opts, model_sha256) if ckpt is not None else None
    state = None
    if resume:
        if ckpt is None or not ckpt.is_file():
            raise CheckpointError(f"--resume given but no synthesis checkpoint at {ckpt}")
        state = read_checkpoint(ckpt, identity)
    if state is None:
        images = torch.randn((opts.num_images, *input_size), generator=gen)
        images = image_chroma_scaled(images, method.chroma_scale, mean, std)  # the same draw; less colour in it
        targets = make_targets(opts.num_images, num_classes, gen, soft=method.soft_labels)
        priors = None
        if "attention_prior" in method.terms:
            patch = getattr(getattr(model, "patch_embed", None), "patch_size", (16, 16))
            grid = (input_size[1] // patch[0], input_size[2] // patch[1])
            priors = random_attention_priors(opts.num_images, grid, gen)
        batch_idx, start_iter, adam_state, elapsed, extras = 0, 0, None, 0.0, None
    else:
        images, targets, priors = state["images"], state["targets"], state["priors"]
        gen.set_state(state["gen"])
        batch_idx, start_iter, adam_state, elapsed = state["batch"], state["iteration"], state["adam"], state["seconds"]
        extras = state.get("extras")
    resumed_from = {"batch": batch_idx, "iteration": start_iter} if state is not None else None

    recorders = {p: PointRecorder(net, p) for p in ("head_output_point", "probs_point")}
    final: dict[str, float] = {}
    n_batches = -(-opts.num_images // opts.batch_size)
    bar = tqdm(total=n_batches * per_batch, initial=batch_idx * per_batch + start_iter,
               desc=f"synthesize[{method.name}]", disable=not progress)
    t0 = time.perf_counter()

    def checkpoint(b: int, it: int, x: torch.Tensor, optim: torch.optim.Optimizer | None, extras=None) -> None:
        if ckpt is None:
            return
        imgs = images.clone()
        sl = slice(b * opts.batch_size, (b + 1) * opts.batch_size)
        if x is not None:
            imgs[sl] = x.detach().cpu()
        _save_checkpoint(ckpt, {"identity": identity, "images": imgs,
                                "targets": targets, "priors": priors, "gen": gen.get_state(), "batch": b,
                                "iteration": it, "adam": optim.state_dict() if optim else None,
                                "extras": extras, "seconds": elapsed + time.perf_counter() - t0})

    names = list(terms)
    pending: list[tuple[int, torch.Tensor]] = []  # (iteration, term values) not yet read back from the device

    def settle(b: int) -> dict[str, float]:
        """Read the pending loss values in one transfer: check them, show them, return the last."""
        if not pending:
            return final
        its = [t for t, _ in pending]
        rows = torch.stack([v for _, v in pending]).cpu().tolist()
        pending.clear()
        for t, row in zip(its, rows):
            for name, v in zip(names, row):
                if not math.isfinite(v):
                    where = f" (last good checkpoint kept at {ckpt})" if ckpt else ""
                    raise SynthesisDivergedError(f"loss term '{name}' is {v} at iteration {t} of batch {b}{where}")
        last = dict(zip(names, rows[-1]))
        bar.set_postfix({k: f"{v:.3f}" for k, v in last.items()})
        return last

    try:
        with _DeferredInterrupt() as interrupt:
            for b in range(batch_idx, n_batches):
                sl = slice(b * opts.batch_size, (b + 1) * opts.batch_size)
                x = images[sl].clone().to(device).requires_grad_(True)
                tgt = targets[sl].to(device)
                first = start_iter if b == batch_idx else 0
                if b != batch_idx or extras is None:
                    extras = {name: TERM_STATE[name](gen, len(tgt), input_size) for name in stateful}
                # on the device once per batch: a copy from the host inside the step waits for the GPU
                extras = {name: v.to(device) for name, v in extras.items()}
                batch_priors = None if priors is None else priors[sl].to(device)
                optim = runner = None
                warmup = int(opts.warmup_fraction * opts.iterations)

                def step(draws: dict[str, torch.Tensor]) -> torch.Tensor:
                    """One optimisation step from its random draws (on the device); returns the loss terms."""
                    shown = low_pass(x, method.lowpass)  # the image the terms see and the run saves (x if 0)
                    view = shown
                    if "crop" in draws:
                        view = apply_crop(view, draws["crop"])
                    if "jitter" in draws:
                        view = apply_permutation(view, draws["jitter"])
                    extra_views = [losses.VIEW_TERMS[name].apply(shown, draws["view:" + name]) for name in viewing]
                    for r in recorders.values():
                        r.clear()
                    n, total = len(view), len(view) + sum(len(v) for v in extra_views)
                    all_logits = net(torch.cat([view, *extra_views]) if extra_views else view)
                    ctx = SynthesisContext(
                        model=net, images=shown, logits=all_logits[:n], targets=tgt, attention=attn_modules,
                        head_outputs=[_main_view(h, n, total) for h in recorders["head_output_point"].values],
                        probs=[_main_view(p, n, total) for p in recorders["probs_point"].values], gen=gen,
                        iteration=t, total_iterations=per_batch, num_prefix_tokens=prefix,
                        priors=batch_priors, extras=extras,
                        view_logits=dict(zip(viewing, all_logits[n:].split([len(v) for v in extra_views]))),
                    )
                    loss = 0.0
                    values = []
                    for name, (fn, weight) in terms.items():
                        v = fn(ctx).float()
                        values.append(v.detach().reshape(()))
                        loss = loss + weight * v
                    optim.zero_grad(set_to_none=True)
                    loss.backward()
                    for r in recorders.values():  # drop this step's autograd graph now, not at the next step
                        r.clear()
                    if method.gradient_tilt:  # per image: its energy kept, spread towards low frequencies
                        x.grad = tilt_spectrum(x.grad, method.gradient_tilt)
                    before = x.detach().clone() if chroma_scale_on(method.chroma_scale) else None
                    optim.step()
                    with torch.no_grad():
                        if before is not None:  # Adam's step with its chroma scaled (after Adam, which would rescale it)
                            x.copy_(before + scale_chroma(x - before, method.chroma_scale, std_pixels))
                        x.clamp_(lo, hi)  # back into the valid pixel range, in place
                    return torch.stack(values)

                for t in range(first, per_batch):
                    rnd, local = divmod(t, opts.iterations)
                    if optim is None or local == 0:  # each round starts with a fresh Adam (PSAQ-ViT)
                        resumed = adam_state if t == first and b == batch_idx else None
                        optim = _adam(x, opts.lr, graphed, resumed)
                        runner = graphs.CapturedStep(step, device) if graphed else None
                    lr = _lr_at(local, opts.iterations, opts.lr, warmup)
                    for g in optim.param_groups:
                        if graphed:
                            g["lr"].fill_(lr)  # a device tensor the captured Adam reads
                        else:
                            g["lr"] = lr
                    # the step's random draws, in the generator's fixed order: crop, jitter/flip, views
                    draws = {}
                    bound = schedule.lower_bound(local, opts.iterations)
                    if bound is not None:
                        draws["crop"] = crop_theta(len(x), (bound, 1.0), gen)
                    index = jitter_flip_index(input_size[1], input_size[2], jitters[rnd], gen, opts.flip)
                    if index is not None:
                        draws["jitter"] = index
                    for name in viewing:
                        draws["view:" + name] = losses.VIEW_TERMS[name].draw(len(x), gen)
                    if runner is not None:
                        values = runner(draws)
                    else:
                        values = step({k: to_device(v, device) for k, v in draws.items()})
                    pending.append((t, values))
                    bar.update(1)
                    done_t = t + 1
                    if len(pending) >= SYNC_EVERY or done_t == per_batch:
                        final = settle(b)
                    if on_iteration is not None:
                        on_iteration(b, done_t)
                    if interrupt.hit:
                        raise KeyboardInterrupt
                    if ckpt is not None and done_t % opts.checkpoint_every == 0 and done_t < per_batch:
                        final = settle(b)  # never checkpoint images a non-finite loss has touched
                        checkpoint(b, done_t, x, optim, extras)
                with torch.no_grad():
                    images[sl] = low_pass(x, method.lowpass).detach().cpu()
                if b + 1 < n_batches:
                    checkpoint(b + 1, 0, None, None)
    except KeyboardInterrupt:
        if ckpt is not None and "t" in locals() and "done_t" in locals():
            settle(b)
            checkpoint(b, done_t, x, optim, extras)
        raise
    finally:
        bar.close()
        for r in recorders.values():
            r.remove()
    seconds = elapsed + time.perf_counter() - t0
    return SynthesisResult(images, targets, final, seconds, method.to_dict(), asdict(opts), priors, resumed_from)


def _main_view(recorded: torch.Tensor, n: int, total: int) -> torch.Tensor:
    """The part of a tensor recorded inside the model that belongs to the first `n` of `total`
    images (the main view): its leading dimension is image-major, B or B·windows (Swin)."""
    return recorded if total == n else recorded[: recorded.shape[0] // total * n]


CHECKPOINT_KEYS = ("identity", "images", "targets", "priors", "gen", "batch", "iteration", "adam", "seconds")


def run_identity(method: Method, opts: SynthesisOptions, model_sha256: str) -> dict:
    """What a resumed synthesis must share with the run it continues: the whole method (terms,
    schedule, rounds...), the options that change the images, and the model's weights (their
    `models.loading.fingerprint`, computed once per run by the caller)."""
    return {"method": method.to_dict(), "options": _comparable(opts), "model_sha256": model_sha256}


def read_checkpoint(path: Path, identity: dict | None) -> dict:
    """A synthesis checkpoint, refused in one line when unreadable, incomplete, or written by another
    run (the advice is --overwrite: dropping --resume is refused while the checkpoint is there)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise CheckpointError(f"synthesis checkpoint {path} is unreadable (empty, truncated or corrupt); "
                              f"start over with --overwrite") from None
    if not isinstance(state, dict) or any(k not in state for k in CHECKPOINT_KEYS) \
            or not isinstance(state["images"], torch.Tensor):
        raise CheckpointError(f"synthesis checkpoint {path} is incomplete (not written by this dfqvit); "
                              f"start over with --overwrite")
    if identity is not None and state["identity"] != identity:
        found = state["identity"] if isinstance(state["identity"], dict) else {}
        what = [k for k in ("method", "options", "model_sha256") if found.get(k) != identity.get(k)]
        names = {"method": "method (or its schedule, terms, rounds)", "options": "synthesis options",
                 "model_sha256": "model weights"}
        raise CheckpointError(f"synthesis checkpoint {path} was written with other {', '.join(names[w] for w in what)}; "
                              f"resume with the command that wrote it, or start over with --overwrite")
    return state


def _comparable(opts: SynthesisOptions) -> dict:
    d = asdict(opts)
    d.pop("checkpoint_every")
    d.pop("cuda_graphs")  # how the steps run, not what they compute
    return d
