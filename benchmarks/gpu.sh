#!/usr/bin/env bash
# Images per second of the three stages (teacher, heads, student) for resnet32x4 -> resnet8x4
# and wrn_40_2 -> wrn_16_2 on CIFAR-size random data made on the spot, with and without AMP
# and channels-last, and the projected time of the paper's 240/60/240-epoch schedule.
# Needs an NVIDIA GPU and a Python with torch; about 2-4 minutes on one H100 (at most ~8).
#
#   bash benchmarks/gpu.sh                 # from the repository root (or anywhere)
#   PYTHON=/path/to/python bash benchmarks/gpu.sh --steps 200
#
# Extra arguments go to benchmarks/gpu_throughput.py (see its --help). Prints a table and,
# last, one JSON line. Exit status: 2 no NVIDIA GPU, 3 torch missing or without CUDA.
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
# the Python part stops starting measurements after --budget-s (420 s); the timeout is a last resort
exec timeout --signal=INT 540 "$PY" benchmarks/gpu_throughput.py --device cuda "$@"
