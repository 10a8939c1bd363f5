"""``scripts/run.sh`` (the README's run command) brings up Redis, a worker and the gateway,
prints the URL, and Ctrl-C stops every process it started."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import httpx
import pytest
from hamnet_procs import ROOT, free_port

pytestmark = [pytest.mark.service, pytest.mark.slow]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_run_script_starts_and_stops_everything(bundle_dir, tmp_path) -> None:
    port, redis_port = free_port(), free_port()
    env = dict(os.environ, HAMNET_BUNDLE=str(bundle_dir), HAMNET_HOME=str(tmp_path),
               HAMNET_PORT=str(port), HAMNET_REDIS_PORT=str(redis_port), OMP_NUM_THREADS="1",
               # the test command installed everything: run.sh must not reach for the registry
               PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    for k in ("HAMNET_REDIS_URL", "HAMNET_DATA_DIR", "HAMNET_API_KEYS"):
        env.pop(k, None)
    p = subprocess.Popen([str(ROOT / "scripts" / "run.sh")], env=env, cwd=ROOT, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        assert p.stdout is not None
        while time.monotonic() < deadline:
            line = p.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "hamnet is running" in line:
                break
        assert any(f"http://127.0.0.1:{port}" in x for x in lines), "".join(lines)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200
        assert _listening(redis_port)
        assert (tmp_path / "redis" / "appendonlydir").exists()  # append-only persistence
        # the live-stream slot and the training worker came up too
        slots, trainer = None, ""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            slots = next((ln for ln in metrics.splitlines()
                          if ln.startswith('hamnet_stream_slots{state="total"}')), None)
            log = tmp_path / "logs" / "trainer.log"
            trainer = log.read_text() if log.exists() else ""
            if slots and float(slots.split()[-1]) >= 1 and " ready." in trainer:
                break
            time.sleep(1)
        assert slots and float(slots.split()[-1]) >= 1, slots
        assert " ready." in trainer and "train" in trainer, trainer[-2000:]
    finally:
        p.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the script
        out, _ = p.communicate(timeout=60)
    assert p.returncode == 130, "".join(lines) + out
    assert "[run] stopped" in out
    assert not _listening(port) and not _listening(redis_port)
