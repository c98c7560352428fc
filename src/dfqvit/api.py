"""The public Python API: load → synthesize → quantize (calibrate + correct) → evaluate → export."""
from __future__ import annotations

import copy
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .calibration import calibrate
from .correction.acm import block_gap, compute_acm
from .correction.distill import DistillOptions, distill
from .data import digits_split, gaussian_noise_images, load_folder_tensors
from .data.folder import ImageFolderDataset, eval_transform
from .errors import ConfigError, DataError
from .evaluation import metrics, predict, tensor_batches
from .export import load_quantized, save_quantized
from .models import LoadedModel, find_blocks, load_model, make_observable
from .models.tiny import TINY_MODEL_NAME
from .quant.config import QuantConfig
from .quant.wrap import QuantizedViT
from .synthesis import Method, SynthesisOptions, SynthesisResult, get_method, synthesize_images
from .utils import resolve_device, seed_everything

__all__ = ["QuantConfig", "SynthesisOptions", "DistillOptions", "load_model", "synthesize", "quantize",
           "evaluate", "save_quantized", "load_quantized", "observable_copy"]


def observable_copy(model: nn.Module) -> nn.Module:
    """A copy of the float model whose attention steps can be read; the original is untouched."""
    return make_observable(copy.deepcopy(model)).eval()


def _input_size(loaded: LoadedModel) -> tuple[int, int, int]:
    return tuple(loaded.data_config["input_size"])


def synthesize(loaded: LoadedModel, method: str | Method = "dfq-vit", options: SynthesisOptions | None = None,
               device: str | None = None, checkpoint_path: str | Path | None = None, resume: bool = False,
               calib_data: str | Path | None = None, progress: bool = True) -> SynthesisResult:
    """Calibration images for `method`: optimised (psaq, dfq-vit, ...), Gaussian noise, or real."""
    m = get_method(method) if isinstance(method, str) else method
    opts = options or SynthesisOptions()
    dev = resolve_device(device)
    seed_everything(opts.seed)
    t0 = time.perf_counter()
    if m.source == "noise":
        images = gaussian_noise_images(opts.num_images, _input_size(loaded), opts.seed)
        return SynthesisResult(images, torch.full((len(images),), -1), {}, time.perf_counter() - t0, m.to_dict(), asdict(opts))
    if m.source == "real":
        images, labels = real_images(loaded, calib_data, opts.num_images, opts.seed)
        return SynthesisResult(images, labels, {}, time.perf_counter() - t0, m.to_dict(), asdict(opts))
    cfg = loaded.data_config
    return synthesize_images(observable_copy(loaded.model), m, _input_size(loaded), loaded.num_classes,
                             cfg["mean"], cfg["std"], opts, dev, checkpoint_path, resume, progress)


def real_images(loaded: LoadedModel, folder: str | Path | None, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` real calibration images: from `folder`, or the digits train split for the embedded default."""
    if folder is None:
        if loaded.name != TINY_MODEL_NAME:
            raise DataError("real-image calibration needs --calib-data FOLDER (ImageNet layout)")
        x, y = digits_split("train")
        idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n]
        return x[idx], y[idx]
    return load_folder_tensors(folder, loaded.data_config, loaded.num_classes, limit=n, seed=seed)


def quantize(loaded: LoadedModel, images: torch.Tensor, config: QuantConfig | None = None, acm_every: int = 0,
             distill_options: DistillOptions | None = None, device: str | None = None, batch_size: int = 32,
             progress: bool = True) -> tuple[QuantizedViT, dict[str, Any]]:
    """Wrap, calibrate on `images`, optionally distil, then compute the ACM every `acm_every` blocks.

    Returns the quantized model and a record of what ran (for the report).
    """
    if acm_every < 0:
        raise ConfigError(f"acm-every must be >= 0, got {acm_every}")
    dev = resolve_device(device)
    images = images.to(dev)
    config = config or QuantConfig()
    t0 = time.perf_counter()
    qmodel = QuantizedViT(loaded.model, config).to(dev)
    calibrate(qmodel, images, batch_size, progress)
    info: dict[str, Any] = {"quant_config": config.to_dict(), "calibration_images": len(images),
                            "calibrate_seconds": time.perf_counter() - t0}
    fp = observable_copy(loaded.model).to(dev)
    if distill_options is not None and distill_options.steps > 0:
        t1 = time.perf_counter()
        info["distill"] = {"options": asdict(distill_options),
                           "final_losses": distill(qmodel, fp, images, distill_options, progress)}
        info["distill_seconds"] = time.perf_counter() - t1
    fp_blocks = [b for _, b in find_blocks(fp)]
    gap_before = block_gap(fp_blocks, fp, qmodel.blocks, qmodel, images, batch_size)
    info["acm_every"] = acm_every
    info["acm_blocks"] = compute_acm(fp, fp_blocks, qmodel, qmodel.blocks, images, acm_every, batch_size)
    info["block_gap_before_acm"] = gap_before
    if info["acm_blocks"]:
        info["block_gap_after_acm"] = block_gap(fp_blocks, fp, qmodel.blocks, qmodel, images, batch_size)
    info["quantize_seconds"] = time.perf_counter() - t0
    return qmodel.eval(), info


def eval_batches(loaded: LoadedModel, data: str | Path | None, batch_size: int = 128):
    """Held-out digits for the embedded default, else an ImageNet-layout folder."""
    if data is None:
        if loaded.name != TINY_MODEL_NAME:
            raise DataError("evaluation needs --data FOLDER (ImageNet layout) for this model")
        return tensor_batches(*digits_split("heldout"), batch_size=batch_size), "digits held-out split"
    ds = ImageFolderDataset(data, eval_transform(loaded.data_config), loaded.num_classes)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=0)
    return loader, str(data)


def evaluate(model: nn.Module, loaded: LoadedModel, data: str | Path | None = None, fp_model: nn.Module | None = None,
             device: str | None = None, batch_size: int = 128, progress: bool = True) -> dict[str, Any]:
    """Top-1 / top-5 of `model`, and its top-1 agreement with `fp_model` when given."""
    dev = resolve_device(device)
    batches, source = eval_batches(loaded, data, batch_size)
    logits, labels, ips = predict(model, batches, dev, "evaluate", progress)
    fp_logits = None
    result: dict[str, Any] = {"data": source}
    if fp_model is not None:
        fp_logits, _, fp_ips = predict(fp_model, batches, dev, "evaluate fp", progress)
        result["fp"] = {**metrics(fp_logits, labels), "images_per_s": fp_ips}
    result.update(metrics(logits, labels, fp_logits))
    result["images_per_s"] = ips
    return result


def predict_logits(model: nn.Module, loaded: LoadedModel, data: str | Path | None = None,
                   device: str | None = None) -> torch.Tensor:
    batches, _ = eval_batches(loaded, data)
    return predict(model, batches, resolve_device(device))[0]
