"""Training use cases: start (on a ``ready`` dataset), read, list, cancel.

A training is a record in Redis plus a message on the ``train`` queue, published by name
(:func:`hamnet_jobs.trainings.send_training`): the gateway never imports the trainer (nor
torch). A publish failure fails the training at once (``enqueue_failed``) instead of leaving
it queued forever.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from hamnet_jobs.blobs import BlobStore
from hamnet_jobs.datasets import DatasetStore
from hamnet_jobs.registry import InvalidModelName, check_name
from hamnet_jobs.trainings import TrainingRecord, TrainingStore, send_training, training_prefix

from hamnet_service import state
from hamnet_service.auth import ANONYMOUS
from hamnet_service.errors import ApiError
from hamnet_service.schemas import TrainingRequest
from hamnet_service.settings import get_settings

log = logging.getLogger("hamnet.service")
# Default length of a training: a fixed budget of epochs x dataset videos, not a fixed number
# of epochs. Both settings chosen on validation seeds agree on it: the default model (240
# videos, 20 epochs, seeds 9001-9003) and the 80-video custom-model benchmark (60 epochs, seed
# 9001) are each 4800. Small datasets get more epochs, large ones fewer.
DEFAULT_VIDEO_PASSES = 4800
MIN_DEFAULT_EPOCHS, MAX_DEFAULT_EPOCHS = 10, 100
DEFAULT_VALIDATION_FRACTION = 0.2


@lru_cache(maxsize=1)
def training_store() -> TrainingStore:
    return TrainingStore(state.store().r, ttl=max(get_settings().job_ttl_s, 30 * 24 * 3600))


def default_epochs(videos: int) -> int:
    """Epochs for a training that did not ask for a number: DEFAULT_VIDEO_PASSES / the dataset's
    videos, within [MIN_DEFAULT_EPOCHS, MAX_DEFAULT_EPOCHS]."""
    epochs = round(DEFAULT_VIDEO_PASSES / max(videos, 1))
    return int(min(max(epochs, MIN_DEFAULT_EPOCHS), MAX_DEFAULT_EPOCHS))


def start_training(body: TrainingRequest, owner: str, datasets: DatasetStore,
                   store: TrainingStore, publisher: Any) -> TrainingRecord:
    try:
        check_name(body.name)  # the registry's rule (e.g. `default` is reserved)
    except InvalidModelName as e:
        raise ApiError(422, "invalid_model_name", str(e)) from None
    ds = datasets.get(body.dataset)
    if ds is None or ds.owner != owner:
        raise ApiError(404, "dataset_not_found", f"no dataset {body.dataset}")
    if ds.status != "ready":
        raise ApiError(409, f"dataset_{ds.status}", f"dataset {ds.id} is {ds.status}; a "
                       "training needs a `ready` dataset")
    frac = (body.validation_fraction if body.validation_fraction is not None
            else DEFAULT_VALIDATION_FRACTION)
    train_videos = ds.videos - round(frac * ds.videos)
    if train_videos < 2:
        raise ApiError(422, "invalid_parameter", f"validation_fraction {frac} leaves fewer "
                       f"than 2 of the dataset's {ds.videos} videos for training")
    rec = TrainingRecord(owner=owner, name=body.name, dataset=ds.id, backbone=body.backbone,
                         epochs=body.epochs or default_epochs(ds.videos),
                         validation_fraction=frac,
                         seed=body.seed or 0)
    store.create(rec)
    try:
        send_training(publisher, rec.id)
    except Exception:
        log.exception("training %s could not be queued", rec.id)
        store.fail(rec.id, "enqueue_failed", "the training could not be queued")
        raise ApiError(503, "broker_unavailable", "the training queue is unavailable") from None
    return rec


def list_trainings(owner: str, store: TrainingStore, limit: int,
                   offset: int) -> tuple[list[TrainingRecord], int]:
    if owner == ANONYMOUS:
        raise ApiError(403, "listing_requires_api_key", "listing trainings needs API keys "
                       "(HAMNET_API_KEYS); without them a training is reachable by its id only")
    return store.list(owner, limit, offset)


def cancel_training(rec: TrainingRecord, store: TrainingStore, blobs: BlobStore) -> None:
    """Active: ``cancelled`` (the trainer stops at its next batch and deletes its checkpoint);
    finished: forgotten."""
    _, prev = store.cancel(rec.id)
    if prev in ("succeeded", "failed", "cancelled"):
        blobs.delete_prefix(training_prefix(rec.id))


def view(rec: TrainingRecord) -> dict[str, Any]:
    return {**rec.public(), "links": {"self": f"/v1/trainings/{rec.id}",
                                      "dataset": f"/v1/datasets/{rec.dataset}"}}
