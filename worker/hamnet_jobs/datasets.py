"""Labelled datasets: the record (``hamnet:dataset:<id>``) and its store.

A dataset is an archive of videos plus ``labels.csv`` (video-level labels) that the gateway
validated and unpacked into the blob store under ``datasets/<id>/`` (:mod:`hamnet_jobs.blobs`)::

    datasets/<id>/videos/<n>.<ext>        the videos, renamed v0000.mp4 ... (never a client name)
    datasets/<id>/labels.json             {"classes": [...], "videos": [{"file", "name",
                                           "labels", "line"}]} (normalised labels.csv)
    datasets/<id>/features/<spec>/<n>.npy feature cache of one backbone spec (the trainer)

Status: ``validating`` (the gateway is unpacking and probing it) -> ``ready`` | ``failed``
(with ``error`` and a list of ``errors``, each naming the CSV line or the archive member).
A gateway that dies mid-validation stops renewing ``heartbeat_at``; :meth:`DatasetStore.
sweep_stale` (the gateway's sweeper) then fails the dataset ``validation_interrupted`` and
deletes what it had written, so no dataset stays ``validating`` forever.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, ClassVar, Literal

import redis
from pydantic import BaseModel, Field

from hamnet_jobs.record import new_job_id, utcnow
from hamnet_jobs.records import PublicRecord, RecordStore, noop

DatasetStatus = Literal["validating", "ready", "failed"]
PREFIX = "hamnet:"
DATASET_PRIVATE = frozenset({"owner", "prefix", "heartbeat_at", "sha256"})
MAX_REPORTED_ERRORS = 200


def dataset_key(dataset_id: str) -> str:
    return f"{PREFIX}dataset:{dataset_id}"


def owner_datasets_key(owner: str) -> str:
    return f"{PREFIX}datasets:{owner}"


VALIDATING_KEY = f"{PREFIX}datasets-validating"


def storage_prefix(dataset_id: str) -> str:
    return f"datasets/{dataset_id}"


class ItemError(BaseModel):
    """One problem of an archive: where (CSV line or archive member) and what."""

    code: str
    message: str
    line: int | None = None
    member: str | None = None


class DatasetRecord(PublicRecord):
    """One dataset as stored in Redis (``hamnet:dataset:<id>``)."""

    PRIVATE: ClassVar[frozenset[str]] = DATASET_PRIVATE

    id: str = Field(default_factory=new_job_id)
    owner: str
    name: str
    status: DatasetStatus = "validating"
    stage: str | None = "unpack"
    progress: int = Field(default=0, ge=0, le=100)
    error: ItemError | None = None
    errors: list[ItemError] = Field(default_factory=list)
    videos: int = 0
    classes: dict[str, int] = Field(default_factory=dict)
    size_bytes: int | None = None
    filename: str | None = None
    sha256: str | None = None
    prefix: str = ""
    created_at: str = Field(default_factory=utcnow)
    updated_at: str | None = None
    finished_at: str | None = None
    heartbeat_at: str | None = None


def _age_s(stamp: str | None) -> float:
    if not stamp:
        return float("inf")
    return time.time() - datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class DatasetStore(RecordStore[DatasetRecord]):
    """Reads and writes of dataset records (status changes are WATCH/MULTI transactions;
    ``get``, ``list`` and the transaction loop come from
    :class:`~hamnet_jobs.records.RecordStore`). The active set holds datasets still
    ``validating``."""

    record_type = DatasetRecord
    record_key = staticmethod(dataset_key)
    owner_key = staticmethod(owner_datasets_key)
    active_key = VALIDATING_KEY

    def __init__(self, client: redis.Redis, ttl: int = 30 * 24 * 3600) -> None:
        super().__init__(client, ttl)

    def create(self, rec: DatasetRecord) -> DatasetRecord:
        rec.prefix = rec.prefix or storage_prefix(rec.id)
        rec.updated_at = rec.heartbeat_at = utcnow()
        return self._insert(rec)

    def update(self, dataset_id: str, **changes: Any) -> DatasetRecord | None:
        """Apply ``changes`` while the dataset is ``validating`` (a finished or deleted one is
        left alone: a late write from an interrupted validation must not resurrect it)."""
        def mutate(rec: DatasetRecord) -> Any:
            if rec.status != "validating":
                return None
            for k, v in changes.items():
                setattr(rec, k, v)
            rec.heartbeat_at = utcnow()  # updated_at is stamped by the transaction
            if rec.status == "validating":
                return noop
            rec.finished_at = utcnow()
            rec.stage = None
            return lambda pipe: pipe.zrem(VALIDATING_KEY, dataset_id)

        return self._txn(dataset_id, mutate)

    def mark_ready(self, dataset_id: str, videos: int, classes: dict[str, int]) -> DatasetRecord | None:
        return self.update(dataset_id, status="ready", videos=videos, classes=classes,
                           progress=100)

    def mark_failed(self, dataset_id: str, error: ItemError,
                    errors: list[ItemError] | None = None) -> DatasetRecord | None:
        return self.update(dataset_id, status="failed", error=error,
                           errors=(errors or [error])[:MAX_REPORTED_ERRORS])

    def delete(self, rec: DatasetRecord) -> None:
        pipe = self.r.pipeline()
        pipe.delete(dataset_key(rec.id))
        pipe.zrem(owner_datasets_key(rec.owner), rec.id)
        pipe.zrem(VALIDATING_KEY, rec.id)
        pipe.execute()

    def stale(self, older_than_s: float) -> list[DatasetRecord]:
        """Datasets still ``validating`` whose validator has not reported for
        ``older_than_s`` seconds (its gateway died)."""
        out = []
        for i in self.r.zrange(VALIDATING_KEY, 0, -1):
            rec = self.get(i)
            if rec is None:
                self.r.zrem(VALIDATING_KEY, i)
            elif rec.status == "validating" and _age_s(rec.heartbeat_at) > older_than_s:
                out.append(rec)
            elif rec.status != "validating":
                self.r.zrem(VALIDATING_KEY, i)
        return out
