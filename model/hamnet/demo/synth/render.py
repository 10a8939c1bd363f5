"""Render synthetic action data sets: MP4 files, ground truth and video-level labels.

Layout written by :func:`render_dataset` into ``out``::

    videos/<name>.mp4   H.264, yuv420p (what any real pipeline decodes)
    gt.json             official ActivityNet/THUMOS-style ground truth (segments in seconds)
    labels.json         video-level labels only: what weakly-supervised training may see
    labels.csv          the same, one ``video,label`` row per label
    render.json         the full render plan per video (timings, actors, seeds) for debugging

Determinism: video ``i`` of seed ``s`` is planned from ``SeedSequence([s, i])`` and named
``synth_<s>_<i>``, so renders with different seeds never share a name, the same (seed, index)
always gives the same frames and ground truth, and a data set can be rendered in parallel in
any order.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from hamnet.demo.synth.scene import SceneConfig, VideoPlan, plan_video, render_frames
from hamnet.errors import HamnetError

GT_VERSION = "hamnet-synth/1"


def video_name(seed: int, index: int) -> str:
    return f"synth_{seed}_{index:04d}"


def make_plan(seed: int, index: int, cfg: SceneConfig) -> VideoPlan:
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index)]))
    return plan_video(rng, cfg, video_name(seed, index))


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: float, crf: int = 18) -> int:
    """Encode RGB frames as H.264/yuv420p MP4 with PyAV; returns the number of frames.

    One encoder thread: deterministic output and no oversubscription when several videos are
    rendered in parallel processes."""
    try:
        import av
    except ModuleNotFoundError:
        from hamnet.errors import MissingDependencyError

        raise MissingDependencyError(
            "rendering videos needs PyAV (pip install 'hamnet[video]')"
        ) from None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    n = 0
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(
            "libx264",
            rate=rate,
            options={"crf": str(crf), "preset": "veryfast", "threads": "1"},
        )
        stream.pix_fmt = "yuv420p"
        stream.thread_count = 1
        for img in frames:
            if n == 0:
                stream.height, stream.width = img.shape[:2]
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
            n += 1
        for packet in stream.encode():
            container.mux(packet)
    return n


def plan_record(plan: VideoPlan) -> dict[str, Any]:
    """JSON-able description of a plan (render.json)."""
    d = dataclasses.asdict(plan)
    d["duration"] = plan.duration
    return d


def gt_entry(plan: VideoPlan, subset: str) -> dict[str, Any]:
    return {
        "subset": subset,
        "duration": round(plan.duration, 3),
        "annotations": [
            {"label": i.label, "segment": [round(i.start, 2), round(i.end, 2)]}
            for i in sorted(plan.instances, key=lambda i: i.start)
        ],
    }


def _render_one(job: tuple[int, int, SceneConfig, str, int]) -> dict[str, Any]:
    seed, index, cfg, videos_dir, crf = job
    plan = make_plan(seed, index, cfg)
    t0 = time.perf_counter()
    write_mp4(Path(videos_dir) / f"{plan.name}.mp4", render_frames(plan), plan.fps, crf)
    return {"plan": plan, "seconds": time.perf_counter() - t0}


def render_dataset(
    out: str | Path,
    count: int,
    seed: int,
    cfg: SceneConfig | None = None,
    subset: str = "test",
    workers: int = 1,
    crf: int = 18,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Render ``count`` videos into ``out`` (see module docstring); returns the gt dict.

    ``progress(done, total)`` is called after each video. ``workers > 1`` renders in a
    process pool (see :func:`pool_context`)."""
    if count < 1:
        raise HamnetError(f"count must be >= 1, got {count}")
    cfg = cfg or SceneConfig()
    out = Path(out)
    videos_dir = out / "videos"
    videos_dir.mkdir(parents=True, exist_ok=True)
    jobs = [(int(seed), i, cfg, str(videos_dir), crf) for i in range(count)]
    results: list[dict[str, Any]] = []
    if workers > 1 and count > 1 and can_fork_workers():
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, count), mp_context=pool_context()) as ex:
            for r in ex.map(_render_one, jobs):
                results.append(r)
                if progress:
                    progress(len(results), count)
    else:
        for job in jobs:
            results.append(_render_one(job))
            if progress:
                progress(len(results), count)
    plans = [r["plan"] for r in results]
    gt = {
        "version": GT_VERSION,
        "class-list": {str(i): c for i, c in enumerate(cfg.classes)},
        "database": {p.name: gt_entry(p, subset) for p in plans},
    }
    (out / "gt.json").write_text(json.dumps(gt, indent=1) + "\n")
    labels = {
        "classes": list(cfg.classes),
        "videos": {p.name: p.labels for p in plans},
    }
    (out / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    with open(out / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["video", "label"])
        for p in plans:
            for lab in p.labels:
                w.writerow([p.name, lab])
    (out / "render.json").write_text(
        json.dumps(
            {
                "seed": seed,
                "scene": dataclasses.asdict(cfg),
                "subset": subset,
                "videos": {p.name: plan_record(p) for p in plans},
            },
            indent=1,
        )
        + "\n"
    )
    return gt


def video_paths(out: str | Path) -> list[Path]:
    """The MP4 files of a rendered data set, in name order."""
    return sorted((Path(out) / "videos").glob("*.mp4"))


def _single_threaded() -> bool:
    """True when this process has exactly one OS thread (Linux: /proc/self/task).

    Native threads count too (torch's OpenMP pool, ONNX Runtime, redis clients): forking a
    process that has them can leave a child blocked forever on a lock held by a thread that
    does not exist in the child."""
    try:
        return len(os.listdir("/proc/self/task")) == 1
    except OSError:
        import threading

        return threading.active_count() == 1


def pool_context():
    """Process start method for render/feature pools.

    ``fork`` when the parent is single-threaded (the CLI: fast start, no ``__main__`` guard
    needed), otherwise ``forkserver`` (children fork from a clean single-threaded server) or
    ``spawn``. A parent that already imported torch, or runs inside a test session, has native
    threads, and a plain fork there can deadlock."""
    import multiprocessing as mp

    methods = mp.get_all_start_methods()
    if "fork" in methods and _single_threaded():
        return mp.get_context("fork")
    return mp.get_context("forkserver" if "forkserver" in methods else "spawn")


def can_fork_workers() -> bool:
    """False inside a daemonic process (e.g. a Celery prefork worker building the default
    bundle), which may not start children: callers then work serially."""
    import multiprocessing as mp

    return not mp.current_process().daemon


def default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))
