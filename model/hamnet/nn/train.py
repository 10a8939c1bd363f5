"""Training loop for HAM-Net: one readable function, nanoGPT style.

What it does, in order: seed everything, load the W-TAL dataset (train split with the configured
sampling, test split with sampling 'all'), build :class:`HAMNet` sized from the data, train with
Adam (L2 weight decay, as officially), evaluate every ``eval_every`` epochs exactly as the official
tester does (batch 1, all snippets, official post-processing -> ActivityNet detection mAP and
classification mAP), keep the best epoch by average mAP and write a self-describing run folder::

    RUN/best.ckpt  RUN/last.ckpt        hamnet-checkpoint/1 (load with load_checkpoint)
    RUN/metrics.json                    best epoch: tiou, mAP, average_mAP, cls_mAP + history
    RUN/predictions.json                ActivityNet-format results of the best epoch
    RUN/config.yaml  RUN/history.csv  RUN/curves.png

Why no framework (the official code uses PyTorch Lightning 1.1): the whole loop fits on a
screen, runs on CPU or CUDA, and every number it reports can be traced to one line here.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hamnet.config import ExperimentConfig, dump_yaml
from hamnet.data.wtal import Batch, WTALDataset, WTALSplit
from hamnet.errors import ConfigError
from hamnet.nn.checkpoint import save_checkpoint
from hamnet.nn.losses import hamnet_loss
from hamnet.nn.model import HAMNet

LOSS_KEYS = ("total", "loss_1", "loss_2", "loss_norm", "loss_guide")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without it is a config error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available on this machine")
    if name != "cpu" and not name.startswith("cuda"):
        raise ConfigError(f"train.device must be auto, cpu or cuda[:N], got {name!r}")
    return torch.device(name)


def make_optimizer(model: HAMNet, cfg: ExperimentConfig) -> torch.optim.Optimizer:
    # Adam with L2 in the gradient (not AdamW): the official configure_optimizers.
    return torch.optim.Adam(
        model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay
    )


def train_step(
    model: HAMNet,
    opt: torch.optim.Optimizer,
    batch: Batch,
    cfg: ExperimentConfig,
    device: torch.device,
) -> dict[str, float]:
    """One optimisation step on one batch; returns the scalar loss terms."""
    model.train()
    x = torch.from_numpy(batch.features).to(device)  # [B, T, D]
    y = torch.from_numpy(batch.labels).to(device)  # [B, C]
    losses = hamnet_loss(model(x), y, cfg.loss)
    opt.zero_grad(set_to_none=True)
    losses["total"].backward()
    opt.step()
    return {k: float(losses[k].detach()) for k in LOSS_KEYS}


@dataclass
class EvalResult:
    tiou: list[float]
    mAP: list[float]  # per tIoU threshold
    average_mAP: float
    cls_mAP: float
    predictions: dict[str, Any]  # ActivityNet format: {"results": {video: [...]}, ...}


@torch.no_grad()
def evaluate(
    model: HAMNet,
    split: WTALSplit,
    gt: dict[str, Any],
    cfg: ExperimentConfig,
    classes: list[str],
    device: torch.device,
    progress: bool = False,
) -> EvalResult:
    """The official test path: batch 1, all snippets, post-processing, ANet detection mAP.

    Videos whose label vector is all zero are skipped (official ``eval_one_batch``); videos with
    no predicted class get no ``results`` entry.
    """
    from hamnet.evaluation import classification_map, detection_map
    from hamnet.postprocess import localize_trace

    model.eval()
    results: dict[str, list[dict[str, Any]]] = {}
    scores, labels = [], []
    items = range(len(split))
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="eval", unit="video", leave=False)
    for i in items:
        feat, label, name, num_seg = split[i]
        if label.sum() == 0:
            continue
        x = torch.from_numpy(feat).to(device)[None]  # [1, T, D]
        elem, _, _, atn = model(x)
        trace = localize_trace(
            elem[0].float().cpu().numpy(),  # [T, C+1]
            atn[0].float().cpu().numpy(),  # [T, 1]
            cfg.postprocess,
            vid_num_seg=num_seg,
        )
        scores.append(trace.video_scores)
        labels.append(label)
        if trace.pred_classes.size:
            results[name] = [
                {"label": classes[c], "score": float(s), "segment": [float(a), float(b)]}
                for c, s, a, b in trace.proposals
            ]
    predictions = {"version": "hamnet", "results": results, "external_data": {}}
    tiou = [float(t) for t in cfg.eval.tiou_thresholds]
    # A subsampled test split may lack some classes: average over the classes it has (on the
    # full THUMOS/ANet test sets every class has GT, so this is the official number).
    det = detection_map(
        gt,
        predictions,
        cfg.eval.tiou_thresholds,
        subset=cfg.eval.subset,
        skip_classes_without_gt=True,
    )
    per_tiou, avg = _unpack_detection(det)
    cls = (
        float(
            classification_map(
                np.stack(scores), np.stack(labels), ignore_classes_without_positives=True
            )
        )
        if scores
        else math.nan
    )
    return EvalResult(tiou, per_tiou, avg, cls, predictions)


def _unpack_detection(det: Any) -> tuple[list[float], float]:
    """Accept the evaluation module's result object or dict."""
    if isinstance(det, dict):
        per = det.get("mAP", det.get("mAP_per_tiou"))
        avg = det.get("average_mAP")
    else:
        per = getattr(det, "mAP", getattr(det, "mAP_per_tiou", None))
        avg = getattr(det, "average_mAP", None)
    per = [float(v) for v in np.asarray(per, dtype=np.float64).ravel()]
    return per, float(avg if avg is not None else np.mean(per))


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    tmp.replace(path)


