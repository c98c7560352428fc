"""Second-order error-compensating weight rounding (GPTQ / OPTQ) on the calibration images.

For a Linear layer with (quantized) inputs X, the output error of a weight change ΔW is
‖ΔW X‖², whose Hessian is H = 2 X Xᵀ. GPTQ quantizes the columns one at a time and
spreads each column's rounding error over the columns not yet quantized, using the
inverse Hessian (through its Cholesky factor), so later columns absorb the error.
Scales and zero points stay the ones the weight observer chose; only the rounding
changes, and the result lies exactly on the quantizer's grid.

Layers are processed block by block: the Hessians of a block's layers are collected
with every earlier block already GPTQ-quantized, as its inputs will be at inference.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..models.attention import find_blocks
from ..passes import StopForward, run_with_hooks
from .modules import QuantLinear
from .quantizers import fake_quant_affine


@torch.no_grad()
def gptq_weight(weight: torch.Tensor, hessian: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                bits: int, damp: float = 0.01, block_size: int = 128, act_order: bool = True) -> torch.Tensor:
    """GPTQ-rounded copy of `weight` (out × in) for per-output-channel `scale`, `zero_point` (out × 1)."""
    w = weight.detach().clone().double()
    h = hessian.detach().clone().double()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(w.shape[1])
    w, h = w[:, perm], h[perm][:, perm]
    h += damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    s, z = scale.double().reshape(-1), zero_point.double().reshape(-1)
    q_all = torch.zeros_like(w)
    for i1 in range(0, w.shape[1], block_size):
        i2 = min(i1 + block_size, w.shape[1])
        w1, err1, hinv1 = w[:, i1:i2].clone(), torch.zeros_like(w[:, i1:i2]), hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = w1[:, i]
            q = fake_quant_affine(col, s, z, bits)
            q_all[:, i1 + i] = q
            err = (col - q) / hinv1[i, i]
            w1[:, i:] -= err[:, None] * hinv1[i, i:][None, :]
            err1[:, i] = err
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return q_all[:, torch.argsort(perm)].to(weight.dtype)


def _groups(qmodel: nn.Module) -> list[list[QuantLinear]]:
    """Quantized Linear layers grouped by transformer block, in forward order; the rest last."""
    seen: set[int] = set()
    groups = []
    for _, block in find_blocks(qmodel):
        layers = [m for m in block.modules() if isinstance(m, QuantLinear)]
        seen.update(id(m) for m in layers)
        groups.append(layers)
    rest = [m for m in qmodel.modules() if isinstance(m, QuantLinear) and id(m) not in seen]
    return [g for g in groups + [rest] if g]


@torch.no_grad()
def gptq_quantize(qmodel: nn.Module, images: torch.Tensor, batch_size: int = 32, progress: bool = False,
                  damp: float = 0.01) -> int:
    """Replace every quantized Linear's weight by its GPTQ rounding (calibrated model); return the count."""
    count = 0
    groups = _groups(qmodel)
    for layers in tqdm(groups, desc="gptq", disable=not progress, leave=False):
        hessians = {id(m): torch.zeros(m.inner.in_features, m.inner.in_features, dtype=torch.float64,
                                       device=images.device) for m in layers}
        seen = {id(m): 0 for m in layers}
        last = layers[-1]

        def grab(module, args, _last=last):
            x = module.input_quantizer(args[0].detach().clone()).reshape(-1, module.inner.in_features).double()
            hessians[id(module)] += 2 * x.T @ x
            seen[id(module)] += x.shape[0]
            if module is _last:
                raise StopForward

        run_with_hooks(qmodel, images, batch_size, pre_hooks=[(m, grab) for m in layers])
        for m in layers:
            if not seen[id(m)]:
                continue
            wq = m.weight_quantizer
            m.inner.weight.copy_(gptq_weight(m.inner.weight, hessians[id(m)] / seen[id(m)], wq.scale,
                                             wq.zero_point, wq.bits, damp))
            count += 1
    return count
