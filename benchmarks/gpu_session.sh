#!/usr/bin/env bash
# One lent-GPU session (the device tool), from the repository root of the machine that has the GPU:
#   bash benchmarks/gpu_session.sh OUTDIR SECONDS [imagenet|cifar10|speed]
# versions, the CUDA-only tests (CUDA-graph replay), synthesis speed (fp32 and bf16, batch 32 and
# 128; eager and CUDA-graph steps), then the time-boxed cells (none for `speed`):
# imagenet → benchmarks/imagenet_gpu.py (every method at the papers' setting);
# cifar10 → benchmarks/cifar10_table.py, every source × bits × 3 seeds, 8 processes sharing the GPU.
# Results land in OUTDIR (tarred JSON, synthetic sets). Expects the ../shared files it needs under
# $DFQVIT_SHARED (default gpu_shared/; for cifar10 also the decoded eval set, eval-*.pt, and any
# synthetic sets syn-*.pt from earlier runs).
set -u
OUT=${1:?output folder}
BUDGET=${2:-480}
TASK=${3:-imagenet}
export PYTHONUNBUFFERED=1 PYTHONPATH=src DFQVIT_SHARED=${DFQVIT_SHARED:-gpu_shared}
start=$(date +%s)
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_scale.py -k "cuda_graph or graphed_run" 2>&1 | tail -15
# boxed MAX CMD...: CMD for at most MAX s, and never past the session's SECONDS (less 20 s to pack
# the results); skipped under 30 s
boxed() {
  local most=$1 left=$(( BUDGET - ($(date +%s) - start) - 20 ))
  shift
  if [ "$left" -lt 30 ]; then echo "skipped (time): $*"; return; fi
  timeout $(( left < most ? left : most )) "$@"
}
# each run saves its JSON after every method: a run its timeout stops keeps what it measured
speed() { boxed 120 python3 benchmarks/synthesis_speed.py --model deit_tiny_patch16_224 --device cuda "$@"; }
speed --iterations 40
speed --iterations 40 --amp
speed --iterations 20 --batch-size 128 --methods dfq-vit,mimiq,sardfq
speed --iterations 20 --batch-size 128 --methods dfq-vit,mimiq,sardfq --amp
speed --iterations 10 --gpu-busy --methods psaq,dfq-vit,mimiq  # kernels per step (profiled: slow), own JSON
# each loss term alone on the GPU (eager, synchronised): what is left of the ratio, term by term
boxed 90 python3 benchmarks/term_speed.py --model deit_tiny_patch16_224 --device cuda --repeats 20
left=$(( BUDGET - ($(date +%s) - start) - 45 ))
echo "cells: $left s from $(( $(date +%s) - start )) s"
if [ "$TASK" = speed ]; then
  tar czf "$OUT/results.tar.gz" benchmarks/results/synthesis_speed_*cuda*.json benchmarks/results/term_speed_*cuda*.json
elif [ "$TASK" = cifar10 ]; then
  # the decoded eval set, and image sets made before (syn-*.pt, ~0.4 MB each): cells still missing
  # from a row are then quantized from the images its other cells used, not from a new draw
  mkdir -p benchmarks/cache && cp "$DFQVIT_SHARED"/eval-*.pt benchmarks/cache/
  cp "$DFQVIT_SHARED"/syn-*.pt benchmarks/cache/ 2>/dev/null || true
  timeout -k 5 $(( left + 30 )) python3 benchmarks/cifar10_table.py --presets strong-synthetic --workers 8 \
    --deadline "$left" --tag=-gpu --no-grids
  tar czf "$OUT/results.tar.gz" benchmarks/results/cifar10_*-gpu.json benchmarks/results/synthesis_speed_*cuda*.json
  tar cf - benchmarks/cache/syn-*.pt | split -b 15M - "$OUT/synthetic.tar.part-"  # files come back ≤ 16 MiB
else
  mkdir -p "$OUT/images"
  timeout $(( left + 35 )) python3 benchmarks/imagenet_gpu.py --deadline "$left" --export-images "$OUT/images"
  tar czf "$OUT/results.tar.gz" benchmarks/results/imagenet_gpu.json benchmarks/results/synthesis_speed_*cuda*.json
fi
echo "session took $(( $(date +%s) - start )) s"
