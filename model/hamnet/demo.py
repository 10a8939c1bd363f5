"""The default model bundle, built from nothing, offline.

Why: pretrained I3D weights and real annotated videos cannot be downloaded here, so the
project trains its own default model end to end, with the same weak supervision HAM-Net is
about: render procedural action videos (:mod:`hamnet.synth`) -> decode -> weight-free motion
features (:mod:`hamnet.video.motion`) -> W-TAL layout with *video-level labels only* ->
HAM-Net training -> ONNX export -> bundle. A held-out set rendered from other seeds measures
detection mAP with exactly what the bundle runs (ONNX head + bundle post-processing).

Sizes: ``"default"`` (the shipped model; ~10 minutes on 2 CPU cores) and ``"mini"`` (CI
sized: a few short videos and three classes, about a minute on one core, still enough to
find a clear action in a simple held-out video).

Work files (videos, features, training run, report) go to ``<out>.work`` next to the
bundle; features are cached there per video, so an interrupted build resumes quickly.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from hamnet.config import (
    DataConfig,
    ExperimentConfig,
    LossConfig,
    PostprocessConfig,
    TrainConfig,
)
from hamnet.errors import ConfigError, HamnetError
from hamnet.synth.scene import SceneConfig

DATASET = "SynthActions"
FEATURE_TYPE = "motion"
TRAIN_SUBSET = "validation"  # the official THUMOS naming: train on "validation"
TEST_SUBSET = "test"
HELD_OUT_SEED_OFFSET = 100_000  # held-out videos use seed + this: never seen in training
# Sparsity weight: the official 0.8 makes the attention collapse to ~0 within a few epochs at
# the learning rates a few thousand snippets need (loss_2 sits at ln(C+1) until it recovers,
# if it does); 0.5 keeps it alive while still making it sparse.
DEMO_LOSS = LossConfig(alpha=0.5)
ABLATION_SWITCHES = {
    "use_hal": False,
    "use_sal": False,
    "use_ssal": False,
    "use_norm": False,
    "use_guide": False,
}
BASE_LOSS_ONLY = replace(DEMO_LOSS, **ABLATION_SWITCHES)


@dataclass(frozen=True)
class DemoSize:
    """Everything a build size decides: data, training and post-processing."""

    train_videos: int
    test_videos: int
    scene: SceneConfig
    test_scene: SceneConfig
    epochs: int
    batch_size: int
    lr: float
    num_segments: int
    eval_every: int
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)


def _sizes() -> dict[str, DemoSize]:
    default_scene = SceneConfig(duration=(20.0, 40.0))
    mini_classes = ("spin", "slide", "pulse")
    mini_scene = SceneConfig(
        duration=(10.0, 14.0),
        classes=mini_classes,
        classes_per_video=(1, 1),
        instances=(1, 2),
        distractors=(0, 1),
    )
    return {
        "default": DemoSize(
            train_videos=160,
            test_videos=40,
            scene=default_scene,
            test_scene=default_scene,
            epochs=50,
            batch_size=16,
            lr=1e-3,
            num_segments=64,
            eval_every=10,
            postprocess=PostprocessConfig(profile="fixed"),
        ),
        "mini": DemoSize(
            train_videos=24,
            test_videos=4,
            scene=mini_scene,
            test_scene=mini_scene,
            epochs=30,
            batch_size=4,
            lr=1e-3,
            num_segments=24,
            eval_every=30,
            postprocess=PostprocessConfig(profile="fixed"),
        ),
    }


SIZES = tuple(_sizes())


def demo_size(size: str) -> DemoSize:
    try:
        return _sizes()[size]
    except KeyError:
        raise ConfigError(f"unknown demo size {size!r}; choose one of {', '.join(SIZES)}") from None


def hamnet_home() -> Path:
    return Path(os.environ.get("HAMNET_HOME") or Path.home() / ".hamnet")


def default_bundle_dir() -> Path:
    """``$HAMNET_HOME/bundles/default`` (HAMNET_HOME defaults to ``~/.hamnet``)."""
    return hamnet_home() / "bundles" / "default"


def experiment_config(
    size: DemoSize, seed: int, loss: LossConfig | None = None
) -> ExperimentConfig:
    """HAM-Net config for the synthetic set: the official losses (sparsity weight 0.5, see
    :data:`DEMO_LOSS`) and training settings for a small data set (100x the official lr:
    thousands, not millions, of snippets, and a few hundred steps)."""
    from hamnet.video.motion import default_spec

    spec = default_spec()
    return ExperimentConfig(
        loss=loss or DEMO_LOSS,
        postprocess=replace(size.postprocess, fps=spec.fps, snippet_frames=spec.snippet_frames),
        data=DataConfig(
            dataset=DATASET,
            feature_type=FEATURE_TYPE,
            num_segments=size.num_segments,
            sampling="random",
            train_subset=TRAIN_SUBSET,
            test_subset=TEST_SUBSET,
            feature_fps=spec.fps,
            snippet_frames=spec.snippet_frames,
        ),
        train=TrainConfig(
            lr=size.lr,
            batch_size=size.batch_size,
            max_epochs=size.epochs,
            seed=seed,
            device="cpu",
            eval_every=size.eval_every,
        ),
    )


# ----------------------------------------------------------------------------- progress


class Stages:
    """Per-stage wall-clock timings, printed as the build goes."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.verbose:
            print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        yield
        self.seconds[name] = round(time.perf_counter() - t0, 2)
        if self.verbose:
            print(f"   {name}: {self.seconds[name]:.1f} s", flush=True)


