#!/usr/bin/env bash
# I3D extraction benchmark with ONNX Runtime's CUDAExecutionProvider (fp32 and fp16) on a GPU
# machine. Prepared, not yet run here (the session that wrote it had no GPU).
#
# What it measures (bench/bench_i3d.py --provider cuda): RGB-stream snippets/s at batch 1, 8
# and 32 for the fp32 graph and its fp16 conversion (float32 I/O, so host->device copies are
# included, as in the service); the PyTorch eager baseline on CUDA when this machine's torch
# has CUDA (else ONNX Runtime only); CPU optical flow per method and the two-stream rate.
#
# Usage (from anywhere; ~3-5 min):
#     bash bench/device_i3d.sh [ONNX_DIR]
# ONNX_DIR holds rgb.onnx/flow.onnx from `hamnet export-i3d`; without it the recipe weights
# (random, not pretrained: speed does not depend on them) are exported first, which needs torch.
# Results: $OUT/i3d_cuda.md if $OUT is set (device runner), else bench/results/i3d_cuda.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-bench/results}"
mkdir -p "$OUT_DIR"
PY="${PYTHON:-python3}"
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
export PYTHONPATH="$PWD/model${PYTHONPATH:+:$PYTHONPATH}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
  || echo "warning: nvidia-smi not available"
"$PY" - <<'PYEOF'
import sys
try:
    import onnxruntime as ort
except ModuleNotFoundError:
    sys.exit("onnxruntime is not installed (needs the onnxruntime-gpu build)")
providers = ort.get_available_providers()
print("onnxruntime", ort.__version__, providers)
if "CUDAExecutionProvider" not in providers:
    sys.exit("this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu)")
PYEOF

ONNX_DIR="${1:-}"
if [ -z "$ONNX_DIR" ]; then
  ONNX_DIR="$(mktemp -d)"
  echo "exporting recipe graphs to $ONNX_DIR"
  timeout 300 "$PY" -m hamnet export-i3d --recipe --out "$ONNX_DIR"
fi

TORCH_ARGS=(--skip-torch)
if "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  TORCH_ARGS=(--torch-device cuda)
fi

timeout 420 "$PY" bench/bench_i3d.py --provider cuda --onnx-dir "$ONNX_DIR" \
  --batches 1 8 32 --repeats 20 --repeats-large 10 --threads 8 --tvl1-pairs 15 \
  "${TORCH_ARGS[@]}" --out "$OUT_DIR/i3d_cuda.md"
cat "$OUT_DIR/i3d_cuda.md"
