"""FastAPI dependencies: what a route needs, declared in its signature.

A route that takes :data:`OwnedJob` cannot forget the ownership check, because the dependency
does it (a job of another owner answers 404, exactly like a missing one). Tests replace any of
these with ``app.dependency_overrides``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path
from hamnet_jobs.blobs import BlobStore as _BlobStore
from hamnet_jobs.datasets import DatasetRecord, DatasetStore
from hamnet_jobs.record import JobRecord
from hamnet_jobs.registry import ModelRegistry as _ModelRegistry
from hamnet_jobs.storage import Storage as _Storage
from hamnet_jobs.store import JobStore
from hamnet_jobs.telemetry import Telemetry as _Telemetry
from hamnet_jobs.trainings import TrainingRecord, TrainingStore
from starlette.concurrency import run_in_threadpool

from hamnet_service import state
from hamnet_service.auth import caller
from hamnet_service.errors import ApiError
from hamnet_service.services.datasets import blob_store, dataset_store
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

JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{16,64}$",
                            description="job id (from POST /v1/jobs)")]


async def owned_job(job_id: JobId, owner: Owner, store: Store) -> JobRecord:
    """The job, if the caller owns it; 404 ``job_not_found`` otherwise."""
    job = await run_in_threadpool(store.get, job_id)
    if job is None or job.owner != owner:
        raise ApiError(404, "job_not_found", f"no job {job_id}")
    return job


OwnedJob = Annotated[JobRecord, Depends(owned_job)]


# ---- datasets and trainings (docs/TRAINING.md) ---------------------------------------------
Datasets = Annotated[DatasetStore, Depends(dataset_store)]
Trainings = Annotated[TrainingStore, Depends(training_store)]
Blobs = Annotated[_BlobStore, Depends(blob_store)]
DatasetId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{16,64}$",
                                description="dataset id (from POST /v1/datasets)")]
TrainingId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{16,64}$",
                                 description="training id (from POST /v1/trainings)")]


async def owned_dataset(dataset_id: DatasetId, owner: Owner, store: Datasets) -> DatasetRecord:
    """The dataset, if the caller owns it; 404 ``dataset_not_found`` otherwise."""
    rec = await run_in_threadpool(store.get, dataset_id)
    if rec is None or rec.owner != owner:
        raise ApiError(404, "dataset_not_found", f"no dataset {dataset_id}")
    return rec


async def owned_training(training_id: TrainingId, owner: Owner,
                         store: Trainings) -> TrainingRecord:
    """The training, if the caller owns it; 404 ``training_not_found`` otherwise."""
    rec = await run_in_threadpool(store.get, training_id)
    if rec is None or rec.owner != owner:
        raise ApiError(404, "training_not_found", f"no training {training_id}")
    return rec


OwnedDataset = Annotated[DatasetRecord, Depends(owned_dataset)]
OwnedTraining = Annotated[TrainingRecord, Depends(owned_training)]


# ---- batches (docs/SOURCES.md) ----------------------------------------------------------------
from hamnet_jobs.batches import BatchRecord, BatchStore  # noqa: E402

from hamnet_service.services.batches import batch_store  # noqa: E402

Batches = Annotated[BatchStore, Depends(batch_store)]
BatchId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{16,64}$",
                              description="batch id (from POST /v1/batches)")]


async def owned_batch(batch_id: BatchId, owner: Owner, batches: Batches) -> BatchRecord:
    """The batch, if the caller owns it; 404 ``batch_not_found`` otherwise."""
    rec = await run_in_threadpool(batches.get, batch_id)
    if rec is None or rec.owner != owner:
        raise ApiError(404, "batch_not_found", f"no batch {batch_id}")
    return rec


OwnedBatch = Annotated[BatchRecord, Depends(owned_batch)]


# ---- live streams (docs/STREAMS.md) --------------------------------------------------------
from hamnet_jobs.streams import StreamRecord, StreamStore  # noqa: E402

from hamnet_service.services.streams import get_stream_store  # noqa: E402

Streams = Annotated[StreamStore, Depends(get_stream_store)]
StreamId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{16,64}$",
                               description="stream id (from POST /v1/streams)")]


async def owned_stream(stream_id: StreamId, owner: Owner, store: Streams) -> StreamRecord:
    """The stream, if the caller owns it; 404 ``stream_not_found`` otherwise."""
    rec = await run_in_threadpool(store.get, stream_id)
    if rec is None or rec.owner != owner:
        raise ApiError(404, "stream_not_found", f"no stream {stream_id}")
    return rec


OwnedStream = Annotated[StreamRecord, Depends(owned_stream)]
