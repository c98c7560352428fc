"""Milliseconds per synthesis iteration, per method, and the ratio to a bare forward+backward
(to the input) of the same model, batch and device, in one run.

    python benchmarks/synthesis_speed.py                                  # CPU, the embedded tiny ViT
    python benchmarks/synthesis_speed.py --model-config ../shared/cifar10/models/deit_tiny_cifar10.json
    python benchmarks/synthesis_speed.py --model deit_tiny_patch16_224 --device cuda --amp   # a GPU

`--model NAME` without weights builds a randomly initialised timm model (speed does not depend
on the weights). On CUDA each method is timed with eager steps and with its steps replayed as a
CUDA graph (the default there), against the bare step eager and replayed the same way. Writes benchmarks/results/synthesis_speed_<tag>.json.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from common import RESULTS, machine, speed_model
from dfqvit.synthesis import SynthesisOptions, get_method
from dfqvit.synthesis import graphs, losses
from dfqvit.synthesis.loop import Bfloat16Model, synthesize_images

METHODS = ("psaq", "psaq-lite", "dfq-vit", "mimiq", "sardfq")
GRAPH_DEFAULT = set(graphs.GRAPH_ON)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bare_step_ms(model, x: torch.Tensor, iters: int, autocast: bool = False) -> float:
    """A forward+backward to the input; `model` may be the loop's bf16 copy (Bfloat16Model), or
    fp32 under bf16 autocast (`autocast`, what --amp meant before the bf16 copy)."""
    x = x.clone().requires_grad_(True)
    device = x.device
    for i in range(iters + 3):
        if i == 3:
            sync(device)
            t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast and device.type == "cuda"):
            loss = model(x).float().logsumexp(1).mean()
        loss.backward()
        x.grad = None
    sync(device)
    return (time.perf_counter() - t0) / iters * 1000


def bare_graphed_ms(model, x: torch.Tensor, iters: int) -> float:
    """The bare forward+backward replayed as a CUDA graph by the loop's own graphs.CapturedStep
    (the same warm-up, capture and replay, the same copy of its output): the floor a graphed
    synthesis step is measured against."""
    static = x.clone().requires_grad_(True)

    def body(_inputs: dict) -> torch.Tensor:
        loss = model(static).float().logsumexp(1).mean()
        loss.backward()
        static.grad = None
        return loss.detach()

    step = graphs.CapturedStep(body, x.device)
    for _ in range(graphs.WARMUP_STEPS + 3):  # eager warm-up, the capture, then replays
        step({})
    if step.failed is not None:
        raise RuntimeError(f"the bare step could not be captured: {step.failed}")
    torch.cuda.synchronize(x.device)
    t0 = time.perf_counter()
    for _ in range(iters):
        step({})
    torch.cuda.synchronize(x.device)
    return (time.perf_counter() - t0) / iters * 1000


def aten_calls(fn, iterations: int) -> float:
    """ATen operator calls per iteration (torch.profiler, CPU side): on a GPU each is roughly one
    kernel launch, and a small model at batch 32 is bound by launches, not arithmetic."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    return sum(e.count for e in prof.key_averages() if e.key.startswith("aten::")) / iterations


