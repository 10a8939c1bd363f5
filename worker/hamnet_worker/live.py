"""Reading a live source with PyAV: frames resampled to the backbone's rate as they arrive, and
snippet features computed incrementally.

Why not :func:`hamnet.video.decode.iter_frames`: it opens local files only (it refuses what is
not a regular file) and bounds a whole video; a live source is a URL that never ends, may
stall, and may drop. The resampling rule is the same (output frame ``k`` shows the latest
decoded picture presented at or before ``k / fps``), and resize and crop use the public
:func:`~hamnet.video.decode.output_size` / :func:`~hamnet.video.decode.center_crop`, so a
stream's features equal the offline features of the same pictures (rotation metadata is not
applied to live sources).

Time (see docs/STREAMS.md): a connection's frames carry the source's presentation timestamps.
:class:`FrameClock` turns them into *stream time* (seconds since the first frame of the first
connection); the stream task (:mod:`hamnet_worker.streams`) decides how a reconnection
continues it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("hamnet.worker.live")


SKIP_SLACK_S = 10.0


class SourceDown(Exception):
    """The source could not be opened or read (refused, 404, timeout, decode failure)."""


@dataclass
class Decoded:
    frame: Any  # av.VideoFrame, converted to RGB only if the resampler emits it
    t: float  # source presentation time, seconds


def open_options(url: str, timeout_s: float) -> dict[str, str]:
    """Demuxer/protocol options: bounded waits everywhere, HLS from the oldest segment listed
    (a playlist's history is part of the stream), few playlist reloads without news before a
    stalled live playlist counts as ended (the default is 1000)."""
    us = str(int(timeout_s * 1e6))
    opts = {"rw_timeout": us}
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("rtsp", "rtsps"):
        opts.update({"rtsp_transport": "tcp", "timeout": us})
    elif scheme in ("http", "https"):
        opts.update({"live_start_index": "0", "m3u8_hold_counters": "10", "max_reload": "3",
                     "reconnect": "0"})
    return opts


def iter_source(url: str, timeout_s: float, stop: Callable[[], bool] | None = None,
                info: dict[str, Any] | None = None,
                skip_until: float | None = None) -> Iterator[Decoded]:
    """Decoded frames of one connection, until the source ends or fails.

    Raises :class:`SourceDown` when it cannot be opened or reading fails; returns normally at
    end of stream. ``info`` receives ``duration`` (seconds, None for a live source: a finite
    file or a finished HLS playlist declares one) and ``format``. ``skip_until`` (source
    time; applied to HLS only, whose reopened playlist replays its timeline): packets more than ``SKIP_SLACK_S`` before it are not
    decoded, and decoding resumes at the next keyframe, so replaying what was already seen
    costs demuxing only."""
    import av

    try:
        container = av.open(url, mode="r", timeout=(timeout_s, timeout_s),
                            options=open_options(url, timeout_s))
    except (av.error.FFmpegError, OSError) as e:
        raise SourceDown(f"cannot open the source: {_reason(e)}") from None
    try:
        if not container.streams.video:
            raise SourceDown("the source has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        if info is not None:
            info["duration"] = (container.duration / 1e6 if container.duration else None)
            info["format"] = container.format.name
        # only HLS replays its timeline on reopening; other sources restart theirs
        skipping = skip_until is not None and "hls" in container.format.name
        try:
            for packet in container.demux(stream):
                if stop is not None and stop():
                    return
                if skipping:
                    pt = packet.pts * packet.time_base if packet.pts is not None else None
                    if pt is None or float(pt) < skip_until - SKIP_SLACK_S \
                            or not packet.is_keyframe:
                        continue
                    skipping = False
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    continue  # a damaged packet in a live feed: skip it
                for f in frames:
                    if f.time is None:
                        continue
                    yield Decoded(f, float(f.time))
        except (av.error.FFmpegError, OSError) as e:
            raise SourceDown(f"reading the source failed: {_reason(e)}") from None
    finally:
        container.close()


def _reason(e: Exception) -> str:
    reason = getattr(e, "strerror", None)
    return str(reason) if reason else str(e)


class Resampler:
    """Source frames -> frames at ``fps`` resized/cropped like the backbone's spec."""

    def __init__(self, fps: float, resize_shorter: int | None, crop: int | None) -> None:
        self.fps, self.resize_shorter, self.crop = fps, resize_shorter, crop
        self.size: tuple[int, int] | None = None
        self.k = 0  # next output index, relative to ``t0``
        self.t0: float | None = None
        self._pending: Any = None
        self._pending_rgb: np.ndarray | None = None

    def reset(self, t0: float) -> None:
        """Start a new contiguous run at stream time ``t0``."""
        self.t0, self.k, self._pending = t0, 0, None

    def _convert(self, frame: Any) -> np.ndarray:
        from hamnet.video.decode import center_crop, output_size

        if self.size is None:
            rw, rh, _, _ = output_size(frame.width, frame.height, self.resize_shorter,
                                       self.crop)
            self.size = (rw, rh)
        rw, rh = self.size
        if (frame.width, frame.height) == (rw, rh):
            rgb = frame.to_ndarray(format="rgb24")
        else:
            rgb = frame.reformat(width=rw, height=rh, format="rgb24",
                                 interpolation="BILINEAR").to_ndarray()
        return np.ascontiguousarray(center_crop(rgb, self.crop))

    def feed(self, frame: Any, t: float) -> Iterator[tuple[np.ndarray, float]]:
        """Add a decoded frame at stream time ``t``; yield the output frames it completes
        (image, stream time)."""
        assert self.t0 is not None
        if self._pending is not None:
            while self.t0 + self.k / self.fps < t - 1e-6:
                if self._pending_rgb is None:
                    self._pending_rgb = self._convert(self._pending)
                yield self._pending_rgb, self.t0 + self.k / self.fps
                self.k += 1
        self._pending, self._pending_rgb = frame, None


class SnippetEncoder:
    """Resampled frames -> snippet features, ``batch`` snippets at a time (the backbone's
    ``encode`` is a pure function of its input, so batching changes nothing)."""

    def __init__(self, backbone: Any, batch: int = 4) -> None:
        self.backbone = backbone
        self.n = backbone.spec.snippet_frames
        self.batch = batch
        self._frames: list[np.ndarray] = []
        self._snips: list[np.ndarray] = []
        self.encode_s = 0.0

    def add(self, image: np.ndarray) -> np.ndarray | None:
        """Returns features ``[b, D]`` when a batch of snippets is complete."""
        self._frames.append(image)
        if len(self._frames) == self.n:
            self._snips.append(np.stack(self._frames))
            self._frames = []
            if len(self._snips) >= self.batch:
                return self.drain()
        return None

    def drain(self) -> np.ndarray | None:
        """Encode the complete snippets held (a trailing partial snippet is dropped, as the
        offline extractor does)."""
        if not self._snips:
            return None
        t0 = time.perf_counter()
        out = np.asarray(self.backbone.encode(np.stack(self._snips)), dtype=np.float32)
        self.encode_s += time.perf_counter() - t0
        self._snips = []
        return out

    def reset(self) -> None:
        self._frames, self._snips = [], []
