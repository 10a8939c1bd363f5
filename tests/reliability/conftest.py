"""Fixtures of the reliability tests: a model bundle, a few generated videos, and a factory of
whole stacks (see ``relprocs.Stack``) that a test module can crash and restart at will.

The bundle is an *untrained* HAM-Net head on the weight-free motion backbone: these tests are
about what the service does with jobs under faults, not about accuracy, and an untrained head
builds in seconds. ``HAMNET_TEST_BUNDLE`` points them at an existing bundle instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from relprocs import Stack, ensure_test_bundle  # noqa: E402


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True,
                   timeout=120)


def make_video(out: Path, seconds: float, size: str = "64x48", rate: float = 10,
               extra: tuple[str, ...] = ()) -> Path:
    """An ffmpeg test-pattern clip, H.264 in MP4 unless ``extra`` says otherwise."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}:duration={seconds}",
           "-pix_fmt", "yuv420p", *(extra or ("-c:v", "libx264", "-preset", "ultrafast")),
           str(out))
    return out


@pytest.fixture(scope="session")
def rel_bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("HAMNET_TEST_BUNDLE")
    if env:
        return Path(env)
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    where = cache.mkdir("hamnet-reliability") if cache else tmp_path_factory.mktemp("bundle")
    return ensure_test_bundle(Path(where))


@pytest.fixture(scope="session")
def videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``short`` (2 s, done in about a second), ``long`` (120 s at 5 fps: about ten seconds of
    work on two shared cores, long enough to be interrupted)."""
    d = tmp_path_factory.mktemp("videos")
    return {
        "short": make_video(d / "short.mp4", 2),
        "long": make_video(d / "long.mp4", 120, rate=5, extra=(
            "-c:v", "libx264", "-preset", "ultrafast", "-g", "250")),
    }


@pytest.fixture(scope="module")
def stack_factory(tmp_path_factory: pytest.TempPathFactory, rel_bundle: Path):
    """``make(**kw) -> Stack``; every stack is stopped when the module ends (also on failure,
    so no redis-server, worker or gateway outlives the tests)."""
    made: list[Stack] = []

    def make(name: str = "stack", **kw) -> Stack:  # noqa: ANN003
        s = Stack(tmp_path_factory.mktemp(name), rel_bundle, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()
