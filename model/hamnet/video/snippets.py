"""Cut a resampled frame stream into non-overlapping fixed-length snippets.

Why non-overlapping F-frame snippets: HAM-Net (like W-TALC and BaS-Net) was trained on one
I3D feature per 16 frames at 25 fps, and its post-processing maps snippet index ``i`` to the
time span ``[i*F/fps, (i+1)*F/fps)``. Any other stride would shift every detection in time.

Last partial snippet policy (documented because it changes T):
* the official extractors drop a trailing partial snippet, and so do we, so a video of
  ``n`` resampled frames gives ``n // F`` snippets, identical to the training features;
* but a video shorter than one snippet (``0 < n < F``) would then give nothing at all, so it
  gets exactly one snippet padded by repeating its last frame. Its span still says
  ``[0, F/fps)``: the time axis stays the feature axis.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

import numpy as np

from hamnet.video.decode import Frame

T = TypeVar("T")


@dataclass(frozen=True)
class Snippet:
    """``frames`` uint8 ``[F, H, W, 3]``; covers ``[start, end)`` seconds; ``index`` = i."""

    frames: np.ndarray
    start: float
    end: float
    index: int
    padded: int = 0  # frames repeated to fill a video shorter than one snippet


def frames_at(duration: float, fps: float) -> int:
    """Resampled frames of a video lasting ``duration`` seconds: output times ``k/fps`` that
    fall strictly before the end (the rule :func:`hamnet.video.decode.iter_frames` uses)."""
    if duration <= 0 or fps <= 0:
        return 0
    return max(0, math.ceil(duration * fps - 1e-6 * fps))


def count_snippets(duration: float, fps: float, snippet_frames: int) -> int:
    """Snippets :func:`iter_snippets` yields for a video of ``duration`` seconds."""
    n = frames_at(duration, fps)
    if n == 0:
        return 0
    return max(1, n // snippet_frames)


def snippet_span(index: int, fps: float, snippet_frames: int) -> tuple[float, float]:
    """Exact ``[start, end)`` seconds of snippet ``index``, computed from integers so that
    spans tile the time axis without drift."""
    return index * snippet_frames / fps, (index + 1) * snippet_frames / fps


def iter_snippets(
    frames: Iterable[Frame] | Iterable[np.ndarray],
    snippet_frames: int,
    fps: float | None = None,
) -> Iterator[Snippet]:
    """Group frames into snippets of ``snippet_frames`` (see module doc for the tail policy).

    ``frames`` are :class:`Frame` objects (or bare ``[H, W, 3]`` arrays, then ``fps`` is
    required to compute spans). With Frames and no ``fps``, the rate is inferred from the
    first two timestamps (1 fps if there is a single frame; pass ``fps`` to be exact).
    """
    if snippet_frames < 1:
        raise ValueError(f"snippet_frames must be >= 1, got {snippet_frames}")
    buf: list[np.ndarray] = []
    first_t: list[float] = []
    index = 0
    rate = fps
    for item in frames:
        if isinstance(item, Frame):
            img = item.image
            if rate is None:
                first_t.append(item.t)
                if len(first_t) == 2 and first_t[1] > first_t[0]:
                    rate = 1.0 / (first_t[1] - first_t[0])
        else:
            if rate is None:
                raise ValueError("fps is required when frames are bare arrays")
            img = item
        buf.append(img)
        if len(buf) == snippet_frames:
            start, end = snippet_span(index, rate or 1.0, snippet_frames)
            yield Snippet(np.stack(buf), start, end, index)
            buf = []
            index += 1
    if index == 0 and buf:
        pad = snippet_frames - len(buf)
        buf.extend([buf[-1]] * pad)
        start, end = snippet_span(0, rate or 1.0, snippet_frames)
        yield Snippet(np.stack(buf), start, end, 0, padded=pad)


def batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    """Lists of up to ``n`` consecutive items (the last one may be shorter)."""
    if n < 1:
        raise ValueError(f"batch size must be >= 1, got {n}")
    it = iter(items)
    while chunk := list(islice(it, n)):
        yield chunk
