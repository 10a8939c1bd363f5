#!/usr/bin/env bash
# The test command: installs what is missing, then runs lint and the whole test suite.
# Usage: scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh train,worker,service,dev
# shellcheck disable=SC1091
. .venv/bin/activate
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
echo "[test] ruff"
ruff check .
echo "[test] import-linter (layers: pyproject.toml [tool.importlinter])"
lint-imports --no-cache
echo "[test] pytest"
python -m pytest -q "$@"
