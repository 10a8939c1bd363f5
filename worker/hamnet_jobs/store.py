"""The job store: job records, results and leases in Redis, shared by the gateway and the
workers (key schema: :mod:`hamnet_jobs.keys`; record and state machine:
:mod:`hamnet_jobs.record`).

Every status change is a WATCH/MULTI transaction on the job key, so that a cancel racing with a
worker finishing, or a redelivered message racing with the first attempt, resolves to exactly
one outcome.

Leases (why they exist): a worker killed whole (container restart, node loss) leaves its
Celery message unacknowledged, and Redis redelivers it only after the broker's visibility
timeout (40 minutes by default). Instead, a running job holds a lease that its worker renews
on every heartbeat; when the lease expires, :meth:`JobStore.requeue_expired` (run by every
live worker) puts the job back in ``queued`` and the caller publishes a new message. The
attempt that lost its lease can no longer write progress, a result or a failure (its token no
longer matches), so the job never runs twice at once and produces exactly one result; the
broker's late redelivery of the old message finds the job finished (or running elsewhere)
and is skipped or deferred.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any

import redis

from hamnet_jobs import keys
from hamnet_jobs.record import (
    STAGES,
    TERMINAL,
    JobError,
    JobRecord,
    new_job_id,
    public_view,
    utcnow,
)
from hamnet_jobs.records import Extra, RecordStore, noop

DEFAULT_TTL = 7 * 24 * 3600
DEFAULT_LEASE_S = 30.0

__all__ = ["DEFAULT_LEASE_S", "DEFAULT_TTL", "IdempotencyConflict", "JobStore", "connect",
           "new_job_id", "public_view", "utcnow"]


class IdempotencyConflict(Exception):
    """The Idempotency-Key was already used for different content."""


def connect(url: str) -> redis.Redis:
    """A client that retries through a Redis restart instead of failing a job mid-way."""
    from redis.backoff import ExponentialBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=5,
        socket_timeout=30,
        health_check_interval=15,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.1), 8),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )



def _encode(job: JobRecord) -> str:
    """The stored JSON: ``json.dumps``'s layout (``"status": "running"``), which operators'
    scripts and the fault tests' Redis proxy match on."""
    return json.dumps(job.model_dump(mode="json"))


