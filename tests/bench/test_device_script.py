"""``bench/device.sh`` stays runnable: its CPU smoke run writes a table with every row.

The device benchmark only produces real numbers on a GPU machine, which a test machine rarely
is; ``--cpu --quick`` runs the same code on the CPU provider at tiny sizes (a 1 s video, 32x32
flow, batch 1), so a broken import, a renamed function or a changed interface fails here and
not on the day a GPU is available. It must not touch bench/results/device.md (device
numbers only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

for mod in ("torch", "onnx", "onnxruntime", "cv2", "av"):
    pytest.importorskip(mod)

ROOT = Path(__file__).resolve().parents[2]
RESULT = ROOT / "bench" / "results" / "device.md"
ROWS = ["decode", "flow tvl1-onnx", "flow tvl1-opencv", "flow farneback", "i3d rgb fp32",
        "i3d flow fp32", "i3d rgb fp16", "i3d flow fp16", "head", "end to end",
        "concurrent jobs: 1", "concurrent jobs: 2", "motion pipeline, 1 threads",
        "motion pipeline, 2 threads"]


@pytest.mark.slow
def test_cpu_smoke_run_writes_every_row(tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash not available")
    before = RESULT.stat().st_mtime_ns if RESULT.exists() else None
    out = tmp_path / "device.md"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        ["bash", str(ROOT / "bench" / "device.sh"), "--cpu", "--quick", "--threads", "2",
         "--out", str(out)],
        capture_output=True, text=True, timeout=900, env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = out.read_text()
    assert text.startswith("# Device benchmark (CPU smoke run")
    assert "RANDOM recipe weights" in text  # no weights given: the table says so
    table = [line for line in text.splitlines() if line.startswith("| ")]
    stages = [line.split("|")[1].strip() for line in table[1:]]
    assert stages == ROWS
    for line in table[1:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert len(cells) == 7 and all(cells[:5]), line  # stage..wall filled in every row
        assert cells[4] == "-" or float(cells[4]) > 0, line
    assert "Concurrency: one worker process" in text
    after = RESULT.stat().st_mtime_ns if RESULT.exists() else None
    assert after == before  # CPU smoke runs never write the device results
