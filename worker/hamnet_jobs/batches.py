"""Batches: many remote sources submitted at once, one job per video (docs/SOURCES.md).

A batch is only a list of job ids with an owner; every job is an ordinary job (same store,
same leases, same state machine), so a batch adds no new way for work to be lost or run twice.
Its status is derived from the jobs' records on every read, never stored, so it cannot
disagree with them.

Keys (next to :mod:`hamnet_jobs.keys`): ``hamnet:batch:<id>`` the record (JSON, same TTL as
jobs), ``hamnet:batches:<owner>`` sorted set of the owner's batch ids by creation time.
"""

from __future__ import annotations

import json
from typing import Any

import redis
from pydantic import BaseModel, ConfigDict, Field

from hamnet_jobs import keys
from hamnet_jobs.keys import PREFIX
from hamnet_jobs.record import STATUSES, TERMINAL, JobRecord, new_job_id, utcnow


def batch_key(batch_id: str) -> str:
    return f"{PREFIX}batch:{batch_id}"


def owner_key(owner: str) -> str:
    return f"{PREFIX}batches:{owner}"


class BatchRecord(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(default_factory=new_job_id)
    owner: str
    created_at: str = Field(default_factory=utcnow)
    jobs: list[str] = Field(default_factory=list, description="job ids, in source order")
    sources: list[str] = Field(default_factory=list, description="redacted source URLs")
    s3_prefix: str | None = None
    output_uri: str | None = None
    tag: str | None = None


def count(jobs: list[JobRecord | None]) -> dict[str, int]:
    """Jobs by status; ``expired``: the record is gone (its TTL passed)."""
    out = {"total": len(jobs), **{s: 0 for s in STATUSES}, "expired": 0}
    for j in jobs:
        out[j.status if j is not None else "expired"] += 1
    return out


def finished(counts: dict[str, int]) -> bool:
    return sum(counts[s] for s in TERMINAL) + counts["expired"] == counts["total"]


class BatchStore:
    """Batch records in the job store's Redis."""

    def __init__(self, client: redis.Redis, ttl: int) -> None:
        self.r, self.ttl = client, int(ttl)

    def create(self, batch: BatchRecord) -> BatchRecord:
        sec, usec = self.r.time()
        score = sec + usec / 1e6  # newest first, also within one second
        with self.r.pipeline(transaction=True) as pipe:
            pipe.set(batch_key(batch.id), json.dumps(batch.model_dump(mode="json")),
                     ex=self.ttl)
            pipe.zadd(owner_key(batch.owner), {batch.id: score})
            pipe.expire(owner_key(batch.owner), self.ttl)
            pipe.execute()
        return batch

    def get(self, batch_id: str) -> BatchRecord | None:
        raw = self.r.get(batch_key(batch_id))
        return BatchRecord.model_validate_json(raw) if raw else None

    def list(self, owner: str, limit: int = 20, offset: int = 0,
             ) -> tuple[list[BatchRecord], int]:
        """The owner's batches, newest first (ids whose record expired are dropped)."""
        key = owner_key(owner)
        ids = self.r.zrevrange(key, offset, offset + limit - 1)
        total = int(self.r.zcard(key))
        out = []
        for bid in ids:
            b = self.get(bid)
            if b is None:
                self.r.zrem(key, bid)
                continue
            out.append(b)
        return out, total

    def jobs(self, batch: BatchRecord) -> list[JobRecord | None]:
        """The batch's job records, in source order (None: expired)."""
        if not batch.jobs:
            return []
        raws: list[Any] = self.r.mget([keys.job(j) for j in batch.jobs])
        return [JobRecord.model_validate_json(r) if r else None for r in raws]
