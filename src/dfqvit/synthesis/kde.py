"""Gaussian kernel density at a few grid points, with a lean hand-written backward.

Both entropy terms evaluate a KDE of many similarities (a ViT-Tiny at 224: 12 blocks × 32 images ×
19,110 pairs) at 10 grid points. Written as plain tensor ops, autograd allocates five (…, G, M)
temporaries in the forward, keeps several for the backward and allocates as many again there:
most of the entropy terms' time went to that memory traffic, not to arithmetic. Here the forward
builds the kernel values in one buffer, in place, and keeps only that buffer; the backward needs no
other: one matmul over it gives the gradient. Values and gradients are those of
the plain formula (tested against it).
"""
from __future__ import annotations

import torch


class _GaussianKDE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, samples: torch.Tensor, grid: torch.Tensor, bandwidth: torch.Tensor,
                counts: torch.Tensor | None) -> torch.Tensor:
        diff = grid.unsqueeze(-1) - samples.unsqueeze(-2)  # (…, G, M)
        # −½(d/h)² as d²·(−½/h²): one pass over the buffer fewer than dividing, then halving
        exponent = diff.square_().mul_((-0.5 / bandwidth.square()).unsqueeze(-1))
        if exponent.device.type == "cpu":
            # A CPU exp of an argument below −87 (an underflow to a subnormal or 0) takes ~8× the
            # normal path, and with a narrow bandwidth most pairs are that far from a grid point.
            # Clamped, they weigh e^−87 ≈ 1.6e-38 instead of < 1.2e-38: no visible change.
            exponent.clamp_(min=-87.0)
        weight = exponent.exp_()  # exp(−½((g − s)/h)²)
        ctx.save_for_backward(samples, grid, bandwidth, weight, counts)
        if counts is None:
            return weight.mean(dim=-1)
        return (weight @ counts) / counts.sum()

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        samples, grid, bandwidth, weight, counts = ctx.saved_tensors
        # h²·∂/∂s_m Σ_g grad_g·w_gm = Σ_g grad_g·w_gm·(g − s_m) = Σ_g (grad_g·g)·w_gm − s_m·Σ_g grad_g·w_gm:
        # both sums in one matmul over the saved kernel values, no second (…, G, M) buffer.
        grad_out, grid = torch.broadcast_tensors(grad_out, grid)
        sums = torch.stack((grad_out * grid, grad_out), dim=-2) @ weight  # (…, 2, M)
        grad = sums[..., 0, :] - samples * sums[..., 1, :]
        if counts is None:
            grad = grad / (bandwidth.square() * samples.shape[-1])
        else:  # sample m stands for counts[m] equal samples
            grad = grad * (counts / (bandwidth.square() * counts.sum()))
        return grad.sum_to_size(samples.shape), None, None, None  # sum out what broadcasting added


def gaussian_kde(samples: torch.Tensor, grid: torch.Tensor, bandwidth: torch.Tensor | float,
                 counts: torch.Tensor | None = None) -> torch.Tensor:
    """mean_m exp(−½((grid_g − samples_m)/h)²), unnormalised: (…, G).

    `samples` (…, M); `grid` (…, G) and `bandwidth` (…, 1) broadcast against its leading
    dimensions and are constants (no gradient flows to them — both entropy terms detach them).
    `counts` (M,), if given, are multiplicities: sample m stands for counts[m] equal samples (a
    symmetric matrix's KDE from its upper triangle: off-diagonal pairs count twice, at half the work).
    Half-precision samples are computed in float32.
    """
    if grid.requires_grad or (isinstance(bandwidth, torch.Tensor) and bandwidth.requires_grad):
        raise ValueError("gaussian_kde: grid and bandwidth must be constants (detach them)")
    if samples.dtype in (torch.float16, torch.bfloat16):  # the backward's two sums cancel: keep 24 bits
        samples, grid = samples.float(), grid.float()
    if isinstance(bandwidth, torch.Tensor):
        bandwidth = bandwidth.to(samples.dtype)
    else:  # a fill on the device, not a host-to-device copy (which waits for the GPU, and cannot be captured)
        bandwidth = samples.new_full((1,), float(bandwidth))
    if bandwidth.dim() == 0:
        bandwidth = bandwidth.reshape(1)
    if counts is not None:
        if counts.shape != samples.shape[-1:]:
            raise ValueError(f"gaussian_kde: counts must have shape ({samples.shape[-1]},), got {tuple(counts.shape)}")
        counts = counts.to(samples.dtype)
    return _GaussianKDE.apply(samples, grid, bandwidth, counts)
