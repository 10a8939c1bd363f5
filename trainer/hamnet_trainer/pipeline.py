"""One training, stage by stage: fetch -> features -> train -> bundle -> publish.

* **fetch**: the dataset must be ``ready``; its ``labels.json`` names the videos and labels.
* **features**: extracted once per dataset and backbone spec and cached in the blob store
  (``datasets/<id>/features/<spec hash>/<video>.npy``): a second training on the same dataset,
  or a resumed one, downloads no video.
* **train**: :func:`hamnet.training_run.run` on a seeded train/validation split; after every
  epoch the resumable state goes to ``trainings/<id>/checkpoint.pt`` and the history (losses,
  validation classification mAP) to the record. A resumed attempt starts after the last
  checkpointed epoch. Cancellation (DELETE) or a lost lease stops it at the next batch.
* **bundle**: ONNX head, the backbone spec, the domain check (training-feature ranges with a
  threshold from the validation videos), and a model card saying what was and was not
  measured; no confidence calibration (that needs temporal ground truth).
* **publish**: :meth:`hamnet_jobs.registry.ModelRegistry.publish` as ``<name>@<version>`` of the
  training's owner; the record gets the model reference (``model=`` on jobs).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from celery.exceptions import SoftTimeLimitExceeded

from hamnet_trainer.runtime import TrainerRuntime

log = logging.getLogger("hamnet.trainer")
_PROGRESS = {"fetch": (0, 2), "features": (2, 40), "train": (40, 95), "bundle": (95, 98),
             "publish": (98, 99)}


class Stop(Exception):
    """Cancelled, deleted or lease lost: stop without writing anything more."""


def _pct(stage: str, fraction: float) -> int:
    lo, hi = _PROGRESS[stage]
    return int(lo + (hi - lo) * max(0.0, min(1.0, fraction)))


def spec_hash(spec_dict: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec_dict, sort_keys=True).encode()).hexdigest()[:12]


def run_training(rt: TrainerRuntime, training_id: str) -> str:
    s = rt.settings
    store = rt.trainings
    rec, action = store.begin(training_id, s.max_attempts, rt.name, s.lease_s)
    if action != "run" or rec is None:
        log.info("training %s: %s", training_id, action)
        return action
    token = rec.lease or ""
    rt.current = (training_id, token)
    scratch = rt.storage.scratch_dir(f"train-{training_id}"[:64])
    try:
        _stages(rt, rec, token, scratch)
        return "succeeded"
    except Stop:
        cur = store.get(training_id)
        if cur is None or cur.status == "cancelled":
            rt.blobs.delete_prefix(f"trainings/{training_id}")
        log.info("training %s stopped (%s)", training_id, cur.status if cur else "deleted")
        return "stopped"
    except SoftTimeLimitExceeded:
        store.fail(training_id, "time_limit_exceeded", "the training took longer than the "
                   f"{s.soft_time_limit:.0f} s limit (HAMNET_SOFT_TIME_LIMIT)", token)
        return "failed"
    except TrainingError as e:
        store.fail(training_id, e.code, str(e), token)
        return "failed"
    except Exception as e:
        log.exception("training %s failed", training_id)
        store.fail(training_id, "internal_error", f"{type(e).__name__}: {str(e)[:300]}", token)
        return "failed"
    finally:
        rt.current = None
        shutil.rmtree(scratch, ignore_errors=True)


class TrainingError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _report(rt: TrainerRuntime, rec: Any, token: str, **changes: Any) -> None:
    if not rt.trainings.report(rec.id, token, **changes):
        raise Stop()


def _stages(rt: TrainerRuntime, rec: Any, token: str, scratch: Path) -> None:
    from hamnet.video.motion import default_spec

    t0 = time.perf_counter()
    seconds: dict[str, float] = {}
    _report(rt, rec, token, stage="fetch", progress=_pct("fetch", 0))
    ds = rt.datasets.get(rec.dataset)
    if ds is None or ds.status != "ready":
        raise TrainingError("dataset_unavailable", f"dataset {rec.dataset} is "
                            f"{'gone' if ds is None else ds.status}")
    try:
        labels = json.loads(rt.blobs.get_bytes(f"{ds.prefix}/labels.json"))
    except FileNotFoundError:
        raise TrainingError("dataset_unavailable", "the dataset's files are gone") from None
    classes: list[str] = list(labels["classes"])
    spec = default_spec()
    seconds["fetch"] = round(time.perf_counter() - t0, 2)

    t1 = time.perf_counter()
    feats, cache = _features(rt, rec, token, ds.prefix, labels["videos"], spec, scratch)
    seconds["features"] = round(time.perf_counter() - t1, 2)

    from hamnet import training_run as tr

    cidx = {c: i for i, c in enumerate(classes)}
    videos = []
    for v in labels["videos"]:
        y = np.zeros(len(classes), np.float32)
        y[[cidx[lab] for lab in v["labels"]]] = 1.0
        videos.append(tr.Video(Path(v["file"]).stem, feats[Path(v["file"]).stem], y))
    by_name = {v.name: v for v in videos}
    train_names, val_names = tr.split(list(by_name), rec.validation_fraction, rec.seed)
    train_set = [by_name[n] for n in train_names]
    val_set = [by_name[n] for n in val_names]
    cfg = _config(rec.epochs, rec.seed)

    from hamnet_jobs.trainings import checkpoint_key

    resume = None
    ckey = checkpoint_key(rec.id)
    if rt.blobs.exists(ckey):
        resume = tr.TrainState.from_bytes(rt.blobs.get_bytes(ckey))
        log.info("training %s resumes after epoch %d", rec.id, resume.epoch)
    _report(rt, rec, token, stage="train", progress=_pct("train", 0),
            split={"train": len(train_set), "validation": len(val_set)},
            resumed_from_epoch=resume.epoch if resume else None,
            **({"epoch": resume.epoch, "history": resume.history} if resume else {}))

    def on_epoch(state: Any, _model: Any) -> None:
        rt.blobs.put_bytes(ckey, state.to_bytes())
        _report(rt, rec, token, epoch=state.epoch, history=state.history,
                progress=_pct("train", state.epoch / rec.epochs))

    def should_stop() -> bool:
        return not rt.trainings.alive(rec.id, token)

    t2 = time.perf_counter()
    try:
        model = tr.run(cfg, classes, train_set, val_set, resume=resume, on_epoch=on_epoch,
                       should_stop=should_stop, threads=rt.settings.threads)
    except tr.Stopped:
        raise Stop() from None
    seconds["train"] = round(time.perf_counter() - t2, 2)
    history = (rt.trainings.get(rec.id) or rec).history

    t3 = time.perf_counter()
    _report(rt, rec, token, stage="bundle", progress=_pct("bundle", 0))
    from hamnet_trainer.bundling import build_bundle

    bundle_dir = build_bundle(scratch / "bundle", model, cfg, classes, spec, rec, ds,
                              train_set, val_set, history)
    seconds["bundle"] = round(time.perf_counter() - t3, 2)

    _report(rt, rec, token, stage="publish", progress=_pct("publish", 0))
    from hamnet_jobs.registry import ModelRegistry

    if not rt.trainings.alive(rec.id, token):
        raise Stop()
    mv = ModelRegistry(rt.client, rt.storage).publish(
        rec.owner, rec.name, bundle_dir,
        source={"training": rec.id, "dataset": ds.id, "dataset_name": ds.name})
    model_ref = {"name": mv.name, "version": mv.version, "checksum": mv.checksum,
                 "ref": mv.ref}
    val_maps = [h["val_map"] for h in history if h.get("val_map") is not None]
    metrics = {
        "validation": {"classification_mAP": val_maps[-1] if val_maps else None,
                       "videos": len(val_set),
                       "note": "video-level classification mAP of the last epoch on the "
                               "held-out split; no temporal ground truth, so no detection "
                               "mAP"},
        "train_videos": len(train_set), "epochs": rec.epochs, "feature_cache": cache,
        "seconds": {**seconds, "total": round(time.perf_counter() - t0, 2)},
    }
    if not rt.trainings.finish(rec.id, token, model_ref, metrics):
        raise Stop()
    rt.blobs.delete_prefix(f"trainings/{rec.id}")


def _config(epochs: int, seed: int) -> Any:
    """The demo's settings (sizes chosen on validation seeds, bench/results/demo.md) with the
    training's epochs and seed."""
    from hamnet.demo.presets import demo_size, experiment_config

    cfg = experiment_config(demo_size("default"), seed)
    return replace(cfg, train=replace(cfg.train, max_epochs=epochs, seed=seed))


