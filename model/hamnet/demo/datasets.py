"""The build's data: render the video sets and extract their features, in process pools.

Why a module of its own: these are the slow, parallel, resumable steps of a build. Both are
cached under the work directory (a render is reused when its seed, scene, subset and videos
match; features are saved per video), so an interrupted build picks up where it stopped.
The pools start before the build imports torch (see :func:`hamnet.demo.build.build_bundle`)
and pick their start method with :func:`hamnet.demo.synth.render.pool_context`; inside a
daemonic process (a Celery worker), which may not start children, the work runs serially.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from hamnet.demo.progress import progress_bar
from hamnet.demo.synth.scene import SceneConfig


def render_set(
    out: Path,
    count: int,
    seed: int,
    scene: SceneConfig,
    subset: str,
    workers: int,
    verbose: bool,
) -> dict[str, Any]:
    """Render a set, or reuse it when ``out`` already holds exactly this render (same seed,
    scene, subset and videos): rendering is deterministic, so a resumed build skips it."""
    from hamnet.demo.synth.render import render_dataset, video_name

    try:
        meta = json.loads((out / "render.json").read_text())
        names = [video_name(seed, i) for i in range(count)]
        if (
            meta["seed"] == seed
            and meta["subset"] == subset
            and meta["scene"] == json.loads(json.dumps(asdict(scene)))
            and sorted(meta["videos"]) == names
            and all((out / "videos" / f"{n}.mp4").is_file() for n in names)
        ):
            return json.loads((out / "gt.json").read_text())
    except (OSError, KeyError, ValueError):
        pass
    if out.exists():
        shutil.rmtree(out)
    bar = progress_bar(count, f"render {out.name}", "video", verbose)
    return render_dataset(
        out, count, seed, scene, subset=subset, workers=workers, progress=lambda d, n: bar(d)
    )


def _extract_one(job: tuple[str, str, dict[str, Any]]) -> tuple[str, int]:
    """Worker: features of one video into a cached ``.npy`` (skipped when present)."""
    video, out, spec_dict = job
    if Path(out).is_file():
        return out, 0
    import cv2

    from hamnet.video.backbone import BackboneSpec, extract_features, load_backbone

    cv2.setNumThreads(1)
    backbone = load_backbone(BackboneSpec.from_dict(spec_dict))
    feats, _, _ = extract_features(backbone, video)
    tmp = Path(out).with_suffix(".tmp.npy")
    np.save(tmp, feats.astype(np.float32))
    tmp.replace(out)
    return out, int(feats.shape[0])


def extract_dataset(
    videos: list[Path], feat_dir: Path, workers: int, verbose: bool, desc: str
) -> dict[str, np.ndarray]:
    """Motion features of every video (cached in ``feat_dir``), in parallel processes."""
    from hamnet.video.motion import default_spec

    feat_dir.mkdir(parents=True, exist_ok=True)
    spec = default_spec().to_dict()
    jobs = [(str(v), str(feat_dir / f"{v.stem}.npy"), spec) for v in videos]
    update = progress_bar(len(jobs), desc, "video", verbose)
    done = 0
    from hamnet.demo.synth.render import can_fork_workers

    if workers > 1 and len(jobs) > 1 and can_fork_workers():
        from concurrent.futures import ProcessPoolExecutor

        from hamnet.demo.synth.render import pool_context

        with ProcessPoolExecutor(workers, mp_context=pool_context()) as ex:
            for _ in ex.map(_extract_one, jobs, chunksize=1):
                done += 1
                update(done)
    else:
        for job in jobs:
            _extract_one(job)
            done += 1
            update(done)
    return {v.stem: np.load(feat_dir / f"{v.stem}.npy") for v in videos}


def write_layout(
    data_dir: Path,
    sets: list[tuple[dict[str, Any], dict[str, np.ndarray], str]],
    classes: list[str],
    dataset: str,
    feature_type: str,
    train_subset: str,
) -> None:
    """Write ``(gt, features, subset)`` sets into a fresh W-TAL layout at ``data_dir``.

    Training reads only labels_all (video level) from the train subset; segments are stored
    for the held-out evaluation."""
    from hamnet.data.wtal import WTALVideo, write_wtal

    if data_dir.exists():
        shutil.rmtree(data_dir)
    vids = []
    for gt, feats, subset in sets:
        for name, entry in gt["database"].items():
            anns = entry["annotations"]
            vids.append(
                WTALVideo(
                    name=name,
                    features=feats[name],
                    subset=subset,
                    segments=[a["segment"] for a in anns],
                    labels=[a["label"] for a in anns],
                    duration=float(entry["duration"]),
                )
            )
    write_wtal(
        data_dir, dataset, vids, classes, feature_type=feature_type, train_subset=train_subset
    )
