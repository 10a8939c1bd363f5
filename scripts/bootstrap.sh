#!/usr/bin/env bash
# Install what the project needs on a fresh Debian machine: system packages (only when missing)
# and a virtual environment in .venv with the package and its extras.
# Usage: scripts/bootstrap.sh [EXTRAS]   (default extras: train,worker,service,dev)
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-train,worker,service,dev}"

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v ffmpeg >/dev/null 2>&1 || need+=(ffmpeg)
if [[ ",$EXTRAS," == *",dev,"* ]]; then
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
fi
if ((${#need[@]})); then
  echo "[bootstrap] installing system packages: ${need[*]}"
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

PY="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
  echo "[bootstrap] creating .venv"
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=".venv/.hamnet-installed-$(cat pyproject.toml scripts/constraints.txt | sha1sum | cut -c1-12)-${EXTRAS//,/_}"
if [[ ! -f "$stamp" ]]; then
  echo "[bootstrap] installing hamnet[$EXTRAS] into .venv"
  python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
  if [[ ",$EXTRAS," == *",train,"* ]]; then
    # The CPU wheel of torch 2.13.0 lies on disk; an unpinned torch would pull a CUDA build.
    python -m pip install -q torch==2.13.0 2>&1 | grep -v "^WARNING: Location" || true
  fi
  # Exact versions (scripts/constraints.txt): what the registry serves next month must not
  # change what the tests run against.
  python -m pip install -q -c scripts/constraints.txt -e ".[$EXTRAS]" 2>&1 \
    | grep -v "^WARNING: Location" || true
  python -c "import hamnet" && touch "$stamp"
fi
