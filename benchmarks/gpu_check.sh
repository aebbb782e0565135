#!/usr/bin/env bash
# One command for a GPU machine (CUDA, CuPy, PyTorch installed): the whole test suite on the CuPy
# backend, --check-gradients on the GPU, the benchmark suite against PyTorch CUDA, and short
# CIFAR-10 runs of the `fast` and `resnet9` presets on the GPU.
#
#   pip install -e ".[cuda13,test,data]"          # or [cuda12,...]: the driver's CUDA major version
#   pip install torch                             # a CUDA build, for the benchmark's reference side
#   bash benchmarks/gpu_check.sh [OUT_DIR]        (or GPU_CHECK_OUT=... bash benchmarks/gpu_check.sh)
#
# CIFAR-10 is read from $TINYGRAD_HW_DATA, ./data or shared/datasets/cifar10 (downloaded otherwise).
# Logs and JSON go to OUT_DIR (default benchmarks/results/gpu-<date>), ready to commit.
# Each stage runs even when an earlier one fails; the exit status is that of the first failure.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${GPU_CHECK_OUT:-benchmarks/results/gpu-$(date +%Y%m%d-%H%M)}}"
mkdir -p "$out"
PY="${PYTHON:-python3}"
status=0
stage() {  # stage NAME COMMAND...: run, tee the log, remember the first failure
    local name=$1; shift
    echo "== $name: $*" | tee "$out/$name.log"
    local start=$SECONDS
    "$@" 2>&1 | tee -a "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$out/$name.log"
    [ $status -eq 0 ] && status=$rc
    return 0
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
    $PY -c "import sys, cupy, numpy; print('python', sys.version.split()[0], 'cupy', cupy.__version__, 'numpy', numpy.__version__, 'cuda runtime', cupy.cuda.runtime.runtimeGetVersion())"
    $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
stage tests env TINYGRAD_HW_BACKEND=cupy HYPOTHESIS_PROFILE=ci $PY -m pytest -q -p no:cacheprovider tests
# the CUDA kernels of tinygrad_hw/kernels/cuda.py (off by default until this run proves them)
stage tests_kernels env TINYGRAD_HW_BACKEND=cupy TINYGRAD_HW_CUDA_KERNELS=1 HYPOTHESIS_PROFILE=ci $PY -m pytest -q -p no:cacheprovider tests
stage check_gradients $PY examples/cifar_cnn.py --backend cupy --check-gradients
stage bench $PY -m benchmarks.run --backend cupy --json "$out/bench.json"
stage bench_kernels env TINYGRAD_HW_CUDA_KERNELS=1 $PY -m benchmarks.run --backend cupy --json "$out/bench_kernels.json"
stage cifar_fast $PY examples/cifar_cnn.py --backend cupy --preset fast --out "$out/cifar_fast"
stage cifar_resnet9 $PY examples/cifar_cnn.py --backend cupy --preset resnet9 --epochs 2 --out "$out/cifar_resnet9"
echo "results in $out (first failing stage's exit status: $status)"
exit $status
