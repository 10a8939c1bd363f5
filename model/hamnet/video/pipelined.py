"""Feature extraction as a pipeline: decoding, flow and the networks run at the same time.

Why: done one after the other, a request costs decode + flow + descriptors/networks, and
only one core works at a time although every heavy stage is native code that releases the
GIL (FFmpeg, OpenCV, ONNX Runtime, most numpy loops). Here

* a **producer thread** decodes, resamples and cuts snippets, and stacks them into batches
  put on a bounded queue (``queue_batches`` deep, so memory stays flat whatever the video
  length: at most ``queue_batches`` + ``workers + 1`` batches of frames are alive, and the
  batches in flight hold at most about :data:`MAX_INFLIGHT_SNIPPETS` snippets);
* ``workers`` **worker threads** prepare batches concurrently: the whole ``encode`` for
  CPU backbones that declare ``parallel_snippets`` (the motion descriptor), the CPU part
  (``prepare``: flow, normalisation) for two-stage backbones (I3D);
* the **calling thread** runs the second stage of two-stage backbones (``run``: the ONNX
  sessions, on the device when there is one), in batch order, while the next batches decode
  and prepare; it also reports progress and raises errors, so callers see exactly what the
  sequential loop showed them.

Features are identical to the sequential loop's (same batches, same order; ``encode`` is a
pure function of its input), which :func:`extract` can still run (``pipelined=False``, or a
thread budget of 1): the benchmark compares both (``bench/bench_video.py --sequential``).

Thread budget: :func:`plan_threads` splits ``threads`` (what the worker gives each child,
``hamnet_worker.runtime.threads_per_child``; all cores by default) between FFmpeg's decoder
threads and the workers; ONNX Runtime sessions get the budget as intra-op threads when the
backbone is built (``pipeline.get_backbone``).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hamnet.errors import BundleError

if TYPE_CHECKING:  # pragma: no cover
    from hamnet.video.backbone import Backbone
    from hamnet.video.decode import DecodeStats, VideoInfo

log = logging.getLogger(__name__)

Progress = Callable[[str, float], None]
_DONE = object()
DEFAULT_BATCH = 8
MAX_INFLIGHT_SNIPPETS = 64
LOOKAHEAD_FRAMES = 16  # converted pictures in flight per decoder
_PUT_POLL_S = 0.1  # how often a blocked producer checks whether the consumer gave up


def available_cpus() -> int:
    """Cores this process may run on (the affinity mask, not the machine's core count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ThreadPlan:
    """How a thread budget is spent: ``decode`` threads decode and convert pictures
    (:attr:`ffmpeg_threads` + :attr:`converters`) and ``workers`` prepare batches. ``pipelined`` is False for a
    budget of 1: with one core there is nothing to overlap, and the plain loop is cheapest."""

    budget: int
    decode: int
    workers: int
    pipelined: bool

    @property
    def ffmpeg_threads(self) -> int:
        """FFmpeg decoder threads: half the decode share (rounded up)."""
        return max(1, (self.decode + 1) // 2)

    @property
    def converters(self) -> int:
        """Threads that resize/rotate/crop decoded pictures next to the decoder (0: the
        decoding thread converts them itself)."""
        return self.decode - self.ffmpeg_threads


def plan_threads(budget: int | None = None, parallel: bool = True,
                 decode_share: float = 0.25) -> ThreadPlan:
    """Split ``budget`` threads (default: the cores available) for one extraction.

    ``decode_share`` of the budget (at least one thread; a quarter by default, half when the
    backbone's networks run on a device and the CPU has little else to do) decodes, half of
    it FFmpeg's decoder threads and half picture converters: both pay off on large pictures,
    and small ones decode far faster than the descriptors are computed. The rest prepare batches; backbones that cannot prepare batches concurrently
    (``parallel=False``) get one worker and leave the remaining cores to ONNX Runtime.
    """
    n = available_cpus() if budget is None else int(budget)
    if n < 1:
        raise ValueError(f"thread budget must be >= 1, got {budget!r}")
    if n == 1:
        return ThreadPlan(1, 1, 1, pipelined=False)
    decode = min(n - 1, max(1, int(n * decode_share)))
    workers = max(1, n - decode) if parallel else 1
    return ThreadPlan(n, decode, workers, pipelined=True)


@dataclass
class _Batch:
    frames: np.ndarray  # uint8 [B, F, H, W, 3]
    spans: list[tuple[float, float]]


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def _produce(
    frames: Iterator[Any],
    snippet_frames: int,
    fps: float,
    batch_size: int,
    out: queue.Queue[Any],
    stop: threading.Event,
) -> None:
    """Producer thread body: decode -> snippets -> stacked batches -> ``out``."""
    from hamnet.video.snippets import batched, iter_snippets

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                out.put(item, timeout=_PUT_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    try:
        for batch in batched(iter_snippets(_resolved(frames), snippet_frames, fps=fps),
                             batch_size):
            item = _Batch(np.stack([s.frames for s in batch]), [(s.start, s.end) for s in batch])
            if not put(item):
                return
        put(_DONE)
    except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
        put(_Failed(e))
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()  # closes the container even when the consumer stopped early


def _resolved(frames: Iterator[Any], lookahead: int = LOOKAHEAD_FRAMES) -> Iterator[Any]:
    """Frames whose image is a ``Future`` (``iter_frames(convert_pool=...)``), resolved in
    order ``lookahead`` frames behind the decoder, so that many conversions are in flight."""
    from hamnet.video.decode import Frame

    window: deque[Any] = deque()
    for f in frames:
        window.append(f)
        if len(window) > lookahead:
            g = window.popleft()
            yield Frame(g.image.result(), g.t) if isinstance(g.image, Future) else g
    while window:
        g = window.popleft()
        yield Frame(g.image.result(), g.t) if isinstance(g.image, Future) else g


def _stages(backbone: Backbone) -> tuple[Callable[[np.ndarray], Any], Callable[[Any], Any]]:
    """(worker stage, calling-thread stage) of a backbone."""
    prepare = getattr(backbone, "prepare", None)
    run = getattr(backbone, "run", None)
    if callable(prepare) and callable(run):
        return prepare, run
    return backbone.encode, (lambda out: out)


def _check(out: Any, n: int, backbone: Backbone) -> np.ndarray:
    arr = np.asarray(out, dtype=np.float32)
    if arr.shape != (n, backbone.feature_dim):
        raise BundleError(
            f"backbone {backbone.spec.name!r} returned features of shape {arr.shape} for "
            f"{n} snippets; expected ({n}, {backbone.feature_dim})"
        )
    return arr


def extract(
    backbone: Backbone,
    video_path: str | Path,
    progress: Progress | None = None,
    batch_size: int | None = None,
    max_seconds: float | None = None,
    stats: DecodeStats | None = None,
    *,
    threads: int | None = None,
    pipelined: bool | None = None,
    queue_batches: int = 2,
    max_duration_s: float | None = None,
    max_dimension: int | None = None,
    max_pixels: int | None = None,
) -> tuple[np.ndarray, VideoInfo, np.ndarray]:
    """What :func:`hamnet.video.backbone.extract_features` does (same arguments, results and
    errors), pipelined unless ``pipelined=False`` or the thread budget is 1.

    ``threads``: the thread budget (default: ``backbone.threads`` when the worker set one,
    else the available cores); see :func:`plan_threads`. ``batch_size``: snippets per batch
    (default: ``backbone.batch_size`` when it has one, sized to its device, else 8).
    """
    from hamnet.errors import VideoTooShortError
    from hamnet.video.decode import DecodeStats, iter_frames, probe

    spec = backbone.spec
    if batch_size is None:
        batch_size = int(getattr(backbone, "batch_size", None) or DEFAULT_BATCH)
    limits = {"max_duration_s": max_duration_s, "max_dimension": max_dimension,
              "max_pixels": max_pixels}
    budget = threads if threads is not None else getattr(backbone, "threads", None)
    on_device = getattr(backbone, "device", ("cpu", 0))[0] != "cpu"
    plan = plan_threads(budget, parallel=bool(getattr(backbone, "parallel_snippets", False)),
                        decode_share=0.5 if on_device else 0.25)
    if pipelined is None:
        pipelined = plan.pipelined
    st = stats if stats is not None else DecodeStats()
    info = probe(video_path, **limits)
    # Resizing large pictures costs as much as decoding them (3 ms per 720p frame): half the
    # decode share of the budget converts pictures next to the decoder.
    convert = (ThreadPoolExecutor(plan.converters, thread_name_prefix="hamnet-convert")
               if pipelined and plan.converters else None)
    frames = iter_frames(
        video_path, spec.fps, resize_shorter=spec.resize_shorter, crop=spec.crop,
        max_seconds=max_seconds, threads=plan.ffmpeg_threads if pipelined else 0, stats=st,
        warn=not pipelined, convert_pool=convert, **limits,
    )
    total = info.duration if info.duration and info.duration > 0 else None
    report = progress or (lambda stage, fraction: None)
    report("extract", 0.0)
    if pipelined:
        try:
            feats, spans = _run_pipelined(backbone, frames, batch_size, plan, queue_batches,
                                          report, total)
        finally:
            if convert is not None:
                convert.shutdown(wait=True, cancel_futures=True)
        if st.warning:  # raised here, in the caller's thread (see iter_frames(warn=...))
            log.warning(st.warning)
            warnings.warn(st.warning, _partial_warning(), stacklevel=3)
    else:
        feats, spans = _run_sequential(backbone, frames, batch_size, report, total)
    if not feats:
        raise VideoTooShortError(f"{video_path}: no frames could be decoded at {spec.fps} fps")
    report("extract", 1.0)
    return (
        np.concatenate(feats, axis=0),
        info,
        np.asarray(spans, dtype=np.float64).reshape(-1, 2),
    )


def _partial_warning() -> type[Warning]:
    from hamnet.video.decode import PartialDecodeWarning

    return PartialDecodeWarning


def _run_sequential(
    backbone: Backbone, frames: Iterator[Any], batch_size: int, report: Progress,
    total: float | None,
) -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    """The one-thread loop (the released behaviour): decode, then encode, batch by batch."""
    from hamnet.video.snippets import batched, iter_snippets

    spec = backbone.spec
    feats: list[np.ndarray] = []
    spans: list[tuple[float, float]] = []
    for batch in batched(iter_snippets(frames, spec.snippet_frames, fps=spec.fps), batch_size):
        x = np.stack([s.frames for s in batch])
        feats.append(_check(backbone.encode(x), len(batch), backbone))
        spans.extend((s.start, s.end) for s in batch)
        if total:
            report("extract", min(1.0, batch[-1].end / total))
    return feats, spans


def _run_pipelined(
    backbone: Backbone, frames: Iterator[Any], batch_size: int, plan: ThreadPlan,
    queue_batches: int, report: Progress, total: float | None,
) -> tuple[list[np.ndarray], list[tuple[float, float]]]:
    spec = backbone.spec
    first, second = _stages(backbone)
    q: queue.Queue[Any] = queue.Queue(maxsize=max(1, queue_batches))
    stop = threading.Event()
    producer = threading.Thread(
        target=_produce, name="hamnet-decode",
        args=(frames, spec.snippet_frames, spec.fps, batch_size, q, stop), daemon=True,
    )
    feats: list[np.ndarray] = []
    spans: list[tuple[float, float]] = []
    pending: deque[tuple[_Batch, Future[Any]]] = deque()
    # Batches being prepared or waiting: one per worker plus one, but no more than about
    # MAX_INFLIGHT_SNIPPETS snippets (a device-sized I3D batch of 32 snippets is 150 MB of
    # frames and 600 MB once normalised to float32).
    inflight = min(plan.workers, max(1, MAX_INFLIGHT_SNIPPETS // batch_size)) + 1
    workers = inflight - 1
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hamnet-prepare")
    producer.start()
    try:
        eof = False
        while True:
            # keep every worker busy plus one batch ready: ordered results, bounded memory
            while not eof and len(pending) < inflight:
                item = q.get()
                if item is _DONE:
                    eof = True
                elif isinstance(item, _Failed):
                    raise item.error
                else:
                    pending.append((item, pool.submit(first, item.frames)))
            if not pending:
                break
            batch, fut = pending.popleft()
            out = _check(second(fut.result()), len(batch.spans), backbone)
            feats.append(out)
            spans.extend(batch.spans)
            if total:
                report("extract", min(1.0, batch.spans[-1][1] / total))
    finally:
        stop.set()
        for _, fut in pending:
            fut.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
        while producer.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            producer.join(timeout=_PUT_POLL_S)
    return feats, spans


__all__ = ["ThreadPlan", "available_cpus", "extract", "plan_threads"]
