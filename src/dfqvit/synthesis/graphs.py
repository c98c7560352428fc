"""One synthesis step replayed as a CUDA graph.

At batch 32 a ViT-Tiny step on an H100 is bound by the host launching its ~600 kernels, not by
the GPU running them (torch.profiler: `dfq-vit` 20.2 ms a step, 12.3 ms of kernels). A CUDA graph
records the step's kernels once and replays them with one launch. Whatever changes from step to
step must then be a tensor the graph reads: the augmentation draws (crop matrices, the
jitter/flip permutation) are copied into fixed input buffers before each replay, the learning
rate is a device tensor, and Adam is `capturable`. The random draws stay on the host generator,
so a graphed run draws exactly what an eager one does.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

from .schedules import to_device

# Devices whose synthesis steps are captured (tests switch it, like losses.BATCH_ON).
GRAPH_ON = {"cuda"}
# Eager steps before the capture: cuBLAS and the caching allocator settle, Adam creates its state
# (torch.cuda.graphs' whole-network recipe; they run on a side stream, as it asks).
WARMUP_STEPS = 3

StepBody = Callable[[dict[str, torch.Tensor]], torch.Tensor]


class CapturedStep:
    """Runs `body(inputs)` — one optimisation step that returns its loss terms — eagerly for the
    first WARMUP_STEPS calls, then captures it once and replays it. `inputs` are host tensors of
    fixed shapes (the step's random draws). If the capture fails, it warns once and stays eager."""

    def __init__(self, body: StepBody, device: torch.device) -> None:
        self.body = body
        self.device = device
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static: dict[str, torch.Tensor] = {}
        self.out: torch.Tensor | None = None
        self.eager_left = WARMUP_STEPS
        self.failed: str | None = None
        self._side = torch.cuda.Stream(device)  # the eager warm-up steps, as the recipe asks
        self._capture = torch.cuda.Stream(device)  # torch.cuda.graph's default stream is made once, on one device

    def _eager(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        self._side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self._side):
            out = self.body({k: to_device(v, self.device) for k, v in inputs.items()})
        torch.cuda.current_stream(self.device).wait_stream(self._side)
        return out

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        # on the step's own GPU: a capture records only the work of its device's capturing stream,
        # so a step on cuda:1 captured while cuda:0 is current would record nothing
        with torch.cuda.device(self.device):
            return self._call(inputs)

    def _call(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.failed is not None or self.eager_left > 0:
            self.eager_left -= 1
            return self._eager(inputs)
        if self.graph is None:
            self.static = {k: v.to(self.device) for k, v in inputs.items()}
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            try:
                with torch.cuda.graph(graph, stream=self._capture):
                    self.out = self.body(self.static)
            except Exception as e:  # an op that cannot be captured: this run's steps stay eager
                self.failed = f"{type(e).__name__}: {e}".splitlines()[0]
                warnings.warn(f"synthesis: CUDA graph capture failed ({self.failed}); running eager steps")
                torch.cuda.synchronize(self.device)
                return self._eager(inputs)
            self.graph = graph
        else:
            for k, v in inputs.items():
                self.static[k].copy_(v.pin_memory(), non_blocking=True)
        self.graph.replay()
        return self.out.clone()
