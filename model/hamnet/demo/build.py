"""The build itself: render -> features -> W-TAL layout -> train -> evaluate -> bundle.

Three rendered sets, three seeds that never meet: *train* (``seed``) trains the head and
gives the domain statistics; *calibration* (``seed +`` :data:`CALIBRATION_SEED_OFFSET`)
fits the confidence map and the out-of-domain threshold; *held-out* (``seed +``
``HELD_OUT_SEED_OFFSET``) only measures (mAP with and without the clean step, calibration
error, out-of-domain flags), and those measurements go into the bundle's model card.

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

import numpy as np

from hamnet.demo.datasets import extract_dataset, render_set, write_layout
from hamnet.demo.evaluate import (
    count_instances,
    fit_trust,
    head_predictions,
    map_table,
    results_from_outputs,
    trust_report,
)
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
from hamnet.demo.synth.actions import CLASS_DESCRIPTIONS
from hamnet.demo.train import train_and_export
from hamnet.errors import HamnetError
from hamnet.paths import default_bundle_dir, hamnet_home

CALIBRATION_SEED_OFFSET = 200_000  # calibration videos: seed + this (not train, not held-out)
CALIBRATION_SUBSET = "calibration"
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
    calib_seed = seed + CALIBRATION_SEED_OFFSET
    n_calib = sz.calibration_videos
    st = Stages(verbose)
    t_start = time.perf_counter()

    with st.stage("render"):
        gt_train = render_set(
            work / "train", sz.train_videos, seed, sz.scene, TRAIN_SUBSET, workers, verbose
        )
        gt_test = render_set(
            work / "test", sz.test_videos, test_seed, sz.test_scene, TEST_SUBSET, workers, verbose
        )
        gt_calib = render_set(
            work / "calibration", n_calib, calib_seed, sz.test_scene, CALIBRATION_SUBSET,
            workers, verbose,
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
        f_calib = extract_dataset(
            video_paths(work / "calibration"), work / "calibration" / fdir, workers, verbose,
            "features calibration",
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
                "ap": det["ap"],
                "classes": det["classes"],
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
            with st.stage("calibrate"):
                trust = _calibrate(
                    head, cfg.postprocess, classes, f_train, f_calib, gt_calib, f_test,
                    gt_test, outputs, results, det, verbose,
                )

    assert head_path is not None
    with st.stage("bundle"):
        final_cfg = experiment_config(sz, seed)
        held = evals["hamnet"]
        metrics = {
            "tiou": held["tiou"], "mAP": held["mAP"], "average_mAP": held["average_mAP"],
            "videos": len(f_test), "instances": count_instances(gt_test, f_test),
            "seed": test_seed,
            "note": f"exported ONNX head + the bundle's post-processing (profile "
                    f"{final_cfg.postprocess.profile})",
        }
        card = demo_card(size, seed, sz, classes, spec, metrics, trust, held)
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
            "held_out": {k: v for k, v in held.items() if k not in ("ap", "classes")},
            "calibration_seed": calib_seed,
            "calibration_videos": n_calib,
            "trust": {k: v for k, v in trust.items() if k not in ("calibration", "domain")},
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
            card=card,
            calibration=trust["calibration"],
            domain=trust["domain"],
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
        "trust": {k: v for k, v in trust.items() if k not in ("calibration", "domain")},
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


def _calibrate(
    head: Path, post: Any, classes: list[str], f_train: dict, f_calib: dict, gt_calib: dict,
    f_test: dict, gt_test: dict, outputs: dict, results: dict, det: dict, verbose: bool,
) -> dict[str, Any]:
    """Fit the confidence map and the domain threshold on the calibration split, then
    measure them, and the clean step, on the held-out videos."""
    from hamnet.demo.evaluate import head_outputs
    from hamnet.evaluation import detection_map

    calib_results = results_from_outputs(head_outputs(head, f_calib), classes, post)
    cal, dom = fit_trust(f_train, f_calib, calib_results, gt_calib, post.profile)
    report = trust_report(cal, dom, results, gt_test, f_test)
    raw = results_from_outputs(outputs, classes, post, clean=False)
    det_raw = detection_map(gt_test, {"results": raw}, det["tiou"], subset=TEST_SUBSET,
                            skip_classes_without_gt=True)
    report["clean"] = {
        "segments_before": sum(map(len, raw.values())),
        "segments_after": sum(map(len, results.values())),
        "average_mAP_before": det_raw["average_mAP"],
        "average_mAP_after": det["average_mAP"],
        "mAP_before": det_raw["mAP"],
        "mAP_after": det["mAP"],
    }
    report["calibration_segments"] = cal.info["segments"]
    report["domain_threshold"] = dom.threshold
    if verbose:
        c = report["clean"]
        print(f"confidence: isotonic on {cal.info['segments']} calibration segments; held-out "
              f"ECE {report['ece']:.3f} over {report['segments']} segments "
              f"({report['bins']} bins)")
        print(f"domain: threshold {dom.threshold:.4f}; held-out videos flagged "
              f"{report['domain_flagged']}/{report['domain_videos']}")
        print(f"clean step: {c['segments_before']} -> {c['segments_after']} segments, avg mAP "
              f"{100 * c['average_mAP_before']:.2f} -> {100 * c['average_mAP_after']:.2f}")
    return {**report, "calibration": cal, "domain": dom}


def _span(r: tuple[int, int]) -> str:
    return str(r[0]) if r[0] == r[1] else f"{r[0]}-{r[1]}"


def demo_card(
    size: str, seed: int, sz: Any, classes: list[str], spec: Any, metrics: dict[str, Any],
    trust: dict[str, Any], held: dict[str, Any],
) -> Any:
    """The model card of a demo bundle: everything in it is known to the build."""
    from hamnet.card import ClassInfo, DataSummary, HeldOutMetrics, ModelCard

    sc = sz.scene
    names = ", ".join(classes)
    at = int(np.argmin(np.abs(np.asarray(held["tiou"]) - 0.5)))  # the tIoU closest to 0.5
    ap50 = dict(zip(held["classes"], np.asarray(held["ap"])[at], strict=True))
    weakest = min(ap50, key=ap50.get) if ap50 else None
    limits = [
        f"Knows only {len(classes)} motion patterns ({names}) of one flat shape in "
        "rendered scenes. On real footage it still outputs segments and they mean nothing: "
        "check the result's domain flag.",
        f"Trained and measured on {sc.width}x{sc.height} renders at {sc.fps:g} fps, "
        f"{sc.duration[0]:g}-{sc.duration[1]:g} s long; other sizes, lengths and content "
        "change the features.",
        "Confidence is calibrated on rendered videos only (true detection: right class, tIoU "
        ">= 0.5); it does not hold for videos flagged out of domain.",
        "Segment boundaries come from attention learned with video-level labels only; no "
        "boundary was annotated for training.",
    ]
    if weakest is not None and ap50[weakest] < max(ap50.values()):
        limits.append(f"Weakest class on the held-out videos: {weakest} (AP at tIoU "
                      f"{held['tiou'][at]:.1f}: {100 * ap50[weakest]:.0f} %).")
    return ModelCard(
        title=f"HAM-Net synthetic demo model ({size}, seed {seed})",
        synthetic=True,
        summary=(
            f"Finds when one of {len(classes)} motion patterns ({names}) happens in "
            f"procedurally rendered videos. Trained with video-level labels only (weak "
            f"supervision) on {sz.train_videos} rendered videos; it has never seen real "
            "footage."
        ),
        intended_use=(
            "Demonstrating and testing the HAM-Net service end to end (upload, localization, "
            "API, web page) offline, without downloaded weights or data. Not for recognising "
            "actions in real videos."
        ),
        limitations=tuple(limits),
        training_data=DataSummary(
            source=f"procedurally rendered videos: hamnet.demo.synth, seed {seed}",
            videos=sz.train_videos,
            classes=len(classes),
            description=(
                f"{sc.width}x{sc.height}, {sc.fps:g} fps, {sc.duration[0]:g}-"
                f"{sc.duration[1]:g} s; {_span(sc.classes_per_video)} classes and "
                f"{_span(sc.instances)} instances per video; drifting textured background, "
                f"{_span(sc.distractors)} distractor objects and brightness flicker; "
                "video-level labels only"
            ),
        ),
        classes=tuple(ClassInfo(c, CLASS_DESCRIPTIONS.get(c, "")) for c in classes),
        backbone=f"{spec.name} (weight-free motion descriptors, {spec.feature_dim}-d, one "
                 f"per {spec.snippet_seconds:.2f} s)",
        flow_method=spec.flow_method,
        metrics=HeldOutMetrics(
            tiou=tuple(metrics["tiou"]), mAP=tuple(metrics["mAP"]),
            average_mAP=metrics["average_mAP"], videos=metrics["videos"],
            instances=metrics["instances"], seed=metrics["seed"], note=metrics["note"],
        ),
        calibration={
            "method": "isotonic regression of true detections (tIoU >= 0.5) on the raw score",
            "calibration_videos": trust["calibration"].info.get("videos"),
            "calibration_segments": trust["calibration_segments"],
            "ece": trust["ece"], "segments": trust["segments"], "bins": trust["bins"],
            "heldout_videos": trust["videos"], "heldout_seed": metrics["seed"],
        },
        domain={
            "method": trust["domain"].to_dict()["method"],
            "threshold": trust["domain_threshold"],
            "heldout_flagged": trust["domain_flagged"],
            "heldout_videos": trust["domain_videos"],
        },
    )


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