def gpu_busy_ms(fn, iterations: int, top: dict | None = None) -> float | None:
    """Milliseconds per iteration that GPU kernels ran (torch.profiler): against the wall-clock
    step it says whether the step waits for the GPU or for the host launching work. `top`, if
    given, receives the 12 costliest kernels: name → (ms per iteration, launches per iteration)."""
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
        # kernel events only: an operator's own row also counts the kernels it launched
        kernels = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
        us = sum(e.self_device_time_total for e in kernels)
        if top is not None:
            kernels.sort(key=lambda e: -e.self_device_time_total)
            top.update({e.key[:90]: (round(e.self_device_time_total / 1000 / iterations, 3),
                                     round(e.count / iterations, 1)) for e in kernels[:12]})
            top["all kernels"] = (round(us / 1000 / iterations, 3), round(sum(e.count for e in kernels) / iterations, 1))
    except Exception as e:  # a profiler that cannot see the GPU must not cost the timings
        print(f"  (GPU busy time not measured: {type(e).__name__}: {e})")
        return None
    return us / 1000 / iterations


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None)
    p.add_argument("--model-config", default=None)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--count-ops", action="store_true",
                   help="also count ATen calls per iteration (profiled, not timed), on the path a GPU takes "
                        "(per-block loss terms stacked): a proxy for its kernel launches")
    p.add_argument("--gpu-busy", action="store_true", help="also profile the GPU's kernel time per iteration (CUDA)")
    a = p.parse_args()
    device = torch.device(a.device)
    loaded, model, model_name = speed_model(a.model, a.model_config, device)
    size = tuple(loaded.data_config["input_size"])
    x = torch.randn(a.batch_size, *size, device=device)
    stepped = Bfloat16Model(model) if a.amp else model  # what the loop's step runs
    bare = bare_step_ms(stepped, x, a.iterations)
    out = {"model": loaded.name, "batch": a.batch_size, "input": size, "amp": a.amp, "machine": machine(),
           "bare_forward_backward_ms": bare, "methods": {}}
    if a.amp and device.type == "cuda":  # the fp32 model under autocast, for comparison
        out["bare_autocast_ms"] = bare_step_ms(model, x, a.iterations, autocast=True)
        print(f"  bare under bf16 autocast (fp32 weights): {out['bare_autocast_ms']:.1f} ms")
    if device.type in graphs.GRAPH_ON:
        out["bare_graphed_ms"] = bare_graphed_ms(stepped, x, a.iterations)
        print(f"  bare forward+backward replayed as a CUDA graph: {out['bare_graphed_ms']:.1f} ms")
    if a.count_ops:
        out["bare_aten_calls"] = aten_calls(lambda: bare_step_ms(stepped, x, 2), 5)  # 3 warm-up + 2
        print(f"  bare: {out['bare_aten_calls']:.0f} ATen calls per iteration")
    if a.gpu_busy:
        out["bare_gpu_busy_ms"] = gpu_busy_ms(lambda: bare_step_ms(stepped, x, 10), 13,  # 3 warm-up + 10
                                              top=out.setdefault("bare_top_kernels", {}))
    print(f"{loaded.name} {size} batch {a.batch_size} on {device}{' bf16' if a.amp else ''}: "
          f"bare forward+backward {bare:.1f} ms" + (f" (GPU busy {out['bare_gpu_busy_ms']:.1f} ms)"
                                                    if out.get("bare_gpu_busy_ms") else ""))
    tag = f"{model_name}_{device.type}"
    tag += "_bf16" if a.amp else ""
    tag += f"_b{a.batch_size}" if a.batch_size != 32 else ""
    tag += "_ops" if a.count_ops else ""
    tag += "_busy" if a.gpu_busy else ""  # profiled runs keep their own file
    RESULTS.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every method: a run stopped by a time limit keeps what it measured
        (RESULTS / f"synthesis_speed_{tag}.json").write_text(json.dumps(out, indent=1, default=str) + "\n")

    for name in a.methods.split(","):
        method = get_method(name)
        rounds = max(1, len(method.rounds))

        def run(iterations: int) -> None:
            """One synthesis of one batch with `iterations` per round, no progress bar."""
            opts = SynthesisOptions(num_images=a.batch_size, batch_size=a.batch_size, iterations=iterations, amp=a.amp)
            synthesize_images(model, method, size, loaded.num_classes, loaded.data_config["mean"],
                              loaded.data_config["std"], opts, device, progress=False)

        def seconds(iterations: int) -> float:
            sync(device)
            t0 = time.perf_counter()
            run(iterations)
            sync(device)
            return time.perf_counter() - t0

        graphed = device.type in graphs.GRAPH_ON
        graphs.GRAPH_ON = set()  # eager steps first: the numbers earlier sessions measured
        try:
            run(2)  # warm-up
            ms = seconds(a.iterations) / (a.iterations * rounds) * 1000
        finally:
            graphs.GRAPH_ON = GRAPH_DEFAULT
        row = out["methods"][name] = {"ms_per_iteration": ms, "ratio_to_bare": ms / bare}
        print(f"  {name:10s} {ms:8.1f} ms/iteration  ×{ms / bare:.2f}" + ("  (eager)" if graphed else ""))
        if graphed:  # replayed as a CUDA graph: steady-state ms from two run lengths (capture and warm-up cancel)
            short = 12
            run(short)
            once, more = seconds(short), seconds(short + a.iterations)
            steady = (more - once) / (a.iterations * rounds) * 1000
            row.update(graphed_ms_per_iteration=steady, graphed_ratio_to_bare=steady / bare,
                       graphed_ratio_to_graphed_bare=steady / out["bare_graphed_ms"],
                       graph_fixed_ms_per_round=(once * 1000 - steady * short * rounds) / rounds)
            print(f"  {'':10s} {steady:8.1f} ms/iteration  ×{steady / bare:.2f}  (CUDA graph; "
                  f"×{steady / out['bare_graphed_ms']:.2f} of the graphed bare step; capture and 3 eager "
                  f"steps +{row['graph_fixed_ms_per_round']:.0f} ms a round)")
        if a.gpu_busy:
            graphs.GRAPH_ON = set()  # the eager step's kernels
            try:
                busy = gpu_busy_ms(lambda: run(10), 10 * rounds, top=out["methods"][name].setdefault("top_kernels", {}))
            finally:
                graphs.GRAPH_ON = GRAPH_DEFAULT
            out["methods"][name]["gpu_busy_ms"] = busy
            if busy is not None:
                print(f"  {'':10s} {busy:8.1f} ms/iteration of GPU kernels")
        if a.count_ops:  # counted on the path a GPU takes: per-block terms stacked
            default = losses.BATCH_ON
            losses.BATCH_ON = default | {device.type}
            try:
                calls = aten_calls(lambda: run(2), 2 * rounds)
            finally:
                losses.BATCH_ON = default
            out["methods"][name].update(aten_calls=calls, aten_calls_ratio=calls / out["bare_aten_calls"])
            print(f"  {'':10s} {calls:8.0f} ATen calls/iteration  ×{calls / out['bare_aten_calls']:.2f}")
        save()
    save()


if __name__ == "__main__":
    main()
