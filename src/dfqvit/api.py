"""The public Python API: load → synthesize → quantize (calibrate + correct) → evaluate → export."""
from __future__ import annotations

import copy
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn as nn

from .calibration import calibrate
from .correction.acm import ACM_VARIANTS, block_gap, compute_acm
from .correction.distill import DistillOptions, distill
from .correction.reconstruct import ReconstructOptions, reconstruct
from .data import digits_split, gaussian_noise_images, load_folder_tensors
from .data.folder import ImageFolderDataset, eval_transform
from .data.lowpass import SPECTRUM_IMAGES, auto_sigma, low_pass
from .errors import ConfigError, DataError
from .evaluation import metrics, predict, tensor_batches
from .export import load_quantized, save_quantized
from .models import LoadedModel, find_blocks, load_model, load_model_config, make_observable, patch_pixels
from .models.tiny import TINY_MODEL_NAME
from .quant.config import QuantConfig
from .quant.compensate import compensate_activation_error
from .quant.gptq import gptq_quantize
from .quant.relu_mlp import ReluFitOptions, fit_relu_mlps
from .quant.reparam import reparameterize
from .quant.search import search_linear_inputs
from .quant.wrap import QuantizedViT
from .synthesis import Method, SynthesisOptions, SynthesisResult, get_method, synthesize_images
from .synthesis.methods import DEFAULT_METHOD
from .utils import resolve_device, seed_everything

__all__ = ["QuantConfig", "SynthesisOptions", "DistillOptions", "ReconstructOptions", "load_model",
           "load_model_config", "synthesize", "quantize", "evaluate", "save_quantized", "load_quantized",
           "observable_copy"]

EvalData = str | Path | tuple[torch.Tensor, torch.Tensor] | None


def observable_copy(model: nn.Module) -> nn.Module:
    """A copy of the float model whose attention steps can be read; the original is untouched."""
    return make_observable(copy.deepcopy(model)).eval()


def _input_size(loaded: LoadedModel) -> tuple[int, int, int]:
    return tuple(loaded.data_config["input_size"])


def synthesize(loaded: LoadedModel, method: str | Method = DEFAULT_METHOD, options: SynthesisOptions | None = None,
               device: str | None = None, checkpoint_path: str | Path | None = None, resume: bool = False,
               calib_data: str | Path | None = None, progress: bool = True,
               skip_bad_images: bool = False) -> SynthesisResult:
    """Calibration images for `method` (default: dfq-vit-natural): optimised (psaq, dfq-vit, ...), Gaussian noise,
    or real."""
    m = get_method(method) if isinstance(method, str) else method
    opts = options or SynthesisOptions()
    dev = resolve_device(device)
    seed_everything(opts.seed)
    if resume and not m.synthesizes:
        raise ConfigError(f"--resume: method '{m.name}' optimises nothing, so there is nothing to resume")
    t0 = time.perf_counter()
    if m.source == "noise":
        images = gaussian_noise_images(opts.num_images, _input_size(loaded), opts.seed)
        return SynthesisResult(images, torch.full((len(images),), -1), {}, time.perf_counter() - t0, m.to_dict(), asdict(opts))
    if m.source == "real":
        images, labels = real_images(loaded, calib_data, opts.num_images, opts.seed, skip_bad_images)
        return SynthesisResult(images, labels, {}, time.perf_counter() - t0, m.to_dict(), asdict(opts))
    cfg = loaded.data_config
    return synthesize_images(observable_copy(loaded.model), m, _input_size(loaded), loaded.num_classes,
                             cfg["mean"], cfg["std"], opts, dev, checkpoint_path, resume, progress)