def _features(rt: TrainerRuntime, rec: Any, token: str, prefix: str,
              videos: list[dict[str, Any]], spec: Any,
              scratch: Path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Features of every video, from the cache or extracted (and cached) now."""
    from hamnet.video.backbone import extract_features, load_backbone

    spec_dict = spec.to_dict()
    base = f"{prefix}/features/{spec_hash(spec_dict)}"
    if not rt.blobs.exists(f"{base}/spec.json"):
        rt.blobs.put_bytes(f"{base}/spec.json", json.dumps(spec_dict, indent=1).encode())
    scratch.mkdir(parents=True, exist_ok=True)
    backbone = None
    out: dict[str, np.ndarray] = {}
    cache = {"hits": 0, "extracted": 0}
    for i, v in enumerate(videos):
        stem = Path(v["file"]).stem
        key = f"{base}/{stem}.npy"
        try:
            out[stem] = np.load(io.BytesIO(rt.blobs.get_bytes(key)))
            cache["hits"] += 1
        except FileNotFoundError:
            if backbone is None:
                backbone = load_backbone(spec)
            local = scratch / Path(v["file"]).name
            try:
                rt.blobs.get_file(f"{prefix}/{v['file']}", local)
            except FileNotFoundError:
                raise TrainingError("dataset_unavailable", f"video {v['name']} of the "
                                    "dataset is gone") from None
            try:
                feats, _, _ = extract_features(backbone, str(local))
            except Exception as e:
                raise TrainingError("feature_extraction_failed",
                                    f"{v['name']}: {type(e).__name__}: {str(e)[:200]}") from None
            finally:
                local.unlink(missing_ok=True)
            arr = np.asarray(feats, dtype=np.float32)  # [T, D]
            buf = io.BytesIO()
            np.save(buf, arr)
            rt.blobs.put_bytes(key, buf.getvalue())
            out[stem] = arr
            cache["extracted"] += 1
        _report(rt, rec, token, stage="features", progress=_pct("features", (i + 1) / len(videos)),
                stage_progress={"done": i + 1, "total": len(videos), "cached": cache["hits"]})
    return out, cache