def _write_history(path: Path, history: list[dict[str, Any]]) -> None:
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys]
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(history)


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Loss terms per epoch (left) and test mAP at the evaluated epochs (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ep = [r["epoch"] for r in history]
    for k in LOSS_KEYS:
        ax1.plot(ep, [r[k] for r in history], label=k)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("training loss")
    ax1.legend(fontsize=8)
    ev = [r for r in history if r.get("average_mAP") is not None]
    ax2.plot([r["epoch"] for r in ev], [r["average_mAP"] for r in ev], "o-", label="avg mAP")
    ax2.plot(
        [r["epoch"] for r in ev], [r["cls_mAP"] / 100.0 for r in ev], "s--", label="cls mAP / 100"
    )
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("test")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def train(
    cfg: ExperimentConfig,
    data_dir: str | Path,
    out_dir: str | Path,
    classes: list[str] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train on ``data_dir`` (W-TAL layout, dataset ``cfg.data.dataset``) into ``out_dir``.

    ``model.feature_size`` and ``model.num_class`` are taken from the data. Returns the content
    of ``metrics.json`` plus the output paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    if cfg.train.batch_size < 1 or cfg.train.max_epochs < 1 or cfg.train.eval_every < 1:
        raise ConfigError("train.batch_size, train.max_epochs and train.eval_every must be >= 1")

    ds = WTALDataset(
        data_dir, cfg.data.dataset, feature_type=cfg.data.feature_type, classes=classes
    )
    cfg = replace(
        cfg, model=replace(cfg.model, feature_size=ds.feature_size, num_class=ds.num_class)
    )
    train_split = ds.split(
        cfg.data.train_subset, cfg.data.sampling, cfg.data.num_segments, seed=cfg.train.seed
    )
    test_split = ds.split(cfg.data.test_subset, "all", seed=cfg.train.seed)
    gt = ds.ground_truth(train_subset=cfg.data.train_subset)
    dump_yaml(cfg, out / "config.yaml")

    model = HAMNet(cfg.model).to(device)
    opt = make_optimizer(model, cfg)
    meta = {"dataset": cfg.data.dataset, "data_dir": str(data_dir)}

    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    epochs = range(1, cfg.train.max_epochs + 1)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(epochs, desc="train", unit="epoch")
        epochs = bar
    for epoch in epochs:
        t0 = time.perf_counter()
        sums = dict.fromkeys(LOSS_KEYS, 0.0)
        n_videos = n_snippets = 0
        for batch in train_split.batches(cfg.train.batch_size, shuffle=True):
            step = train_step(model, opt, batch, cfg, device)
            b = len(batch.names)
            for k in LOSS_KEYS:
                sums[k] += step[k] * b
            n_videos += b
            n_snippets += int(batch.lengths.sum())
        train_s = time.perf_counter() - t0
        row: dict[str, Any] = {"epoch": epoch, **{k: v / n_videos for k, v in sums.items()}}
        row.update(
            train_seconds=round(train_s, 4),
            snippets_per_s=round(n_snippets / max(train_s, 1e-9), 1),
            average_mAP=None,
            cls_mAP=None,
        )

        if epoch % cfg.train.eval_every == 0 or epoch == cfg.train.max_epochs:
            res = evaluate(model, test_split, gt, cfg, ds.classlist, device, bar is not None)
            row.update(
                average_mAP=res.average_mAP,
                cls_mAP=res.cls_mAP,
                **{f"mAP@{t:.2f}": m for t, m in zip(res.tiou, res.mAP, strict=True)},
            )
            if best is None or res.average_mAP > best["average_mAP"]:
                best = {
                    "epoch": epoch,
                    "tiou": res.tiou,
                    "mAP": res.mAP,
                    "average_mAP": res.average_mAP,
                    "cls_mAP": res.cls_mAP,
                }
                save_checkpoint(
                    out / "best.ckpt", model, cfg, ds.classlist, epoch=epoch, metrics=best, **meta
                )
                _write_json(out / "predictions.json", res.predictions)
        history.append(row)
        if bar is not None:
            bar.set_postfix(
                loss=f"{row['total']:.3f}",
                mAP=f"{row['average_mAP']:.3f}" if row["average_mAP"] is not None else "-",
                best=f"{best['average_mAP']:.3f}" if best else "-",
            )

    assert best is not None  # the last epoch is always evaluated
    save_checkpoint(out / "last.ckpt", model, cfg, ds.classlist, epoch=cfg.train.max_epochs, **meta)
    metrics = {**best, "history": history}
    _write_json(out / "metrics.json", metrics)
    _write_history(out / "history.csv", history)
    plot_curves(history, out / "curves.png")
    paths = {
        k: str(out / f)
        for k, f in (
            ("best", "best.ckpt"),
            ("last", "last.ckpt"),
            ("predictions", "predictions.json"),
            ("metrics", "metrics.json"),
            ("config", "config.yaml"),
            ("history", "history.csv"),
            ("plot", "curves.png"),
        )
    }
    return {**metrics, "paths": paths}