def _bar(total: int, desc: str, unit: str, verbose: bool) -> Callable[[int], None]:
    """A ``done -> None`` progress callback (a tqdm bar when verbose)."""
    if not verbose:
        return lambda done: None
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit)

    def update(done: int) -> None:
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return update


# ----------------------------------------------------------------------------- data


def _render(
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
    from hamnet.synth.render import render_dataset, video_name

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
    bar = _bar(count, f"render {out.name}", "video", verbose)
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
    update = _bar(len(jobs), desc, "video", verbose)
    done = 0
    from hamnet.synth.render import can_fork_workers

    if workers > 1 and len(jobs) > 1 and can_fork_workers():
        from concurrent.futures import ProcessPoolExecutor

        from hamnet.synth.render import pool_context

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


# ----------------------------------------------------------------------------- evaluation


def head_predictions(
    head_onnx: Path, feats: dict[str, np.ndarray], classes: list[str], post: PostprocessConfig
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Run the exported head + post-processing on cached features (what the bundle does)."""
    from hamnet.localize import HeadSession
    from hamnet.postprocess import predict_from_outputs

    head = HeadSession(head_onnx, providers=["CPUExecutionProvider"])
    results: dict[str, list[dict[str, Any]]] = {}
    outputs = {}
    for name, f in feats.items():
        elem, atn = head.run(f, name=name)
        outputs[name] = (elem, atn)
        out = predict_from_outputs(elem, atn, classes, post)
        results[name] = [
            {"label": s["label"], "score": s["score"], "segment": [s["start"], s["end"]]}
            for s in out["segments"]
        ]
    return results, outputs


def map_table(det: dict[str, Any]) -> str:
    """Markdown table of mAP per tIoU threshold (percent)."""
    tious = [f"{t:.1f}" for t in det["tiou"]]
    head = "| tIoU | " + " | ".join(tious) + " | avg (0.1:0.7) |"
    sep = "|---" * (len(tious) + 2) + "|"
    row = "| mAP (%) | " + " | ".join(f"{100 * m:.1f}" for m in det["mAP"])
    return "\n".join([head, sep, row + f" | {100 * det['average_mAP']:.1f} |"])


def plot_videos(
    path: Path,
    outputs: dict[str, tuple[np.ndarray, np.ndarray]],
    gt: dict[str, Any],
    results: dict[str, list[dict[str, Any]]],
    classes: list[str],
    snippet_seconds: float,
    max_videos: int = 4,
) -> Path:
    """CAS x attention of the GT classes, attention, GT spans and top detections."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(outputs)[:max_videos]
    fig, axes = plt.subplots(len(names), 1, figsize=(10, 2.8 * len(names)), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, name in zip(axes[:, 0], names, strict=True):
        elem, atn = outputs[name]
        t = (np.arange(len(atn)) + 0.5) * snippet_seconds
        e = elem - elem.max(axis=1, keepdims=True)
        prob = np.exp(e) / np.exp(e).sum(axis=1, keepdims=True)
        ax.plot(t, atn[:, 0], color="black", lw=1.5, label="attention")
        anns = gt["database"][name]["annotations"]
        labels = sorted({a["label"] for a in anns})
        for a in anns:
            ci = classes.index(a["label"])
            ax.axvspan(*map(float, a["segment"]), color=colours(ci), alpha=0.2)
        for lab in labels:
            ci = classes.index(lab)
            ax.plot(t, prob[:, ci] * atn[:, 0], color=colours(ci), lw=1.2, label=f"CAS {lab}")
        top = sorted(results.get(name, []), key=lambda r: -r["score"])[: 2 * len(anns)]
        for rank, r in enumerate(top):  # one row per detection, best first
            ci = classes.index(r["label"])
            y = -0.08 - 0.07 * rank
            ax.hlines(y, *r["segment"], color=colours(ci), lw=3)
            ax.text(
                r["segment"][1],
                y,
                f" {r['label']} {r['score']:.2f}",
                fontsize=6,
                va="center",
                color=colours(ci),
            )
        ax.set_ylim(-0.12 - 0.07 * len(top), 1.05)
        ax.set_xlim(0, float(gt["database"][name]["duration"]))
        ax.set_title(
            f"{name}: shaded = ground truth, bars = top detections (best first)", fontsize=9
        )
        ax.legend(fontsize=7, loc="upper right", ncol=4)
    axes[-1, 0].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- the build


def _train_and_export(
    cfg: ExperimentConfig, data_dir: Path, run_dir: Path, classes: list[str], verbose: bool
) -> Path:
    """Train HAM-Net (video-level labels only) and export the last epoch's head to ONNX.

    The last epoch, not the best one on the held-out set: choosing the epoch on the test
    videos would make the reported held-out mAP optimistic."""
    from hamnet.nn.checkpoint import load_checkpoint
    from hamnet.nn.export import export_onnx
    from hamnet.nn.train import train

    train(cfg, data_dir, run_dir, classes=classes, progress=verbose)
    loaded = load_checkpoint(run_dir / "last.ckpt")
    head = run_dir / "head.onnx"
    export_onnx(loaded.model, head, metadata={"classes": json.dumps(classes)})
    return head


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
    from hamnet.data.wtal import WTALVideo, write_wtal
    from hamnet.evaluation import detection_map
    from hamnet.synth.render import video_paths
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
        gt_train = _render(
            work / "train", sz.train_videos, seed, sz.scene, TRAIN_SUBSET, workers, verbose
        )
        gt_test = _render(
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
        if data_dir.exists():
            shutil.rmtree(data_dir)
        vids = []
        for gt, feats, subset in (
            (gt_train, f_train, TRAIN_SUBSET),
            (gt_test, f_test, TEST_SUBSET),
        ):
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
        # Training reads only labels_all (video level) from the train subset; segments are
        # stored for the held-out evaluation.
        write_wtal(
            data_dir, DATASET, vids, classes, feature_type=FEATURE_TYPE, train_subset=TRAIN_SUBSET
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
            head = _train_and_export(cfg, data_dir, run_dir, classes, verbose)
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
    from hamnet.bundle import MANIFEST

    out = default_bundle_dir() if size == "default" else hamnet_home() / "bundles" / size
    if (out / MANIFEST).is_file():
        return out
    if out.exists():
        shutil.rmtree(out)
    build_bundle(out, size=size, verbose=verbose, keep_work=False)
    return out
