"""The build itself: render -> features -> W-TAL layout -> train -> evaluate -> bundle.

Why a module of its own: this is the order of the steps and what the report records; each
step lives in its own module (:mod:`~hamnet.demo.datasets`, :mod:`~hamnet.demo.train`,
:mod:`~hamnet.demo.evaluate`, :mod:`~hamnet.demo.plots`) and the sizes in
:mod:`~hamnet.demo.presets`. :func:`ensure_default_bundle` is what the service calls on
first start.

Work files (videos, features, training run, report) go to ``<out>.work`` next to the
bundle; features are cached there per video, so an interrupted build resumes quickly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hamnet.demo.datasets import extract_dataset, render_set, write_layout
from hamnet.demo.evaluate import head_predictions, map_table
from hamnet.demo.plots import plot_videos
from hamnet.demo.presets import (
    BASE_LOSS_ONLY,
    DATASET,
    DEMO_LOSS,
    FEATURE_TYPE,
    HELD_OUT_SEED_OFFSET,
    TEST_SUBSET,
    TRAIN_SUBSET,
    demo_size,
    experiment_config,
)
from hamnet.demo.progress import Stages
from hamnet.demo.train import train_and_export
from hamnet.errors import HamnetError
from hamnet.paths import default_bundle_dir, hamnet_home


def build_bundle(
    out_dir: str | Path | None = None,
    size: str = "default",
    seed: int = 0,
    work_dir: str | Path | None = None,
    workers: int | None = None,
    verbose: bool = True,
    ablation: bool = False,
    keep_work: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Build a bundle into ``out_dir`` (default :func:`default_bundle_dir`; must be empty or
    absent). Returns a report: held-out mAP, per-stage seconds, paths. ``ablation`` also
    trains the base-loss-only variant on the same data and reports its held-out mAP."""
    from hamnet.bundle import write_bundle
    from hamnet.demo.synth.render import video_paths
    from hamnet.evaluation import detection_map
    from hamnet.video.motion import default_spec

    sz = demo_size(size)
    out = Path(out_dir) if out_dir is not None else default_bundle_dir()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HamnetError(f"{out}: output exists and is not an empty directory")
    work = Path(work_dir) if work_dir is not None else out.with_name(out.name + ".work")
    work.mkdir(parents=True, exist_ok=True)
    ncpu = os.cpu_count() or 1
    workers = max(1, workers if workers is not None else min(ncpu, 4))
    classes = list(sz.scene.classes)
    spec = default_spec()
    test_seed = seed + HELD_OUT_SEED_OFFSET
    st = Stages(verbose)
    t_start = time.perf_counter()

    with st.stage("render"):
        gt_train = render_set(
            work / "train", sz.train_videos, seed, sz.scene, TRAIN_SUBSET, workers, verbose
        )
        gt_test = render_set(
            work / "test", sz.test_videos, test_seed, sz.test_scene, TEST_SUBSET, workers, verbose
        )
    with st.stage("features"):
        # Cached next to the videos (a re-render removes them) and keyed by the backbone spec.
        fdir = f"features-{hashlib.sha256(json.dumps(spec.to_dict(), sort_keys=True).encode()).hexdigest()[:12]}"
        f_train = extract_dataset(
            video_paths(work / "train"), work / "train" / fdir, workers, verbose, "features train"
        )
        f_test = extract_dataset(
            video_paths(work / "test"), work / "test" / fdir, workers, verbose, "features held-out"
        )
    with st.stage("layout"):
        data_dir = work / "data"
        write_layout(
            data_dir,
            [(gt_train, f_train, TRAIN_SUBSET), (gt_test, f_test, TEST_SUBSET)],
            classes,
            DATASET,
            FEATURE_TYPE,
            TRAIN_SUBSET,
        )

    import torch  # only now: the process pools above are forked from a torch-free parent

    # One thread by default: the head is small, and two threads on a busy 2-core machine were
    # measured 5x slower than one (oversubscription), while idle they gain little.
    torch.set_num_threads(max(1, threads if threads is not None else 1))
    variants = [("hamnet", DEMO_LOSS)] + ([("base_loss_only", BASE_LOSS_ONLY)] if ablation else [])
    evals: dict[str, Any] = {}
    head_path = None
    for vname, loss in variants:
        cfg = experiment_config(sz, seed, loss)
        run_dir = work / f"run_{vname}"
        with st.stage(f"train {vname}"):
            head = train_and_export(cfg, data_dir, run_dir, classes, verbose)
        with st.stage(f"evaluate {vname}"):
            results, outputs = head_predictions(head, f_test, classes, cfg.postprocess)
            det = detection_map(
                gt_test,
                {"results": results},
                cfg.eval.tiou_thresholds,
                subset=TEST_SUBSET,
                skip_classes_without_gt=True,
            )
            evals[vname] = {
                "tiou": det["tiou"],
                "mAP": det["mAP"],
                "average_mAP": det["average_mAP"],
            }
            if verbose:
                print(f"held-out detection mAP ({vname}, {len(f_test)} videos):")
                print(map_table(det))
        if vname == "hamnet":
            head_path = head
            report_dir = work / "report"
            report_dir.mkdir(exist_ok=True)
            with st.stage("plot"):
                plot = plot_videos(
                    report_dir / "heldout_cas.png",
                    outputs,
                    gt_test,
                    results,
                    classes,
                    spec.snippet_seconds,
                )
            (report_dir / "predictions.json").write_text(json.dumps({"results": results}))

    assert head_path is not None
    with st.stage("bundle"):
        final_cfg = experiment_config(sz, seed)
        training = {
            "source": "hamnet demo (synthetic videos, video-level labels only)",
            "size": size,
            "seed": seed,
            "held_out_seed": test_seed,
            "train_videos": sz.train_videos,
            "test_videos": sz.test_videos,
            "epochs": final_cfg.train.max_epochs,
            "lr": final_cfg.train.lr,
            "num_segments": final_cfg.data.num_segments,
            "held_out": evals["hamnet"],
            "scene": asdict(sz.scene),
        }
        write_bundle(
            out,
            head_path,
            classes,
            spec,
            postprocess=final_cfg.postprocess,
            name=f"hamnet-synth-{size}",
            version=f"synth-{size}-s{seed}",
            training=training,
        )
        shutil.copyfile(plot, out / "heldout_cas.png")
    total = round(time.perf_counter() - t_start, 2)
    report = {
        "bundle": str(out),
        "work_dir": str(work),
        "size": size,
        "seed": seed,
        "classes": classes,
        "held_out": evals,
        "stages": st.seconds,
        "total_seconds": total,
        "plot": str(out / "heldout_cas.png"),
        "training_history": str(work / "run_hamnet" / "history.csv"),
    }
    (work / "report" / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    if verbose:
        print("stage timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in st.seconds.items()))
        print(f"total {total:.1f} s; bundle written to {out}")
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
        report["work_dir"] = None
    return report


def ensure_default_bundle(verbose: bool = False, size: str = "default") -> Path:
    """The default bundle directory, built first if it is not there (used by the service).

    A half-written build (no manifest) is removed and rebuilt."""
    import hamnet.demo
    from hamnet.bundle import MANIFEST

    out = default_bundle_dir() if size == "default" else hamnet_home() / "bundles" / size
    if (out / MANIFEST).is_file():
        return out
    if out.exists():
        shutil.rmtree(out)
    # Looked up on the package at call time: ``hamnet.demo.build_bundle`` is the public name
    # (and the one tests replace with a fake).
    hamnet.demo.build_bundle(out, size=size, verbose=verbose, keep_work=False)
    return out
