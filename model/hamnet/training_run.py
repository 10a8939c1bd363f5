"""Train HAM-Net on in-memory features with video-level labels, one epoch at a time, resumable.

Why not :func:`hamnet.nn.train.train`: that loop reads a W-TAL folder and evaluates detection
mAP against temporal ground truth after the run, which a user's dataset (video-level labels
only) does not have. This loop reuses its pieces (:func:`~hamnet.nn.train.train_step`,
:func:`~hamnet.nn.train.make_optimizer`, the official sampling and collation of
:mod:`hamnet.data.wtal`) and adds what a service needs:

* ``on_epoch(state)`` after every epoch, with a resumable :class:`TrainState` (weights,
  optimizer, RNGs, history) that the caller writes to storage: a killed worker resumes from
  the last finished epoch, not from zero;
* ``should_stop()`` before every batch (cancellation);
* validation by **classification mAP** on held-out videos (video-level labels: the only labels
  there are). Localisation mAP needs temporal ground truth; see docs/TRAINING.md.

Imports torch (extra ``[train]``); the service's training worker is its only caller.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from hamnet.config import ExperimentConfig, from_dict, to_dict
from hamnet.data.wtal import collate, sample_indices
from hamnet.nn.losses import hamnet_loss
from hamnet.nn.model import HAMNet
from hamnet.nn.train import LOSS_KEYS, make_optimizer, seed_everything, train_step

STATE_FORMAT = "hamnet-train-state/1"


@dataclass
class Video:
    name: str
    features: np.ndarray  # [T, D] float32
    labels: np.ndarray  # [C] float32 multi-hot


@dataclass
class TrainState:
    """Everything needed to continue after ``epoch`` as if the run had not stopped."""

    epoch: int
    history: list[dict[str, Any]]
    model: dict[str, Any]
    optimizer: dict[str, Any]
    np_rng: dict[str, Any]
    torch_rng: Any
    config: dict[str, Any]
    classes: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save({"format": STATE_FORMAT, **self.__dict__}, buf)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> TrainState:
        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
        if obj.pop("format", None) != STATE_FORMAT:
            raise ValueError("not a hamnet training state")
        return cls(**obj)


class Stopped(Exception):
    """``should_stop`` said so (cancelled, or the lease was lost)."""


def split(names: Sequence[str], fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Seeded split into (train, validation); at least one validation video when
    ``fraction > 0`` and there are at least 3 videos."""
    order = list(names)
    np.random.default_rng(seed).shuffle(order)
    n_val = int(round(fraction * len(order)))
    if fraction > 0 and len(order) >= 3:
        n_val = max(1, n_val)
    n_val = min(n_val, len(order) - 2)
    return sorted(order[n_val:]), sorted(order[:n_val])


@torch.no_grad()
def validate(model: HAMNet, videos: Sequence[Video], rat: int) -> float | None:
    """Classification mAP (fraction) of the video-level scores on ``videos``."""
    from hamnet.evaluation import classification_map
    from hamnet.postprocess import video_scores

    if not videos:
        return None
    model.eval()
    scores, labels = [], []
    for v in videos:
        elem, _, _, atn = model(torch.from_numpy(v.features)[None])  # [1,T,C+1], [1,T,1]
        scores.append(video_scores(elem[0].numpy(), atn[0].numpy(), rat))
        labels.append(v.labels)
    value = float(classification_map(np.stack(scores), np.stack(labels),
                                     ignore_classes_without_positives=True))
    return None if math.isnan(value) else round(value / 100.0, 5)


def run(
    cfg: ExperimentConfig,
    classes: list[str],
    train: Sequence[Video],
    val: Sequence[Video],
    resume: TrainState | None = None,
    on_epoch: Callable[[TrainState, HAMNet], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    threads: int | None = None,
) -> HAMNet:
    """Train ``cfg.train.max_epochs`` epochs (from ``resume.epoch + 1`` when resuming), on
    ``threads`` intra-op threads when given (the training worker's share of the cores)."""
    if threads:
        torch.set_num_threads(threads)
    feat_dim = int(train[0].features.shape[1])
    cfg = replace(cfg, model=replace(cfg.model, feature_size=feat_dim, num_class=len(classes)))
    seed_everything(cfg.train.seed)
    device = torch.device("cpu")
    model = HAMNet(cfg.model).to(device)
    opt = make_optimizer(model, cfg)
    rng = np.random.default_rng(cfg.train.seed)
    history: list[dict[str, Any]] = []
    start = 1
    if resume is not None:
        model.load_state_dict(resume.model)
        opt.load_state_dict(resume.optimizer)
        rng.bit_generator.state = resume.np_rng
        torch.set_rng_state(resume.torch_rng)
        history, start = list(resume.history), resume.epoch + 1
    ns, bs = cfg.data.num_segments, cfg.train.batch_size
    for epoch in range(start, cfg.train.max_epochs + 1):
        t0 = time.perf_counter()
        sums = dict.fromkeys(LOSS_KEYS, 0.0)
        order = rng.permutation(len(train))
        for i in range(0, len(order), bs):
            if should_stop is not None and should_stop():
                raise Stopped()
            items = []
            for j in order[i:i + bs]:
                v = train[int(j)]
                idx = sample_indices(v.features.shape[0], cfg.data.sampling, ns, rng)
                items.append((v.features[idx], v.labels, v.name, v.features.shape[0]))
            batch = collate(items)  # features [B, ns, D], labels [B, C]
            step = train_step(model, opt, batch, cfg, device)
            for k in LOSS_KEYS:
                sums[k] += step[k] * len(items)
        row: dict[str, Any] = {"epoch": epoch,
                               **{("loss" if k == "total" else k): round(v / len(train), 5)
                                  for k, v in sums.items()}}
        row["val_map"] = validate(model, val, cfg.postprocess.rat)
        row["val_loss"] = _val_loss(model, val, cfg)
        row["seconds"] = round(time.perf_counter() - t0, 3)
        history.append(row)
        if on_epoch is not None:
            on_epoch(TrainState(epoch=epoch, history=list(history), model=model.state_dict(),
                                optimizer=opt.state_dict(), np_rng=rng.bit_generator.state,
                                torch_rng=torch.get_rng_state(), config=to_dict(cfg),
                                classes=list(classes)), model)
    return model


@torch.no_grad()
def _val_loss(model: HAMNet, videos: Sequence[Video], cfg: ExperimentConfig) -> float | None:
    """HAM-Net's loss on the validation videos (all snippets, one video at a time)."""
    if not videos:
        return None
    model.eval()
    total = 0.0
    for v in videos:
        out = model(torch.from_numpy(v.features)[None])  # eval mode: supp = drop = atn
        losses = hamnet_loss(out, torch.from_numpy(v.labels)[None], cfg.loss)
        total += float(losses["total"])
    return round(total / len(videos), 5)


def config_from_state(state: TrainState) -> ExperimentConfig:
    return from_dict(state.config)
