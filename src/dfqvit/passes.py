"""One pass of a model over images in batches, with hooks that read (or end) each batch's forward.

Reparameterization, range search, GPTQ, reconstruction and ACM each need to see what some
layers receive or produce on the calibration images; this is the one loop they share.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn as nn


class StopForward(Exception):
    """Raised by a hook once it has what it needs: the rest of that batch's forward is skipped."""


@torch.no_grad()
def run_with_hooks(model: nn.Module, images: torch.Tensor, batch_size: int,
                   pre_hooks: Iterable[tuple[nn.Module, Callable]] = (),
                   forward_hooks: Iterable[tuple[nn.Module, Callable]] = ()) -> None:
    """Run `model` over `images`; `pre_hooks` see (module, args), `forward_hooks` (module, args, output)."""
    handles = [m.register_forward_pre_hook(fn) for m, fn in pre_hooks]
    handles += [m.register_forward_hook(fn) for m, fn in forward_hooks]
    try:
        for start in range(0, len(images), batch_size):
            try:
                model(images[start:start + batch_size])
            except StopForward:
                pass
    finally:
        for h in handles:
            h.remove()
