"""Closed-form compensation of activation-quantization error in the weights (ERQ's first step).

A Linear layer sees its input x only after the input quantizer has rounded it: x̂ = Q(x).
Rounding the weights cannot undo what x̂ lost, but changing them can: the weights W' that
best reproduce the float output from the rounded input solve a ridge regression,

    W' = argmin ‖X Wᵀ − X̂ W'ᵀ‖² + λ‖W' − W‖²  ⇒  W'ᵀ = (X̂ᵀX̂ + λI)⁻¹ (X̂ᵀX Wᵀ + λ Wᵀ),

over the calibration tokens (X: the layer's inputs in the quantized model before its input
quantizer, X̂ after it), each token weighted by 1/‖x_t Wᵀ‖ as the output-error range search
weighs it (quant/search.py). λ is a fraction of the mean diagonal of X̂ᵀX̂, which keeps W' near
W where the calibration images say little (synthetic images excite few directions). The
weight quantizer is then re-fitted to W'; GPTQ, if chosen, rounds W' afterwards, and
since W' is the least-squares optimum the two errors add: ‖XWᵀ − X̂Qᵀ‖² =
‖XWᵀ − X̂W'ᵀ‖² + ‖X̂(W' − Q)ᵀ‖² (at λ = 0).

Layers go block by block, each block's statistics gathered with every earlier block already
compensated (and quantized), as its inputs will be at inference.
"""
from __future__ import annotations

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..passes import StopForward, run_with_hooks
from .gptq import _groups
from .search import POWER

# λ as a fraction of mean(diag(X̂ᵀX̂)). Chosen on the ImageNet ViT-Tiny at W4A4, strong-synthetic with 32
# real calib/ images, the first 300 sample/ images: KL to FP 1.254 (λ 0.001), 1.246 (0.01), 1.328 (0.03),
# 1.412 (0.1), 1.693 without compensation.
DEFAULT_RIDGE = 0.01


@torch.no_grad()
def ridge_compensated_weight(weight: torch.Tensor, xhat_xhat: torch.Tensor, xhat_x: torch.Tensor,
                             ridge: float = DEFAULT_RIDGE) -> torch.Tensor:
    """W' (out × in) from the Gram X̂ᵀX̂ and the cross term X̂ᵀX (in × in), in float64."""
    h = xhat_xhat.double()
    lam = ridge * torch.diag(h).mean().clamp(min=1e-12)
    eye = torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
    w = weight.detach().double()
    rhs = xhat_x.double() @ w.T + lam * w.T
    return torch.linalg.solve(h + lam * eye, rhs).T.to(weight.dtype)


@torch.no_grad()
def compensate_activation_error(qmodel: nn.Module, images: torch.Tensor, batch_size: int = 32,
                                ridge: float = DEFAULT_RIDGE, progress: bool = False) -> int:
    """Replace every quantized Linear's float weight by its ridge-compensated W' and re-fit the
    weight quantizer (calibrated model, input quantizers frozen). Returns the number of layers."""
    count = 0
    for layers in tqdm(_groups(qmodel), desc="compensate", disable=not progress, leave=False):
        stats = {id(m): [torch.zeros(m.inner.in_features, m.inner.in_features, dtype=torch.float64,
                                     device=m.inner.weight.device) for _ in range(2)] for m in layers}
        last = layers[-1]

        def grab(module, args, _last=last):
            x = args[0].detach().reshape(-1, module.inner.in_features)
            xq = module.input_quantizer(x.clone()).double()
            x = x.double()
            # tokens weighted by 1/‖y_t‖ as the range search weighs them: the few "massive" tokens the
            # input ranges clip would otherwise decide W' alone and bend it for every other token
            w = (x @ module.inner.weight.detach().double().T).norm(dim=1).clamp(min=1e-12).pow(-2 * POWER)
            gram, cross = stats[id(module)]
            gram += (xq * w[:, None]).T @ xq
            cross += (xq * w[:, None]).T @ x
            if module is _last:
                raise StopForward

        run_with_hooks(qmodel, images, batch_size, pre_hooks=[(m, grab) for m in layers])
        for m in layers:
            gram, cross = stats[id(m)]
            if not torch.count_nonzero(gram):
                continue
            m.inner.weight.copy_(ridge_compensated_weight(m.inner.weight, gram, cross, ridge))
            m.calibrate_weight()
            count += 1
    return count
