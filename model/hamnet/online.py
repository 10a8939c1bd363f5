"""Online (live-stream) localization: HAM-Net over a sliding window, segments published as
they close.

Why a window: HAM-Net's post-processing normalises over a whole video (the video-level class
score is a top-``T // rat`` mean followed by a softmax, classes below ``class_thresh`` are
dropped, OIC scores add ``gamma * p``), and a live stream has no end. So every ``hop``
snippets the head runs on the last ``window`` snippets *as if they were a video of that
length* (its own top-k, softmax and thresholds), and the window's proposals are mapped to
absolute stream time.

Which segments a window may publish (finalisation): a proposal is final only when it ends at
least ``margin`` snippets before the window's right edge (attention that is still high at the
edge could extend it in the next window; the head's temporal convolutions also see padding
there). Each window owns the slice of end times ``(previous cut, cut]`` with
``cut = right edge - margin``, so every end time is judged by exactly one window: the first
one in which it is safely inside. A proposal that starts at the window's left edge (when the
window has already slid) is truncated and is dropped; ``window`` must exceed the longest
action plus ``margin + hop``. A final proposal of the same class as an already published one
with temporal IoU ``>= dedupe_tiou`` is skipped (the same action seen again with a slightly
different end). At the end of the stream :meth:`OnlineLocalizer.flush` runs the last window
and publishes everything after the previous cut.

The first run waits for ``min_window`` snippets (a few seconds' worth of snippets give a
meaningless top-k); a stream shorter than ``window`` that is flushed without any earlier run
gives exactly the offline result (same head, same features, same post-processing).

Delay: an action ending at stream time ``e`` is published by the first run whose cut passes
its (detected) end: ``e + margin`` rounded up to the next hop boundary, plus the run's compute
time, so at most ``margin + hop`` snippets after it ends (plus any overshoot of the detected
end). Memory: only the last ``window`` feature vectors and the published segments of the last
window (for de-duplication) are kept, so a stream of any length needs the same memory.

numpy only: the head is any callable ``features [T, D] -> (elem [T, C+1], atn [T, 1])``
(``hamnet.localize.HeadSession.run`` in the worker, a numpy function in tests).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hamnet.config import PostprocessConfig
from hamnet.errors import ConfigError

Head = Callable[[np.ndarray], tuple[Any, Any]]

__all__ = ["OnlineLocalizer", "WindowConfig", "tiou"]


@dataclass(frozen=True)
class WindowConfig:
    """Sliding-window parameters, in snippets (0.64 s each for the shipped backbones).

    Defaults chosen on two validation videos (seeds 7001-7002, 10 min each; never the
    reported ones) by bench/bench_stream.py (bench/results/stream.md): a 192-snippet (123 s)
    window every 4 snippets (2.56 s), 6 snippets (3.84 s) of margin, de-dup tIoU 0.7 (worst
    case delay margin + hop = 6.4 s of stream time)."""

    window: int = 192
    hop: int = 4
    margin: int = 6
    min_window: int = 32
    dedupe_tiou: float = 0.7

    def __post_init__(self) -> None:
        problems = []
        if self.window < 2:
            problems.append(f"window must be >= 2 snippets, got {self.window}")
        if self.hop < 1:
            problems.append(f"hop must be >= 1 snippet, got {self.hop}")
        if self.margin < 0:
            problems.append(f"margin must be >= 0 snippets, got {self.margin}")
        if self.margin + self.hop >= self.window:
            problems.append(f"margin + hop ({self.margin} + {self.hop}) must be smaller than "
                            f"the window ({self.window})")
        if not 1 <= self.min_window <= self.window:
            problems.append(f"min_window must be in [1, window], got {self.min_window}")
        if not 0.0 < self.dedupe_tiou <= 1.0:
            problems.append(f"dedupe_tiou must be in (0, 1], got {self.dedupe_tiou}")
        if problems:
            raise ConfigError("invalid stream window: " + "; ".join(problems))

    @classmethod
    def from_seconds(cls, window_s: float, hop_s: float, margin_s: float,
                     snippet_seconds: float, min_window_s: float | None = None,
                     dedupe_tiou: float = 0.7) -> WindowConfig:
        """Settings are given in seconds (what an operator thinks in); snippets rounded up."""
        def n(s: float) -> int:
            return max(0, int(np.ceil(s / snippet_seconds - 1e-9)))

        w = max(2, n(window_s))
        mw = min(w, max(1, n(min_window_s))) if min_window_s is not None else min(w, 32)
        return cls(window=w, hop=max(1, n(hop_s)), margin=n(margin_s), min_window=mw,
                   dedupe_tiou=dedupe_tiou)


def tiou(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Temporal IoU of two ``(start, end)`` intervals."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = max(a[1], b[1]) - min(a[0], b[0])
    return inter / union if union > 0 else 0.0


class OnlineLocalizer:
    """Feed snippet features with :meth:`push`, get the segments that closed; :meth:`flush`
    at the end. Segment times are absolute: ``origin`` + seconds since the first snippet.

    Not thread-safe (one per stream)."""

    def __init__(self, head: Head, classes: Sequence[str], cfg: PostprocessConfig,
                 window: WindowConfig | None = None, origin: float = 0.0,
                 clean: bool | None = None) -> None:
        from hamnet.postprocess import resolve_profile

        self.head = head
        self.classes = list(classes)
        self.cfg = cfg
        self.win = window or WindowConfig()
        self.origin = float(origin)
        # served results are cleaned in every profile but official (as predict_video does)
        self.clean = resolve_profile(cfg).profile != "official" if clean is None else clean
        self.tau = cfg.snippet_frames / (cfg.scale * cfg.fps)  # seconds per snippet
        self._buf: deque[np.ndarray] = deque(maxlen=self.win.window)  # [D] each
        self.seen = 0  # snippets pushed so far
        self._last_run = 0  # self.seen at the last run
        self._cut = -np.inf  # end times <= this (seconds since the first snippet) are judged
        self._recent: deque[dict[str, Any]] = deque()  # published, kept for de-duplication
        self.published = 0
        self.runs = 0
        self.finished = False

    # ---- feeding ---------------------------------------------------------------------------
    def push(self, feats: np.ndarray) -> list[dict[str, Any]]:
        """Add snippet features ``[n, D]`` (or one ``[D]``); returns the segments finalised by
        the runs this triggered (absolute times, in publication order)."""
        if self.finished:
            raise RuntimeError("push after flush: start a new OnlineLocalizer")
        x = np.asarray(feats, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        out: list[dict[str, Any]] = []
        for row in x:
            self._buf.append(row)
            self.seen += 1
            if self.seen >= self.win.min_window and self.seen - self._last_run >= self.win.hop:
                out.extend(self._run(final=False))
        return out

    def flush(self) -> list[dict[str, Any]]:
        """The stream ended: run the last window and publish everything not yet judged."""
        if self.finished:
            return []
        self.finished = True
        if not self._buf:
            return []
        return self._run(final=True)

    @property
    def buffered(self) -> int:
        return len(self._buf)

    @property
    def stream_seconds(self) -> float:
        """Stream time covered by the snippets pushed so far (relative to ``origin``)."""
        return self.seen * self.tau

    # ---- one window ------------------------------------------------------------------------
    def _run(self, final: bool) -> list[dict[str, Any]]:
        from hamnet.postprocess import predict_from_outputs

        self._last_run = self.seen
        self.runs += 1
        x = np.stack(self._buf)  # [W', D]
        base = self.seen - x.shape[0]  # absolute index of the window's first snippet
        elem, atn = self.head(x)
        e = np.asarray(elem, dtype=np.float32).reshape(x.shape[0], -1)  # [W', C+1]
        a = np.asarray(atn, dtype=np.float32).reshape(x.shape[0])  # [W']
        out = predict_from_outputs(e, a, self.classes, self.cfg, clean=self.clean)
        left = base * self.tau
        cut = np.inf if final else (self.seen - self.win.margin) * self.tau
        lo = self._cut
        published = []
        for seg in out["segments"]:
            start, end = left + seg["start"], left + seg["end"]
            if not (lo < end <= cut):
                continue
            if base > 0 and seg["start"] <= 1e-9:
                continue  # truncated by the window's left edge
            if any(p["label_id"] == seg["label_id"] and
                   tiou((p["_s"], p["_e"]), (start, end)) >= self.win.dedupe_tiou
                   for p in self._recent):
                continue
            item = {"label": seg["label"], "label_id": seg["label_id"],
                    "start": self.origin + start, "end": self.origin + end,
                    "score": float(seg["score"])}
            self._recent.append(item | {"_s": start, "_e": end})
            published.append(item)
        self._cut = cut
        # forget published segments that can no longer overlap anything a later window sees
        while self._recent and self._recent[0]["_e"] < left - self.win.window * self.tau:
            self._recent.popleft()
        published.sort(key=lambda s: (s["end"], -s["score"]))
        self.published += len(published)
        return published
