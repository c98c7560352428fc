"""Calibration: observers watch the calibration images pass, then scales are frozen."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from .quant.wrap import QuantizedViT


@torch.no_grad()
def calibrate(qmodel: QuantizedViT, images: torch.Tensor, batch_size: int = 32, progress: bool = False) -> QuantizedViT:
    """Set every scale and zero point from `images` (synthetic, noise or real).

    Activations are observed in one float pass, so each observer sees the statistics
    of the full-precision network, the common PTQ-for-ViT protocol.
    """
    if len(images) == 0:
        raise ValueError("calibration needs at least one image")
    for layer in qmodel.weighted_layers():
        layer.calibrate_weight()
    act_quantizers = [q for q in qmodel.quantizers() if q.mode != "quant"]
    for q in act_quantizers:
        q.mode = "observe"
    batches = range(0, len(images), batch_size)
    for start in tqdm(batches, desc="calibrate", disable=not progress, leave=False):
        qmodel(images[start:start + batch_size])
    for q in act_quantizers:
        q.freeze()
        if hasattr(q.observer, "samples"):  # free the kept values once the scale is set
            q.observer.samples = []
    return qmodel
