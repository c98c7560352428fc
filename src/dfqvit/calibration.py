"""Calibration: observers watch the calibration images pass, then scales are frozen."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .quant.wrap import QuantizedViT


@torch.no_grad()
def calibrate(qmodel: QuantizedViT, images: torch.Tensor, batch_size: int = 32, progress: bool = False) -> QuantizedViT:
    """Set every scale and zero point from `images` (synthetic, noise or real).

    Weights are quantized first; activations are then observed in one pass with float
    activations and quantized weights, so each observer sees the ranges the quantized
    weights produce.
    """
    if len(images) == 0:
        raise ValueError("calibration needs at least one image")
    for layer in qmodel.weighted_layers():
        layer.calibrate_weight()
    weight_quantizers = {id(layer.weight_quantizer) for layer in qmodel.weighted_layers()}
    act = [q for q in qmodel.quantizers() if id(q) not in weight_quantizers]
    done = [q for q in act if q.mode == "quant"]  # set earlier (reparameterization): keep, but observe in float
    todo = [q for q in act if q.mode != "quant"]
    for q in done:
        q.mode = "float"
    for q in todo:
        q.mode = "observe"
    batches = range(0, len(images), batch_size)
    for start in tqdm(batches, desc="calibrate", disable=not progress, leave=False):
        qmodel(images[start:start + batch_size])
    for q in todo:
        q.freeze()
    for q in done:
        q.mode = "quant"
    return qmodel
