"""``hamnet flow`` as a user runs it: a subprocess on a small generated video."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from vidgen import write_video  # noqa: E402

SIZE = 64


def _hamnet(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "400", "OMP_NUM_THREADS": "1"}  # no wrapped help lines
    return subprocess.run(
        [sys.executable, "-m", "hamnet", "flow", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="module")
def moving_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Smooth texture translating 2 px right and 1 px down per frame."""
    import cv2

    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 255, (SIZE * 2, SIZE * 2)).astype(np.float32)
    tex = cv2.GaussianBlur(noise, (0, 0), 3.0)
    tex = cv2.normalize(tex, None, 30, 220, cv2.NORM_MINMAX).astype(np.uint8)
    frames = []
    for i in range(5):
        crop = tex[20 - i : 20 - i + SIZE, 20 - 2 * i : 20 - 2 * i + SIZE]  # scene moves +x +y
        frames.append(np.repeat(crop[..., None], 3, axis=2))
    return write_video(tmp_path_factory.mktemp("flowcli") / "moving.mp4", frames)


@pytest.mark.parametrize("method", ["tvl1", "tvl1-opencv", "farneback"])
def test_writes_flow_of_known_translation(moving_video: Path, tmp_path: Path, method: str) -> None:
    out, png = tmp_path / "flow.npy", tmp_path / "png"
    r = _hamnet(
        str(moving_video),
        "--method",
        method,
        "--size",
        str(SIZE),
        "--frames",
        "4",
        "--out",
        str(out),
        "--png",
        str(png),
        "--threads",
        "1",
    )
    assert r.returncode == 0, r.stderr
    flow = np.load(out)
    assert flow.shape == (3, SIZE, SIZE, 2) and flow.dtype == np.float32
    inner = flow[:, 12:-12, 12:-12]
    assert np.median(inner[..., 0]) == pytest.approx(2.0, abs=0.3)  # x first, rightwards
    assert np.median(inner[..., 1]) == pytest.approx(1.0, abs=0.3)  # then y, downwards
    pictures = sorted(p.name for p in png.iterdir())
    assert pictures == ["flow_0000.png", "flow_0001.png", "flow_0002.png"]
    import cv2

    picture = cv2.imread(str(png / pictures[0]))
    assert picture.shape == (SIZE, SIZE, 3) and picture.max() > 100  # moving: bright
    assert f"3 flow fields {SIZE}x{SIZE} by {method}" in r.stderr


def test_bad_input_is_a_clear_error(moving_video: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "f.npy")
    r = _hamnet(str(tmp_path / "missing.mp4"), "--out", out)
    assert r.returncode == 2 and "missing.mp4: no such file" in r.stderr
    r = _hamnet(str(moving_video), "--method", "raft", "--out", out)
    assert r.returncode == 2 and "invalid choice: 'raft'" in r.stderr
    r = _hamnet(str(moving_video), "--size", "8", "--out", out)
    assert r.returncode == 2 and "--size: must be between 16 and 2048 pixels, got 8" in r.stderr
    r = _hamnet(str(moving_video), "--size", "big", "--out", out)
    assert r.returncode == 2 and "--size: expected an integer" in r.stderr
    r = _hamnet(str(moving_video), "--frames", "1", "--out", out)
    assert r.returncode == 2 and "--frames: must be between 2" in r.stderr
    r = _hamnet(str(moving_video))
    assert r.returncode == 2 and "nothing to write" in r.stderr
    not_video = tmp_path / "notes.mp4"
    not_video.write_text("hello")
    r = _hamnet(str(not_video), "--out", out)
    assert r.returncode == 2 and "notes.mp4" in r.stderr and "Traceback" not in r.stderr
    assert not Path(out).exists()


def test_help_explains_methods() -> None:
    r = _hamnet("--help")
    assert r.returncode == 0
    text = " ".join(r.stdout.split())
    for words in ("tvl1-opencv", "ONNX Runtime", "hue = direction", "[N-1, SIZE, SIZE, 2]"):
        assert words in text
