#!/usr/bin/env bash
# One lent-GPU session (the device tool), from the repository root of the machine that has the GPU:
#   bash benchmarks/gpu_session.sh OUTDIR SECONDS
# versions, synthesis speed (fp32 and bf16), then the time-boxed ImageNet cells of
# benchmarks/imagenet_gpu.py; results land in OUTDIR (tarred JSON, float16 synthetic sets, log).
# Expects the ../shared/imagenet files it needs under $DFQVIT_SHARED (default gpu_shared/).
set -u
OUT=${1:?output folder}
BUDGET=${2:-480}
export PYTHONUNBUFFERED=1 PYTHONPATH=src DFQVIT_SHARED=${DFQVIT_SHARED:-gpu_shared}
start=$(date +%s)
python3 -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__, torch.cuda.get_device_name())"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for amp in "" "--amp"; do
  timeout 90 python3 benchmarks/synthesis_speed.py --model deit_tiny_patch16_224 --device cuda --iterations 20 $amp
done
left=$(( BUDGET - ($(date +%s) - start) - 45 ))
mkdir -p "$OUT/images"
timeout $(( left + 35 )) python3 benchmarks/imagenet_gpu.py --deadline "$left" --export-images "$OUT/images"
tar czf "$OUT/results.tar.gz" benchmarks/results/imagenet_gpu.json benchmarks/results/synthesis_speed_*cuda*.json
echo "session took $(( $(date +%s) - start )) s"
