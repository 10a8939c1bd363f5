#!/usr/bin/env bash
# Start the whole stack locally on a fresh machine: install what is missing
# (scripts/bootstrap.sh), build the default model bundle if absent (`hamnet demo`: about ten
# minutes on 2 CPU cores, once; it renders training videos and trains the model on this CPU),
# then start Redis (append-only, state in .hamnet/), one Celery worker, a live-stream slot, the
# training worker (datasets -> your own model) and the gateway, and print the URL. Ctrl-C stops
# everything.
#
# Environment (all optional): HAMNET_PORT (8000), HAMNET_HOST (127.0.0.1), HAMNET_BUNDLE (a bundle
# directory instead of the default one), HAMNET_REDIS_URL (use this Redis instead of starting
# one), HAMNET_REDIS_PORT (6390, for the Redis started here), HAMNET_HOME (.hamnet), and every
# HAMNET_* setting of the gateway and worker (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

# Install only when something is missing (bootstrap.sh is idempotent but re-resolves packages
# whenever the extras differ from the last install, e.g. after scripts/test.sh).
if ! command -v redis-server >/dev/null || ! command -v ffmpeg >/dev/null \
  || ! .venv/bin/python -c "import hamnet_service.app, hamnet_worker.tasks, hamnet.pipeline, torch" \
  >/dev/null 2>&1; then
  scripts/bootstrap.sh "${HAMNET_EXTRAS:-train,worker,service}"
fi
# shellcheck disable=SC1091
. .venv/bin/activate

HOME_DIR="${HAMNET_HOME:-$ROOT/.hamnet}"
export HAMNET_HOME="$HOME_DIR"
mkdir -p "$HOME_DIR/logs" "$HOME_DIR/redis"
export HAMNET_DATA_DIR="${HAMNET_DATA_DIR:-$HOME_DIR/data}"
export HAMNET_PORT="${HAMNET_PORT:-8000}"
export HAMNET_HOST="${HAMNET_HOST:-127.0.0.1}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(nproc)}"

pids=()        # worker and gateway, stopped first (the worker needs Redis to shut down cleanly)
redis_pid=""
redis_port=""
cleanup() {
  trap - EXIT INT TERM
  echo
  echo "[run] stopping..."
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ -n "$redis_pid" ]]; then
    redis-cli -p "$redis_port" shutdown >/dev/null 2>&1 || kill -TERM "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
  fi
  echo "[run] stopped"
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

if port_busy "$HAMNET_PORT"; then
  echo "[run] port $HAMNET_PORT is in use; set HAMNET_PORT to another port" >&2
  exit 1
fi

# 1. The model bundle.
if [[ -z "${HAMNET_BUNDLE:-}" ]]; then
  if ! python -c "from hamnet.bundle import load_bundle; from hamnet.paths import default_bundle_dir; load_bundle(default_bundle_dir())" >/dev/null 2>&1; then
    echo "[run] building the default model bundle (hamnet demo): renders videos and trains on"
    echo "[run] this machine; about ten minutes on 2 CPU cores, once (cached in ~/.hamnet)"
    hamnet demo
  fi
  HAMNET_BUNDLE="$(python -c "from hamnet.paths import default_bundle_dir; print(default_bundle_dir())")"
fi
export HAMNET_BUNDLE
echo "[run] model bundle: $HAMNET_BUNDLE"

# 2. Redis (append-only, so queued jobs survive a restart).
if [[ -z "${HAMNET_REDIS_URL:-}" ]]; then
  redis_port="${HAMNET_REDIS_PORT:-6390}"
  if port_busy "$redis_port"; then
    echo "[run] port $redis_port is in use; set HAMNET_REDIS_PORT or HAMNET_REDIS_URL" >&2
    redis_port=""
    exit 1
  fi
  redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$HOME_DIR/redis" \
    --appendonly yes --appendfsync everysec --save "" \
    >"$HOME_DIR/logs/redis.log" 2>&1 &
  redis_pid=$!
  export HAMNET_REDIS_URL="redis://127.0.0.1:$redis_port/0"
  for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
echo "[run] redis: $HAMNET_REDIS_URL"

# 3. One inference worker, one live-stream slot, the training worker and the gateway
#    (HAMNET_RUN_STREAMS=0 / HAMNET_RUN_TRAINER=0 leave those two out).
hamnet worker --concurrency "${HAMNET_CONCURRENCY:-1}" >"$HOME_DIR/logs/worker.log" 2>&1 &
pids+=($!)
if [ "${HAMNET_RUN_STREAMS:-1}" != 0 ]; then
  hamnet worker --streams only --concurrency 1 >"$HOME_DIR/logs/streams.log" 2>&1 &
  pids+=($!)
fi
if [ "${HAMNET_RUN_TRAINER:-1}" != 0 ]; then
  hamnet worker --queues train >"$HOME_DIR/logs/trainer.log" 2>&1 &
  pids+=($!)
fi
hamnet serve --port "$HAMNET_PORT" --host "$HAMNET_HOST" >"$HOME_DIR/logs/gateway.log" 2>&1 &
pids+=($!)

url="http://$HAMNET_HOST:$HAMNET_PORT"
echo "[run] waiting for the worker to load the model (logs in $HOME_DIR/logs/)"
for _ in $(seq 600); do
  if curl -fsS "$url/readyz" >/dev/null 2>&1; then break; fi
  for pid in "${pids[@]}"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "[run] a process exited early; see $HOME_DIR/logs/" >&2
      tail -n 20 "$HOME_DIR"/logs/*.log >&2 || true
      exit 1
    fi
  done
  sleep 0.5
done
curl -fsS "$url/readyz" >/dev/null 2>&1 || echo "[run] not ready yet: see $url/readyz" >&2
echo
echo "  hamnet is running: $url   (API: $url/openapi.json)"
echo "  Ctrl-C stops everything."
echo

# Stay in the foreground until Ctrl-C or until one of the processes dies.
while true; do
  for pid in "${pids[@]}" $redis_pid; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "[run] process $pid exited; see $HOME_DIR/logs/" >&2
      exit 1
    fi
  done
  sleep 1
done
