#!/usr/bin/env bash
# The GPU check, in one call, on a machine with a CUDA GPU (about 5 minutes):
# the card, the CUDA-marked tests, then both benchmarks on the GPU with their ratios.
# Installs nothing beyond the project (`make install` if .venv is absent).
#     bash scripts/gpu_check.sh            # writes results/gpu/*.json
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || make install
PY=.venv/bin/python
mkdir -p results/gpu
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
$PY -c "import torch; assert torch.cuda.is_available(), 'torch sees no CUDA device'; print('torch', torch.__version__, 'on', torch.cuda.get_device_name(0))"
$PY -m pytest -q -m cuda tests/pyrovae/test_cuda.py
timeout 240 $PY scripts/benchmark_training.py --device cuda --rounds 20 --no-ablations \
    --out results/gpu/benchmark_training.json
timeout 180 $PY scripts/benchmark_evaluation.py --device cuda --rounds 3 --out results/gpu/benchmark_evaluation.json
echo "gpu_check done: results/gpu/"
