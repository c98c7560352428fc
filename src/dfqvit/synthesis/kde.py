"""Gaussian kernel density at a few grid points, with a lean hand-written backward.

Both entropy terms evaluate a KDE of many similarities (a ViT-Tiny at 224: 12 blocks × 32 images ×
19,110 pairs) at 10 grid points. Written as plain tensor ops, autograd allocates five (…, G, M)
temporaries in the forward, keeps several for the backward and allocates as many again there:
most of the entropy terms' time went to that memory traffic, not to arithmetic. Here the forward
builds the kernel values in one buffer, in place, and keeps only that buffer; the backward adds one
more (the differences) and contracts over the grid with a matmul. Values and gradients are those of
the plain formula (tested against it).
"""
from __future__ import annotations

import torch


class _GaussianKDE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, samples: torch.Tensor, grid: torch.Tensor, bandwidth: torch.Tensor) -> torch.Tensor:
        diff = grid.unsqueeze(-1) - samples.unsqueeze(-2)  # (…, G, M)
        weight = diff.div_(bandwidth.unsqueeze(-1)).square_().mul_(-0.5).exp_()  # exp(−½((g − s)/h)²)
        ctx.save_for_backward(samples, grid, bandwidth, weight)
        return weight.mean(dim=-1)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, None, None]:
        samples, grid, bandwidth, weight = ctx.saved_tensors
        slope = (grid.unsqueeze(-1) - samples.unsqueeze(-2)).mul_(weight)  # h²·d/ds exp(−½((g − s)/h)²)
        grad = (grad_out.unsqueeze(-2) @ slope).squeeze(-2)  # Σ_g grad_g · slope_g: (…, M)
        grad = grad / (bandwidth.square() * samples.shape[-1])
        return _sum_to(grad, samples.shape), None, None


def _sum_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum out the dimensions broadcasting added, so the gradient has the input's shape."""
    while t.dim() > len(shape):
        t = t.sum(dim=0)
    dims = [i for i, (a, b) in enumerate(zip(t.shape, shape)) if b == 1 and a != 1]
    return t.sum(dim=dims, keepdim=True) if dims else t


def gaussian_kde(samples: torch.Tensor, grid: torch.Tensor, bandwidth: torch.Tensor | float) -> torch.Tensor:
    """mean_m exp(−½((grid_g − samples_m)/h)²), unnormalised: (…, G).

    `samples` (…, M); `grid` (…, G) and `bandwidth` (…, 1) broadcast against its leading
    dimensions and are constants (no gradient flows to them — both entropy terms detach them).
    """
    if grid.requires_grad or (isinstance(bandwidth, torch.Tensor) and bandwidth.requires_grad):
        raise ValueError("gaussian_kde: grid and bandwidth must be constants (detach them)")
    bandwidth = torch.as_tensor(bandwidth, dtype=samples.dtype, device=samples.device)
    if bandwidth.dim() == 0:
        bandwidth = bandwidth.reshape(1)
    return _GaussianKDE.apply(samples, grid, bandwidth)
