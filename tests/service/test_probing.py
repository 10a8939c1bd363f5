"""``hamnet_service.probing``: uploads are probed in a child process with time and memory limits.

Real files (ffmpeg-made videos, text, a PNG), the real child (``python -m
hamnet_service._probe_child``); no Redis or gateway needed.
"""

from __future__ import annotations

import logging
import os
import resource
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from hamnet_service.errors import ApiError
from hamnet_service.probing import ProbeCrashed, ProbeLimits, probe_upload


def ffmpeg(out: Path, *args: str) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", *args, "-y", str(out)], check=True)
    return out


def probe_error(path: Path, name: str = "clip.mp4", **limits) -> ApiError:
    with pytest.raises(ApiError) as ei:
        probe_upload(path, name, ProbeLimits(**limits))
    err = ei.value
    assert str(path) not in err.message and path.name not in err.message  # the client's name
    assert err.message.startswith(f"{name}: ")
    return err


def child_processes(marker: str) -> list[psutil.Process]:
    """Probe children (of anyone) whose command line names ``marker``."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "hamnet_service._probe_child" in cmd and marker in cmd:
            found.append(p)
    return found


# ------------------------------------------------------------------ parity with the old route


def test_valid_video(small_video: Path) -> None:
    info = probe_upload(small_video, "v.mp4", ProbeLimits())
    assert info == {"duration": pytest.approx(3.0, abs=0.05), "fps": 25.0, "width": 96,
                    "height": 64, "rotation": 0, "codec": "h264"}


def test_text_file(tmp_path: Path) -> None:
    f = tmp_path / "upload.partial"
    f.write_bytes(b"hello, this is text, not a video" * 10)
    err = probe_error(f, "a.mp4")
    assert (err.status, err.code, err.message) == (415, "not_a_video", "a.mp4: not a video file")


def test_still_image(tmp_path: Path) -> None:
    png = ffmpeg(tmp_path / "i.png", "-f", "lavfi", "-i", "testsrc=size=64x48", "-frames:v", "1")
    err = probe_error(png, "i.mp4")
    assert (err.status, err.code, err.message) == (415, "not_a_video",
                                                   "i.mp4: a still image, not a video")


def test_truncated_mp4(tmp_path: Path) -> None:
    f = tmp_path / "trunc.mp4"  # an MP4 header and nothing else: a container that won't open
    f.write_bytes(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00" * 64)
    err = probe_error(f)
    assert (err.status, err.code, err.message) == (422, "corrupt_video",
                                                   "clip.mp4: the video cannot be decoded")


def test_audio_only(tmp_path: Path) -> None:
    m4a = ffmpeg(tmp_path / "a.m4a", "-f", "lavfi", "-i", "sine=duration=1")
    err = probe_error(m4a)
    assert (err.status, err.code) == (415, "no_video_stream")


def test_single_frame_is_too_short(tmp_path: Path) -> None:
    one = ffmpeg(tmp_path / "one.mp4", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10",
                 "-frames:v", "1", "-pix_fmt", "yuv420p")
    err = probe_error(one)
    assert (err.status, err.code, err.message) == (422, "video_too_short",
                                                   "clip.mp4: shorter than 0.5 s")


def test_missing_file(tmp_path: Path) -> None:
    err = probe_error(tmp_path / "gone.mp4")
    assert (err.status, err.code, err.message) == (422, "invalid_video",
                                                   "clip.mp4: unusable video")


@pytest.mark.parametrize(("limits", "code", "message"), [
    ({"max_duration_s": 2.5}, "video_too_long", "clip.mp4: longer than 2.5 s"),
    ({"min_duration_s": 5.0}, "video_too_short", "clip.mp4: shorter than 5 s"),
    ({"max_dimension": 64}, "resolution_too_large",
     "clip.mp4: exceeds 64 px per side or 67108864 pixels"),
    ({"max_pixels": 96 * 64 - 1}, "resolution_too_large",
     "clip.mp4: exceeds 8192 px per side or 6143 pixels"),
])
def test_content_limits(small_video: Path, limits, code, message) -> None:
    err = probe_error(small_video, **limits)
    assert (err.status, err.code, err.message) == (422, code, message)


def test_undeclared_duration_is_measured(tmp_path: Path) -> None:
    """A raw H.264 stream declares no duration: the child measures it (3 s), so the duration
    limit holds for it too."""
    raw = ffmpeg(tmp_path / "raw.h264", "-f", "lavfi", "-i",
                 "testsrc=size=96x64:rate=25:duration=3", "-pix_fmt", "yuv420p",
                 "-c:v", "libx264", "-f", "h264")
    assert probe_upload(raw, "v", ProbeLimits())["duration"] == pytest.approx(3.0, abs=0.1)
    err = probe_error(raw, max_duration_s=2.0)
    assert (err.status, err.code, err.message) == (422, "video_too_long",
                                                   "clip.mp4: longer than 2 s")


def test_too_small_resolution(tmp_path: Path) -> None:
    tiny = ffmpeg(tmp_path / "tiny.mp4", "-f", "lavfi", "-i", "testsrc=size=8x8:rate=10:duration=1",
                  "-pix_fmt", "yuv420p")
    err = probe_error(tiny)
    assert (err.status, err.code) == (422, "resolution_too_small")


# ---------------------------------------------------------------------------- the limits


def test_wall_clock_limit_kills_the_child(small_video: Path, tmp_path: Path) -> None:
    video = tmp_path / "slow-marker.mp4"  # a unique path to find the child by
    video.write_bytes(small_video.read_bytes())
    t0 = time.monotonic()
    # no real child can start Python and import PyAV in 50 ms
    err = probe_error(video, timeout_s=0.05)
    assert (err.status, err.code) == (422, "probe_timeout")
    assert time.monotonic() - t0 < 2.0
    assert child_processes(str(video)) == []
    assert probe_upload(video, "v.mp4", ProbeLimits())["width"] == 96  # the gateway is fine


def test_memory_limit(small_video: Path) -> None:
    before = resource.getrlimit(resource.RLIMIT_AS)
    err = probe_error(small_video, memory_mb=64)  # too little to even import PyAV
    assert (err.status, err.code) == (422, "probe_resource_limit")
    assert "memory" in err.message
    assert resource.getrlimit(resource.RLIMIT_AS) == before  # only the child was limited
    assert probe_upload(small_video, "v.mp4", ProbeLimits())["width"] == 96


def test_cpu_limit(tmp_path: Path) -> None:
    """A 3072x3072 JPEG 2000 frame of noise: probing it costs about 2 s of CPU (on the 2-core
    box this was written on); with a 1 s budget the kernel stops the child (SIGXCPU) long
    before the wall-clock limit."""
    j2k = ffmpeg(tmp_path / "noise.mkv", "-f", "lavfi", "-i",
                 "nullsrc=s=3072x3072:r=10,geq=random(1)*255:128:128", "-frames:v", "1",
                 "-c:v", "jpeg2000")
    t0 = time.monotonic()
    err = probe_error(j2k, cpu_s=1, timeout_s=60)
    assert (err.status, err.code) == (422, "probe_resource_limit")
    assert time.monotonic() - t0 < 30


def test_memory_limit_hit_by_numpy(small_video: Path) -> None:
    """At ~200 MiB OpenBLAS (imported with NumPy) exits on its own instead of raising: still a
    resource limit, not a server bug."""
    err = probe_error(small_video, memory_mb=200)
    assert (err.status, err.code) == (422, "probe_resource_limit")


def test_concurrent_probes_do_not_mix(small_video: Path, tmp_path: Path) -> None:
    txt = tmp_path / "upload.partial"  # how the gateway names uploads (no extension hint)
    txt.write_bytes(b"hello, this is text, not a video" * 10)
    paths = [small_video, txt] * 2

    def one(p: Path):
        try:
            return probe_upload(p, "x", ProbeLimits())["codec"]
        except ApiError as e:
            return e.code

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(one, paths)) == ["h264", "not_a_video"] * 2


# ------------------------------------------------------------------- bugs are 500s, logged


BROKEN_AV = {
    # An incompatible PyAV (an upgrade that changed av.open's signature).
    "TypeError": """
        from av import error
        time_base = 1000000
        def open(path, mode="r", **kwargs):
            raise TypeError("open() got an unexpected keyword argument 'timeout'")
    """,
    # A PyAV whose FFmpeg libraries are missing.
    "ImportError": """
        raise ImportError("libavformat.so.61: cannot open shared object file: "
                          "No such file or directory")
    """,
}


@pytest.mark.parametrize("kind", sorted(BROKEN_AV))
def test_programming_error_is_a_500_with_a_logged_traceback(
    small_video: Path, tmp_path: Path, monkeypatch, caplog, kind: str
) -> None:
    """A broken PyAV installation on the child's path (which it inherits via PYTHONPATH, as a
    deployment would): the failure is the server's, so not an ApiError (not a 4xx)."""
    pkg = tmp_path / "site" / "av"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(BROKEN_AV[kind]))
    (pkg / "error.py").write_text("class FFmpegError(Exception):\n    pass\n")
    old = os.environ.get("PYTHONPATH")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(pkg.parent), old])))
    with caplog.at_level(logging.ERROR, logger="hamnet_service.probing"):
        with pytest.raises(ProbeCrashed) as ei:
            probe_upload(small_video, "v.mp4", ProbeLimits())
    assert not isinstance(ei.value, ApiError)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    logged = errors[0].getMessage()
    assert "Traceback (most recent call last)" in logged and f"{kind}: " in logged
    assert str(pkg / "__init__.py") in logged  # the child's traceback, not the parent's


# ------------------------------------------------------------------ the gateway stays clean


def test_gateway_never_imports_pyav(small_video: Path) -> None:
    code = textwrap.dedent("""
        import sys
        from pathlib import Path
        from hamnet_service.probing import ProbeLimits, probe_upload
        info = probe_upload(Path(sys.argv[1]), "v.mp4", ProbeLimits())
        assert info["width"] == 96, info
        bad = [m for m in sys.modules if m == "av" or m.startswith(("av.", "hamnet.video"))]
        assert not bad, bad
        print("clean")
    """)
    out = subprocess.run([sys.executable, "-c", code, str(small_video)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "clean", out.stdout + out.stderr
