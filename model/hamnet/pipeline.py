"""Video file -> action segments: probe, decode, snippets, backbone, HAM-Net head, post-processing.

This is the one function the CLI (``hamnet predict VIDEO``) and the worker call. Why sessions are
cached per process: creating the ONNX Runtime sessions (and, for I3D, loading ~100 MB of
weights) costs far more than a short video's inference; a worker process serves many jobs with
the same bundle, so backbones and heads are built lazily once per bundle checksum and reused.

Times in the result are seconds from the first video frame. ``segments`` are clipped to the
decoded video length, because the last snippet of a video shorter than one snippet is padded
(see :mod:`hamnet.video.snippets`) and a segment must not end after the video does.

What makes an answer trustworthy travels with it (see :mod:`hamnet.card`,
:mod:`hamnet.calibration`, :mod:`hamnet.domain`): each segment carries the raw OIC ``score``
and a calibrated ``confidence`` (null when the bundle has no calibration, or one fitted for
another post-processing profile than the one used), the result carries ``domain`` (is the
video like the training data? null when the bundle has no statistics) and ``model.card``
(the compact model card, null for bundles without one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hamnet.bundle import Bundle, load_bundle
from hamnet.card import compact
from hamnet.errors import ConfigError, VideoError

Progress = Callable[[str, float], None]

_lock = threading.Lock()
_backbones: dict[str, Any] = {}
_heads: dict[str, Any] = {}
_bundles: dict[str, Bundle] = {}


def clear_caches() -> None:
    """Forget cached bundles and sessions (tests; workers reloading models)."""
    with _lock:
        _backbones.clear()
        _heads.clear()
        _bundles.clear()


def evict(bundle: Bundle) -> None:
    """Forget one bundle and its sessions (a worker's bounded model cache dropping it): the
    ONNX Runtime sessions are released once no caller holds them any more."""
    with _lock:
        _backbones.pop(f"{bundle.checksum}:{bundle.root}", None)
        _heads.pop(str(bundle.head_path), None)
        for key in [k for k, b in _bundles.items()
                    if b.checksum == bundle.checksum and b.root == bundle.root]:
            del _bundles[key]


def cached_checksums() -> set[str]:
    """Checksums of the bundles this process holds (tests and the worker's heartbeat)."""
    with _lock:
        return {b.checksum for b in _bundles.values()}


def get_bundle(bundle: Bundle | str | Path) -> Bundle:
    """A loaded bundle, cached by path so checksums are verified once per process."""
    if isinstance(bundle, Bundle):
        return bundle
    key = str(Path(bundle).resolve())
    with _lock:
        if key not in _bundles:
            _bundles[key] = load_bundle(bundle)
        return _bundles[key]


def get_backbone(bundle: Bundle, providers: list[str] | None = None,
                 threads: int | None = None) -> Any:
    """The bundle's backbone, once per process. ``threads`` caps the intra-op threads of its
    ONNX Runtime sessions (a worker divides the cores among its children)."""
    from hamnet.video.backbone import load_backbone

    key = f"{bundle.checksum}:{bundle.root}"
    with _lock:
        if key not in _backbones:
            backbone = load_backbone(bundle.backbone, bundle.root, providers=providers)
            if threads and hasattr(backbone, "threads"):
                backbone.threads = int(threads)
            _backbones[key] = backbone
        return _backbones[key]


def get_head(bundle: Bundle, providers: list[str] | None = None,
             threads: int | None = None) -> Any:
    from hamnet.localize import HeadSession

    key = str(bundle.head_path)
    with _lock:
        if key not in _heads:
            _heads[key] = HeadSession(bundle.head_path, providers=providers, threads=threads)
        return _heads[key]


def _filter_labels(
    items: list[dict[str, Any]],
    include: Iterable[str] | None,
    exclude: Iterable[str] | None,
    classes: tuple[str, ...],
) -> list[dict[str, Any]]:
    inc = set(include) if include else None
    exc = set(exclude) if exclude else set()
    unknown = sorted(((inc or set()) | exc) - set(classes))
    if unknown:
        raise ConfigError(
            f"unknown label(s) {', '.join(unknown)}; this model knows: {', '.join(classes)}"
        )
    return [
        it for it in items if (inc is None or it["label"] in inc) and it["label"] not in exc
    ]


def serve_segments(
    raw: list[dict[str, Any]],
    duration: float,
    cal: Any,
    cfg: Any,
    min_score: float | None,
    min_raw_score: float | None,
) -> list[dict[str, Any]]:
    """What is served from post-processed ``raw`` segments: clipped to the video, with
    ``confidence`` (``cal`` applied to the raw score; None without ``cal``), filtered by
    ``min_score``/``min_raw_score`` (see :func:`predict_video`), and cleaned again: clipping
    can make two segments that ran past the end overlap more than before, so the clean step
    is re-applied unless the profile is ``official``. Public so that benchmarks that reuse
    one feature extraction serve exactly what :func:`predict_video` serves."""
    from hamnet.postprocess import dedupe_mask

    conf = cal([s["score"] for s in raw]) if (cal is not None and raw) else None
    segments = []
    for i, seg in enumerate(raw):
        c = None if conf is None else round(float(conf[i]), 4)
        if min_raw_score is not None and seg["score"] < min_raw_score:
            continue
        if min_score is not None and (seg["score"] if c is None else c) < min_score:
            continue
        start = float(min(max(seg["start"], 0.0), duration))
        end = float(min(max(seg["end"], 0.0), duration))
        if end <= start:
            continue
        segments.append(seg | {"start": start, "end": end, "confidence": c})
    if segments and cfg.profile != "official":
        keep = dedupe_mask([s["label_id"] for s in segments], [s["score"] for s in segments],
                           [s["start"] for s in segments], [s["end"] for s in segments])
        segments = [s for s, k in zip(segments, keep.tolist(), strict=True) if k]
    return segments


def predict_video(
    bundle: Bundle | str | Path,
    video_path: str | Path,
    progress: Progress | None = None,
    min_score: float | None = None,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    profile: str | None = None,
    batch_size: int | None = None,
    max_seconds: float | None = None,
    max_duration_s: float | None = None,
    max_dimension: int | None = None,
    max_pixels: int | None = None,
    min_raw_score: float | None = None,
) -> dict[str, Any]:
    """Localize the bundle's actions in ``video_path``.

    ``progress(stage, fraction)`` is called with stages ``probe``, ``extract`` (0..1 over the
    video), ``localize``, ``postprocess`` and ``done``. ``min_score`` drops segments whose
    calibrated ``confidence`` is below it; when the result has no confidence (a bundle
    without calibration, or ``profile`` other than the one it was calibrated for) it falls
    back to the raw ``score``. ``min_raw_score`` always filters on the raw score.
    ``include``/``exclude`` keep/drop labels (unknown labels are a :class:`ConfigError`);
    ``profile`` overrides the bundle's post-processing profile (``official``/``fixed``/
    ``custom``). ``max_seconds`` analyses only the start of the video.

    ``max_duration_s``, ``max_dimension`` and ``max_pixels`` bound untrusted input (``None``:
    unbounded): a video longer (in decoded time, whatever its container declares), wider/higher
    or with more pixels per picture raises :class:`~hamnet.errors.VideoTooLongError` /
    :class:`~hamnet.errors.VideoTooLargeError` (``code`` ``video_too_long`` /
    ``resolution_too_large``), one whose duration cannot be bounded
    :class:`~hamnet.errors.UnboundedDurationError` (``duration_unknown``).
    """
    from hamnet.postprocess import predict_from_outputs
    from hamnet.video.backbone import extract_features
    from hamnet.video.decode import DecodeStats

    b = get_bundle(bundle)
    report = progress or (lambda stage, fraction: None)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    report("probe", 0.0)
    backbone = get_backbone(b)
    head = get_head(b)
    timings["load_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    stats = DecodeStats()
    try:
        feats, info, spans = extract_features(
            backbone, video_path, progress=report, batch_size=batch_size,
            max_seconds=max_seconds, stats=stats, max_duration_s=max_duration_s,
            max_dimension=max_dimension, max_pixels=max_pixels,
        )
    except VideoError as e:
        # Results and job errors are shown to API clients: name the file, not where the
        # server keeps it.
        raise type(e)(str(e).replace(str(video_path), Path(video_path).name)) from None
    timings["extract_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    report("localize", 0.0)
    elem, atn = head.run(feats, name=str(video_path))
    timings["head_s"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    report("postprocess", 0.0)
    cfg = b.postprocess if profile is None else replace(b.postprocess, profile=profile)
    # the served result is cleaned in every profile but official (which must stay exact)
    out = predict_from_outputs(elem, atn, list(b.classes), cfg, clean=cfg.profile != "official")
    cal = b.calibration if b.calibration and b.calibration.profile == cfg.profile else None
    domain = b.domain.check(feats) if b.domain is not None else None
    timings["postprocess_s"] = time.perf_counter() - t3

    # Video length: what was decoded (a truncated file's header overstates it), else what
    # the container declares, else what the snippets cover.
    duration = stats.end_time or info.duration or float(spans[-1, 1])
    if max_seconds is not None:
        duration = min(duration, max_seconds)
    segments = serve_segments(out["segments"], duration, cal, cfg, min_score, min_raw_score)
    segments = _filter_labels(segments, include, exclude, b.classes)
    classes = _filter_labels(out["classes"], include, exclude, b.classes)
    attention = np.asarray(atn, dtype=np.float64).reshape(-1)
    timings["total_s"] = time.perf_counter() - t0
    report("done", 1.0)
    return {
        "video": {
            "duration": duration,
            "fps": info.fps,
            "width": info.width,
            "height": info.height,
            "rotation": info.rotation,
            "codec": info.codec,
            "partial": stats.partial,
            "decode_warnings": list(stats.messages),
        },
        "model": {
            "name": b.name,
            "version": b.version,
            "checksum": b.checksum,
            "backbone": b.backbone.name,
            "provider": backbone.provider,
            "head_provider": head.provider,
            "profile": out.get("profile", cfg.profile),
            "card": compact(b.card),
        },
        "domain": domain,
        "segments": segments,
        "classes": classes,
        "video_scores": out.get("video_scores", []),
        "attention": [round(float(x), 6) for x in attention],
        "snippet_seconds": b.backbone.snippet_seconds,
        "num_snippets": int(feats.shape[0]),
        "timings": {k: round(v, 4) for k, v in timings.items()},
    }
