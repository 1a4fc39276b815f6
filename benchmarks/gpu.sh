#!/usr/bin/env bash
# The GPU check, in one go that fits a 10-minute window:
#  1. images per second of the three stages (teacher, heads, student) for resnet32x4 -> resnet8x4
#     and wrn_40_2 -> wrn_16_2 on CIFAR-size random data made on the spot, with and without AMP
#     and channels-last, and the projected time of the paper's 240/60/240-epoch schedule
#     (benchmarks/gpu_throughput.py, at most ~6 minutes);
#  2. the student stage of 3 students in lockstep against 3 separate runs, for resnet56 ->
#     resnet8 and resnet32x4 -> resnet8x4 (benchmarks/lockstep.py, at most ~1.5 minutes);
#  3. with two or more GPUs: the student stage in one process against one process per GPU
#     (benchmarks/ddp.py, torchrun, at most ~2 minutes); skipped on a machine with one GPU.
# Needs an NVIDIA GPU and a Python with torch.
#
#   bash benchmarks/gpu.sh                 # from the repository root (or anywhere)
#   PYTHON=/path/to/python bash benchmarks/gpu.sh --steps 200
#
# Extra arguments go to benchmarks/gpu_throughput.py (see its --help). Each part prints a
# table and, last, one JSON line. Exit status: 2 no NVIDIA GPU, 3 torch missing or without
# CUDA, else that of the first part that failed.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu.sh: nvidia-smi not found: this script needs a machine with an NVIDIA GPU and its driver." >&2
    echo "        (to check the Python part on a CPU: python benchmarks/gpu_throughput.py --device cpu --tiny)" >&2
    exit 2
fi
if ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu.sh: nvidia-smi found no usable GPU:" >&2
    nvidia-smi -L >&2 || true
    exit 2
fi

pick_python() {
    local candidates=()
    [ -n "${PYTHON:-}" ] && candidates+=("$PYTHON")
    [ -x .venv/bin/python ] && candidates+=(.venv/bin/python)
    candidates+=(python3 python)
    for py in "${candidates[@]}"; do
        if command -v "$py" >/dev/null 2>&1 && "$py" -c "import torch" >/dev/null 2>&1; then
            echo "$py"
            return 0
        fi
    done
    return 1
}
if ! PY=$(pick_python); then
    echo "gpu.sh: no Python with torch found (set PYTHON=/path/to/python)." >&2
    exit 3
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu.sh: $PY has torch $("$PY" -c 'import torch; print(torch.__version__)') but it sees no CUDA GPU" >&2
    echo "        (a CPU-only build, or a driver too old for its CUDA). Install a CUDA build of torch." >&2
    exit 3
fi

echo "== $(date -u +%Y-%m-%dT%H:%M:%SZ)  $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -1)"
echo "== $PY: torch $("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
status=0
echo "== 1/3 throughput of each stage, projected paper schedule"
# stops starting measurements after --budget-s; the timeout is a last resort
timeout --signal=INT 360 "$PY" benchmarks/gpu_throughput.py --device cuda --budget-s 300 "$@" || status=$?
echo "== 2/3 students in lockstep against separate runs"
timeout --signal=INT 100 "$PY" benchmarks/lockstep.py --device cuda --steps 50 --rounds 3 || [ "$status" -ne 0 ] || status=$?
gpus=$(nvidia-smi -L | grep -c '^GPU ' || true)
if [ "$gpus" -ge 2 ]; then
    echo "== 3/3 one process per GPU ($gpus) against one process"
    timeout --signal=INT 130 "$PY" benchmarks/ddp.py --device cuda --nproc "$gpus" --steps 100 --timeout 60 \
        || [ "$status" -ne 0 ] || status=$?
else
    echo "== 3/3 one process per GPU: skipped, this machine has $gpus GPU"
fi
exit "$status"