def real_images(loaded: LoadedModel, folder: str | Path | None, n: int, seed: int = 0,
                skip_bad_images: bool = False, skipped: list[str] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` real calibration images: from `folder`, or the digits train split for the embedded default
    (files left out with `skip_bad_images` are appended to `skipped`)."""
    if folder is None:
        if loaded.name != TINY_MODEL_NAME:
            raise DataError("real-image calibration needs --calib-data FOLDER (ImageNet layout)")
        x, y = digits_split("train")
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
        return x[idx], y[idx]
    return load_folder_tensors(folder, loaded.data_config, loaded.num_classes, limit=n, seed=seed,
                               class_names=loaded.class_names, skip_bad=skip_bad_images, skipped=skipped)


def check_images(images: Any, loaded: LoadedModel, source: str = "images") -> torch.Tensor:
    """Calibration images must be a float N×C×H×W tensor (or a streamed shard set) of the model's
    input size, finite and of a normalised image's magnitude (data/checks.py)."""
    from .data.checks import check_image_tensor, value_bound
    from .synthesis.sharded import ShardImages

    bound = value_bound(loaded.data_config["mean"], loaded.data_config["std"])
    if isinstance(images, ShardImages):
        images.expect(_input_size(loaded), bound)  # every shard is checked as it is read
        if tuple(images.shape[1:]) != _input_size(loaded):
            raise DataError(f"{source}: images are {tuple(images.shape[1:])}, the model takes {_input_size(loaded)}")
    else:
        check_image_tensor(images, source, _input_size(loaded), bound)
    if len(images) == 0:
        raise DataError(f"{source}: holds no images")
    return images


def quantize(loaded: LoadedModel, images: torch.Tensor, config: QuantConfig | None = None, acm_every: int = 0,
             distill_options: DistillOptions | None = None, device: str | None = None, batch_size: int = 32,
             progress: bool = True, reconstruct_options: ReconstructOptions | None = None,
             acm_variant: str = "mean") -> tuple[QuantizedViT, dict[str, Any]]:
    """Wrap → fit ReLU MLPs to the GELU ones (option) → reparameterize (option) → calibrate → search
    Linear-input ranges (option) → compensate activation error in the weights (option) → GPTQ (option) →
    reconstruct (option) → distil (option) → ACM every `acm_every` blocks.
    Returns the model and a record of what ran."""
    if acm_every < 0:
        raise ConfigError(f"acm-every must be >= 0, got {acm_every}")
    if acm_variant not in ACM_VARIANTS:
        raise ConfigError(f"unknown ACM variant '{acm_variant}' (choose from {', '.join(ACM_VARIANTS)})")
    check_images(images, loaded)
    dev = resolve_device(device)
    images = images.to(dev)
    config = config or QuantConfig()
    given = len(images)
    sigma = (auto_sigma(images[:SPECTRUM_IMAGES], patch_pixels(loaded.model)) if config.calib_blur == "auto"
             else float(config.calib_blur))
    if sigma > 0:  # before the views: a crop of a blurred image is a blurred crop
        images = low_pass(images, sigma) if isinstance(images, torch.Tensor) else images.low_passed(sigma)
    if config.calib_views > 1:
        if not isinstance(images, torch.Tensor):
            raise ConfigError(f"{config.calib_views} calibration views per image need the images in memory; a "
                              f"streamed shard set is large enough without them (calib_views 1)")
        from .data.views import calibration_views

        images = calibration_views(images, config.calib_views, seed=0)
    t0 = time.perf_counter()
    qmodel = QuantizedViT(loaded.model, config).to(dev)
    info: dict[str, Any] = {"quant_config": config.to_dict(), "calibration_images": given}
    if config.calib_blur != 0:
        info["calibration_blur_sigma"] = sigma
    if config.calib_views > 1:
        info["calibration_views"] = len(images)
    if not isinstance(images, torch.Tensor):
        info["calibration_streamed_from"] = str(images.directory)  # a shard set, read shard by shard
    fp = observable_copy(loaded.model).to(dev)  # the float teacher of the fit, reconstruction, distillation, ACM
    if config.mlp_activation == "relu":  # before any range is observed: the MLPs' float weights change
        info["relu_mlp_fit"] = fit_relu_mlps(qmodel, fp, images, ReluFitOptions(), batch_size, progress)
    if config.reparam != "none":
        info["reparameterized_layers"] = reparameterize(qmodel, images, batch_size, config.reparam == "all",
                                                         config.reparam_skip_blocks)
    calibrate(qmodel, images, batch_size, progress)
    if config.act_search == "output":
        info["searched_input_ranges"] = search_linear_inputs(qmodel, images, batch_size)
    if config.act_compensation == "ridge":
        info["compensated_layers"] = compensate_activation_error(qmodel, images, batch_size, progress=progress)
    if config.weight_rounding == "gptq":
        info["gptq_layers"] = gptq_quantize(qmodel, images, batch_size, progress, damp=config.gptq_damp)
    info["calibrate_seconds"] = time.perf_counter() - t0
    if reconstruct_options is not None and reconstruct_options.steps > 0:
        t1 = time.perf_counter()
        info["reconstruct"] = {"options": asdict(reconstruct_options),
                               "block_loss": reconstruct(qmodel, fp, images, reconstruct_options, progress)}
        info["reconstruct_seconds"] = time.perf_counter() - t1
    if distill_options is not None and distill_options.steps > 0:
        t1 = time.perf_counter()
        info["distill"] = {"options": asdict(distill_options),
                           "final_losses": distill(qmodel, fp, images, distill_options, progress)}
        info["distill_seconds"] = time.perf_counter() - t1
    fp_blocks = [b for _, b in find_blocks(fp)]
    gap_before = block_gap(fp_blocks, fp, qmodel.blocks, qmodel, images, batch_size)
    info["acm_every"] = acm_every
    info["acm_variant"] = acm_variant
    info["acm_blocks"] = compute_acm(fp, fp_blocks, qmodel, qmodel.blocks, images, acm_every, batch_size, acm_variant)
    info["block_gap_before_acm"] = gap_before
    if info["acm_blocks"]:
        info["block_gap_after_acm"] = block_gap(fp_blocks, fp, qmodel.blocks, qmodel, images, batch_size)
    info["quantize_seconds"] = time.perf_counter() - t0
    return qmodel.eval(), info


def eval_batches(loaded: LoadedModel, data: EvalData, batch_size: int = 128,
                 skip_bad_images: bool = False) -> tuple[Iterable, str, dict[str, Any] | None]:
    """Held-out digits for the embedded default, an ImageNet-layout folder, or (images, labels) tensors."""
    if data is None:
        if loaded.name != TINY_MODEL_NAME:
            raise DataError("evaluation needs --data FOLDER (ImageNet layout) for this model")
        return tensor_batches(*digits_split("heldout"), batch_size=batch_size), "digits held-out split", None
    if isinstance(data, tuple):
        return tensor_batches(*data, batch_size=batch_size), "tensors", None
    ds = ImageFolderDataset(data, eval_transform(loaded.data_config), loaded.num_classes, loaded.class_names,
                            skip_bad_images)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    return loader, str(data), ds.skipped_report() if ds.skipped else None


def load_eval_tensors(loaded: LoadedModel, data: EvalData, skip_bad_images: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode an evaluation set once (benchmarks evaluate many models on the same images)."""
    batches, _, _ = eval_batches(loaded, data, 256, skip_bad_images)
    xs, ys = zip(*batches)
    return torch.cat(xs), torch.cat([torch.as_tensor(y) for y in ys])


def evaluate(model: nn.Module, loaded: LoadedModel, data: EvalData = None, fp_model: nn.Module | None = None,
             device: str | None = None, batch_size: int = 128, progress: bool = True, skip_bad_images: bool = False,
             fp_logits: torch.Tensor | None = None, return_logits: bool = False) -> dict[str, Any]:
    """Top-1 / top-5 / images per second of `model`; with `fp_model` (or its logits) also top-1
    agreement with it and the mean KL(FP ‖ model). With `return_logits`, the logits are in 'logits'."""
    dev = resolve_device(device)
    batches, source, skipped = eval_batches(loaded, data, batch_size, skip_bad_images)
    if not isinstance(batches, list):
        batches = list(batches)  # decode once, not once per model
    logits, labels, ips = predict(model, batches, dev, "evaluate", progress)
    result: dict[str, Any] = {"data": source}
    if skipped:
        result["skipped_images"] = skipped
    if fp_model is not None and fp_logits is None:
        fp_logits, _, fp_ips = predict(fp_model, batches, dev, "evaluate fp", progress)
        result["fp"] = {**metrics(fp_logits, labels), "images_per_s": fp_ips}
        result["speed_vs_fp"] = ips / fp_ips
    result.update(metrics(logits, labels, fp_logits))
    result["images_per_s"] = ips
    if return_logits:
        result["logits"] = logits
    return result
