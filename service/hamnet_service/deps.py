"""FastAPI dependencies: what a route needs, declared in its signature.

A route that takes :data:`OwnedJob` (or ``OwnedDataset``, ``OwnedTraining``, ``OwnedBatch``,
``OwnedStream``) cannot forget the ownership check, because the dependency does it: a record of
another owner answers 404, exactly like a missing one. Tests replace any of these with
``app.dependency_overrides``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Path
from hamnet_jobs.batches import BatchRecord, BatchStore
from hamnet_jobs.blobs import BlobStore as _BlobStore
from hamnet_jobs.datasets import DatasetRecord, DatasetStore
from hamnet_jobs.record import JobRecord
from hamnet_jobs.registry import ModelRegistry as _ModelRegistry
from hamnet_jobs.storage import Storage as _Storage
from hamnet_jobs.store import JobStore
from hamnet_jobs.streams import StreamRecord, StreamStore
from hamnet_jobs.telemetry import Telemetry as _Telemetry
from hamnet_jobs.trainings import TrainingRecord, TrainingStore
from starlette.concurrency import run_in_threadpool

from hamnet_service import state
from hamnet_service.auth import caller
from hamnet_service.errors import ApiError
from hamnet_service.services.batches import batch_store
from hamnet_service.services.datasets import blob_store, dataset_store
from hamnet_service.services.streams import get_stream_store
from hamnet_service.services.trainings import training_store
from hamnet_service.settings import ServiceSettings, get_settings

Settings = Annotated[ServiceSettings, Depends(get_settings)]
Owner = Annotated[str, Depends(caller)]
Store = Annotated[JobStore, Depends(state.store)]
Telemetry = Annotated[_Telemetry, Depends(state.telemetry)]
Storage = Annotated[_Storage, Depends(state.storage)]
Publisher = Annotated[Any, Depends(state.publisher)]
Models = Annotated[state.ModelState, Depends(state.get_model_state)]
Registry = Annotated[_ModelRegistry, Depends(state.registry)]
Datasets = Annotated[DatasetStore, Depends(dataset_store)]    # docs/TRAINING.md
Trainings = Annotated[TrainingStore, Depends(training_store)]
Blobs = Annotated[_BlobStore, Depends(blob_store)]
Batches = Annotated[BatchStore, Depends(batch_store)]         # docs/SOURCES.md
Streams = Annotated[StreamStore, Depends(get_stream_store)]   # docs/STREAMS.md

R = TypeVar("R")


def _record_id(what: str, created_by: str) -> Any:
    return Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{16,64}$",
                               description=f"{what} id (from POST {created_by})")]


JobId = _record_id("job", "/v1/jobs")
DatasetId = _record_id("dataset", "/v1/datasets")
TrainingId = _record_id("training", "/v1/trainings")
BatchId = _record_id("batch", "/v1/batches")
StreamId = _record_id("stream", "/v1/streams")


async def _owned(get: Callable[[str], R | None], record_id: str, owner: str, kind: str) -> R:
    """The record, if the caller owns it; 404 ``<kind>_not_found`` otherwise (a record of
    another owner is indistinguishable from a missing one)."""
    rec = await run_in_threadpool(get, record_id)
    if rec is None or getattr(rec, "owner", None) != owner:
        raise ApiError(404, f"{kind}_not_found", f"no {kind} {record_id}")
    return rec


async def owned_job(job_id: JobId, owner: Owner, store: Store) -> JobRecord:
    return await _owned(store.get, job_id, owner, "job")


async def owned_dataset(dataset_id: DatasetId, owner: Owner, store: Datasets) -> DatasetRecord:
    return await _owned(store.get, dataset_id, owner, "dataset")


async def owned_training(training_id: TrainingId, owner: Owner,
                         store: Trainings) -> TrainingRecord:
    return await _owned(store.get, training_id, owner, "training")


async def owned_batch(batch_id: BatchId, owner: Owner, batches: Batches) -> BatchRecord:
    return await _owned(batches.get, batch_id, owner, "batch")


async def owned_stream(stream_id: StreamId, owner: Owner, store: Streams) -> StreamRecord:
    return await _owned(store.get, stream_id, owner, "stream")


OwnedJob = Annotated[JobRecord, Depends(owned_job)]
OwnedDataset = Annotated[DatasetRecord, Depends(owned_dataset)]
OwnedTraining = Annotated[TrainingRecord, Depends(owned_training)]
OwnedBatch = Annotated[BatchRecord, Depends(owned_batch)]
OwnedStream = Annotated[StreamRecord, Depends(owned_stream)]