class JobStore(RecordStore[JobRecord]):
    """All reads and writes of job state. The transaction loop (``_txn``: mutate the record,
    return the commands that go with it, or None to leave Redis unchanged), ``get`` and
    ``list`` come from :class:`~hamnet_jobs.records.RecordStore`."""

    record_type = JobRecord
    record_key = staticmethod(keys.job)
    owner_key = staticmethod(keys.owner)
    active_key = keys.QUEUED
    leases_key = keys.LEASES
    prune_index = True

    def __init__(self, client: redis.Redis, ttl: int = DEFAULT_TTL) -> None:
        super().__init__(client, ttl)

    job_key = staticmethod(keys.job)
    result_key = staticmethod(keys.result)

    def encode(self, rec: JobRecord) -> str:
        return _encode(rec)

    # ---- creation and reads ----------------------------------------------------------------
    def create(
        self, job: JobRecord | dict[str, Any], idempotency_key: str | None = None,
        scope: str | None = None, fingerprint: str | None = None,
    ) -> tuple[JobRecord, bool]:
        """Store a new queued job, and with an ``Idempotency-Key`` its claim, in one
        transaction (two concurrent requests with the same key cannot both create a job).
        With a key already used for the same request returns ``(existing job, False)``; for
        a different one raises :class:`IdempotencyConflict`. What "the same request" means is
        ``fingerprint`` (the content and every parameter, model included), or the content
        hash ``record.sha256`` without one. Keys are per owner, or per ``scope`` when given."""
        record = job if isinstance(job, JobRecord) else JobRecord.model_validate(job)
        record.updated_at = record.created_at
        ikey = keys.idempotency(scope or record.owner, idempotency_key) \
            if idempotency_key else None
        request_id = fingerprint or record.sha256
        claim = json.dumps({"id": record.id, "sha256": request_id})
        with self.r.pipeline() as pipe:
            while True:
                try:
                    if ikey:
                        pipe.watch(ikey)
                        prev = pipe.get(ikey)
                        if prev is not None:
                            prev = json.loads(prev)
                            existing = self.get(prev["id"])
                            if existing is not None:
                                pipe.reset()
                                if prev.get("sha256") != request_id:
                                    raise IdempotencyConflict(idempotency_key)
                                return existing, False
                            # the old job expired: the key is free again
                    now = time.time()
                    pipe.multi()
                    if ikey:
                        pipe.set(ikey, claim, ex=self.ttl)
                    pipe.set(keys.job(record.id), _encode(record), ex=self.ttl)
                    pipe.zadd(keys.owner(record.owner), {record.id: now})
                    pipe.expire(keys.owner(record.owner), self.ttl)
                    pipe.zadd(keys.QUEUED, {record.id: now})
                    pipe.hincrby(keys.STATS_JOBS, "created", 1)
                    pipe.execute()
                    return record, True
                except redis.WatchError:
                    continue

    def mark_enqueued(self, job_id: str) -> None:
        """The task message is published: the job is no longer an orphan candidate."""
        def mutate(job: JobRecord) -> Extra | None:
            if job.enqueued_at is not None:
                return None
            job.enqueued_at = utcnow()
            return noop

        self._txn(job_id, mutate)

    def discard(self, job_id: str) -> None:
        """Remove a job that was never handed to a worker (its request failed after the record
        was written): it must neither count against the queue nor show up anywhere."""
        job = self.get(job_id)
        pipe = self.r.pipeline()
        pipe.delete(keys.job(job_id), keys.result(job_id))
        pipe.zrem(keys.QUEUED, job_id)
        pipe.zrem(keys.RUNNING, job_id)
        pipe.zrem(keys.LEASES, job_id)
        if job is not None:
            pipe.zrem(keys.owner(job.owner), job_id)
        pipe.execute()

    def get_result(self, job_id: str) -> dict[str, Any] | None:
        raw = self.r.get(keys.result(job_id))
        return json.loads(raw) if raw else None

    def list(self, owner: str, limit: int = 20, offset: int = 0) -> tuple[list[JobRecord], int]:
        """The owner's jobs, newest first, and the total count (expired ids are pruned)."""
        return super().list(owner, limit, offset)

    # ---- worker side -----------------------------------------------------------------------
    def begin(
        self, job_id: str, max_attempts: int, worker: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> tuple[JobRecord | None, str]:
        """Start an attempt. Returns ``(job, action)`` with action ``run`` (the job now holds
        a fresh lease; its token is ``job.lease``); ``skip`` when the job is gone or already
        terminal (a duplicate delivery: exactly one outcome); ``poison`` when this delivery
        exceeds ``max_attempts`` (the job is failed, not retried forever); ``busy`` when
        another live worker is running it right now (its heartbeat names the job).

        ``busy`` exists because a broker reconnect (Redis restarted) makes kombu put the
        messages of running jobs back on the queue: without it a second worker would run the
        job again alongside the first, count an attempt and POST its callback twice."""
        action = "skip"

        def mutate(job: JobRecord) -> Extra | None:
            nonlocal action
            if job.terminal:
                action = "skip"
                return None
            owner = job.worker
            if job.status == "running" and owner and owner != worker \
                    and self.worker_busy_with(owner, job_id):
                action = "busy"
                return None
            if worker:
                job.worker = worker
            job.attempts += 1
            if job.attempts > max_attempts:
                action = "poison"
                job.error = JobError(
                    code="too_many_attempts",
                    message=f"the worker was lost {max_attempts} times while processing "
                    "this video; it is not retried again",
                )
                return self._terminal(job, "failed")
            action = "run"
            if job.status == "queued":
                job.move("running")
            job.stage, job.progress, job.started_at = STAGES[0], 0, utcnow()
            job.lease = secrets.token_hex(8)

            def extra(pipe: Any) -> None:
                pipe.zrem(keys.QUEUED, job_id)
                pipe.zadd(keys.RUNNING, {job_id: time.time()})
                pipe.zadd(keys.LEASES, {job_id: time.time() + lease_s})

            return extra

        job = self._txn(job_id, mutate)
        return job, (action if job is not None else "skip")

    def _holds(self, job: JobRecord, token: str | None) -> bool:
        return job.status == "running" and (token is None or job.lease == token)

    def renew(self, job_id: str, token: str, lease_s: float = DEFAULT_LEASE_S) -> bool:
        """Extend the lease of the attempt holding ``token``; False when it no longer holds
        the job (finished, cancelled, or requeued after the lease expired)."""
        job = self.get(job_id)
        if job is None or not self._holds(job, token):
            return False
        # XX: never re-create a lease that a requeue or a terminal status removed meanwhile
        return bool(self.r.zadd(keys.LEASES, {job_id: time.time() + lease_s}, xx=True, ch=True))

    def worker_busy_with(self, name: str, job_id: str) -> bool:
        """Whether worker ``name`` has a live heartbeat saying it is processing ``job_id``."""
        raw = self.r.get(keys.worker(name))
        return bool(raw) and json.loads(raw).get("busy_job") == job_id

    def progress(self, job_id: str, stage: str, progress: float, token: str | None = None) -> bool:
        """Record progress; False when the job was cancelled, deleted or lost its lease (stop
        working)."""
        alive = False

        def mutate(job: JobRecord) -> Extra | None:
            nonlocal alive
            alive = self._holds(job, token)  # reassigned on every WATCH retry
            if not alive:
                return None
            pct = max(0, min(99, int(progress)))
            if job.stage == stage and job.progress == pct:
                return None
            job.stage, job.progress = stage, max(pct, int(job.progress or 0))
            return noop

        self._txn(job_id, mutate)
        return alive

    def finish(self, job_id: str, result: dict[str, Any], token: str | None = None) -> bool:
        """Store the result and mark the job succeeded, unless it was cancelled meanwhile, it
        lost its lease, or another delivery already finished it. True when this call stored
        the result."""
        wrote = False

        def mutate(job: JobRecord) -> Extra | None:
            nonlocal wrote
            wrote = self._holds(job, token)  # reassigned on every WATCH retry
            if not wrote:
                return None
            job.stage, job.progress = None, 100
            duration = (result.get("video") or {}).get("duration")
            if duration is not None:
                job.video_duration = duration
            terminal = self._terminal(job, "succeeded")

            def extra(pipe: Any) -> None:
                pipe.set(keys.result(job_id), json.dumps(result), ex=self.ttl)
                if duration:
                    pipe.incrbyfloat(keys.STATS_VIDEO_SECONDS, float(duration))
                terminal(pipe)

            return extra

        self._txn(job_id, mutate)
        return wrote

    def fail(self, job_id: str, code: str, message: str,
             token: str | None = None) -> JobRecord | None:
        """Fail an active job (with ``token``: only while that attempt holds it). Returns the
        record as it is now, or None when the job does not exist."""
        def mutate(job: JobRecord) -> Extra | None:
            if job.terminal or (token is not None and not self._holds(job, token)):
                return None
            job.error = JobError(code=code, message=message)
            return self._terminal(job, "failed")

        return self._txn(job_id, mutate)

    def _terminal(self, job: JobRecord, status: str) -> Extra:
        """Move ``job`` into a terminal status; return the commands that go with it."""
        job_id = job.id
        job.move(status)  # type: ignore[arg-type]

        def extra(pipe: Any) -> None:
            pipe.zrem(keys.QUEUED, job_id)
            pipe.zrem(keys.RUNNING, job_id)
            pipe.zrem(keys.LEASES, job_id)
            pipe.expire(keys.job(job_id), self.ttl)
            pipe.hincrby(keys.STATS_JOBS, status, 1)

        return extra

    def set_callback(self, job_id: str, delivery: dict[str, Any]) -> JobRecord | None:
        """Record the completion callback's delivery outcome on the job."""
        def mutate(job: JobRecord) -> Extra | None:
            job.callback = delivery  # type: ignore[assignment]  (validated on assignment)
            return noop

        return self._txn(job_id, mutate)

    def set_output(self, job_id: str, output: dict[str, Any],
                   token: str | None = None) -> bool:
        """Record where the result JSON was written (``output_uri``), while ``token``'s attempt
        still holds the job. False when it no longer does (nothing is changed)."""
        held = False

        def mutate(job: JobRecord) -> Extra | None:
            nonlocal held
            held = not job.terminal and (token is None or self._holds(job, token))
            if not held:
                return None
            job.output = output
            return noop

        self._txn(job_id, mutate)
        return held

    # ---- leases and reaping ----------------------------------------------------------------
    def requeue_expired(self, lease_s: float = DEFAULT_LEASE_S) -> list[str]:
        """Put running jobs whose lease expired back in ``queued`` and return their ids (the
        caller publishes a message for each). A job whose worker still has a live heartbeat
        naming it (a worker too busy to renew, but alive) gets its lease extended instead."""
        requeued = []
        now = time.time()
        for job_id in self.r.zrangebyscore(keys.LEASES, "-inf", now):
            moved = False

            def mutate(job: JobRecord) -> Extra | None:
                nonlocal moved
                moved = False
                if job.status != "running":
                    return lambda pipe: pipe.zrem(keys.LEASES, job.id)
                score = self.r.zscore(keys.LEASES, job.id)
                if score is None or score > time.time():
                    return None  # renewed meanwhile
                if job.worker and self.worker_busy_with(job.worker, job.id):
                    return lambda pipe: pipe.zadd(keys.LEASES, {job.id: time.time() + lease_s})
                job.move("queued")
                job.stage, job.progress, job.lease, job.worker = None, 0, None, None
                job.requeues += 1
                moved = True

                def extra(pipe: Any) -> None:
                    pipe.zrem(keys.LEASES, job.id)
                    pipe.zrem(keys.RUNNING, job.id)
                    pipe.zadd(keys.QUEUED, {job.id: time.time()})
                    pipe.hincrby(keys.STATS_JOBS, "requeued", 1)

                return extra

            job = self._txn(job_id, mutate, watch=(keys.LEASES,))
            if job is None:
                self.r.zrem(keys.LEASES, job_id)
            elif moved:
                requeued.append(job_id)
        return requeued

    def reap_stale(self, max_runtime_s: float, max_queued_s: float | None = None) -> list[str]:
        """Fail running jobs older than every time limit (``max_runtime_s``): a child killed by
        the hard limit whose message was acknowledged would otherwise stay ``running``
        forever. Jobs whose worker died are not failed here: their lease expires and
        :meth:`requeue_expired` runs them again."""
        failed = []
        cutoff = time.time() - max_runtime_s
        for job_id in self.r.zrangebyscore(keys.RUNNING, "-inf", cutoff):
            job = self.get(job_id)
            if job is None:
                self.r.zrem(keys.RUNNING, job_id)
                continue
            if self.fail(job_id, "time_limit_exceeded",
                         f"processing took longer than the {max_runtime_s:.0f} s limit"):
                failed.append(job_id)
        # Ids of expired job records would otherwise count against the queue forever.
        self.r.zremrangebyscore(keys.QUEUED, "-inf", time.time() - self.ttl)
        return failed

    def orphans(self, older_than_s: float) -> list[str]:
        """Queued jobs whose task message was never published (the gateway died between
        writing the record and enqueueing it) after ``older_than_s`` seconds."""
        out = []
        for job_id in self.r.zrangebyscore(keys.QUEUED, "-inf", time.time() - older_than_s):
            job = self.get(job_id)
            if job is not None and job.status == "queued" and job.enqueued_at is None:
                out.append(job_id)
        return out

    # ---- gateway side ----------------------------------------------------------------------
    def cancel(self, job_id: str) -> tuple[JobRecord | None, str]:
        """DELETE semantics: an active job becomes ``cancelled`` (the worker stops at its next
        progress report); a finished one is forgotten. Returns ``(job, previous status)``."""
        prev = ""

        def mutate(job: JobRecord) -> Extra | None:
            nonlocal prev
            prev = job.status
            if prev in TERMINAL:
                return None
            job.error = None
            return self._terminal(job, "cancelled")

        job = self._txn(job_id, mutate)
        if job is None:
            return None, ""
        if prev in TERMINAL:
            pipe = self.r.pipeline()
            pipe.delete(keys.job(job_id), keys.result(job_id))
            pipe.zrem(keys.owner(job.owner), job_id)
            pipe.execute()
        return job, prev

    def counts(self) -> dict[str, int]:
        pipe = self.r.pipeline()
        pipe.zcard(keys.QUEUED)
        pipe.zcard(keys.RUNNING)
        queued, running = pipe.execute()
        return {"queued": int(queued), "running": int(running)}
