"""The job store: job state and results in Redis as JSON, shared by the gateway and the workers.

Keys (all under ``hamnet:``), each documented because operators read Redis directly:

``job:<id>``            job record (JSON); expires ``ttl`` seconds after creation, and again
                        ``ttl`` seconds after it reaches a terminal status
``result:<id>``         result JSON of a succeeded job; same TTL as its record
``owner:<owner>``       sorted set of the owner's job ids by creation time (for ``GET /v1/jobs``)
``idem:<owner>:<key>``  ``{"id", "sha256"}`` of an ``Idempotency-Key``; same TTL
``queued``/``running``  sorted sets of active job ids (queue depth, admission control, reaping)
``stats:*``             counters and stage-latency histograms that ``/metrics`` exposes, so
                        metrics aggregate over every worker and gateway process
``worker:<name>``       worker heartbeat (JSON, short TTL): readiness and execution provider

Every status change is a WATCH/MULTI transaction on the job key so that a cancel racing with a
worker finishing, or a redelivered message racing with the first attempt, resolves to exactly one
outcome. Only ``redis`` is imported here: the gateway uses this module too.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import redis

PREFIX = "hamnet:"
ACTIVE = ("queued", "running")
TERMINAL = ("succeeded", "failed", "cancelled")
STATUSES = ACTIVE + TERMINAL
STAGES = ("decode", "features", "localize")
# Upper bounds (seconds) of the stage-latency histogram buckets.
STAGE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
DEFAULT_TTL = 7 * 24 * 3600


class IdempotencyConflict(Exception):
    """The Idempotency-Key was already used for different content."""


def new_job_id() -> str:
    """128 random bits, URL-safe: ids are capabilities when API keys are off."""
    return secrets.token_urlsafe(16)


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


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


Mutation = Callable[[dict[str, Any]], "Callable[[Any], None] | None"]


class JobStore:
    """All reads and writes of job state; methods return plain dicts (the job record)."""

    def __init__(self, client: redis.Redis, ttl: int = DEFAULT_TTL) -> None:
        self.r = client
        self.ttl = int(ttl)

    # ---- keys ------------------------------------------------------------------------------
    @staticmethod
    def job_key(job_id: str) -> str:
        return f"{PREFIX}job:{job_id}"

    @staticmethod
    def result_key(job_id: str) -> str:
        return f"{PREFIX}result:{job_id}"

    @staticmethod
    def _owner_key(owner: str) -> str:
        return f"{PREFIX}owner:{owner}"

    # ---- transactions ----------------------------------------------------------------------
    def _txn(self, job_id: str, mutate: Mutation) -> dict[str, Any] | None:
        """Apply ``mutate`` atomically; it edits the record in place and returns a function
        queueing extra commands (or None to leave Redis unchanged). Returns the record as
        written (or as read, when unchanged), or None when the job does not exist."""
        key = self.job_key(job_id)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        pipe.reset()
                        return None
                    job = json.loads(raw)
                    extra = mutate(job)
                    if extra is None:
                        pipe.reset()
                        return job
                    job["updated_at"] = utcnow()
                    pipe.multi()
                    pipe.set(key, json.dumps(job), keepttl=True)
                    extra(pipe)
                    pipe.execute()
                    return job
                except redis.WatchError:
                    continue

    # ---- creation and reads ----------------------------------------------------------------
    def create(
        self, job: dict[str, Any], idempotency_key: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Store a new queued job. With an idempotency key already used for the same content
        returns ``(existing job, False)``; for different content raises IdempotencyConflict."""
        owner = job["owner"]
        if idempotency_key:
            ikey = f"{PREFIX}idem:{owner}:{idempotency_key}"
            claim = json.dumps({"id": job["id"], "sha256": job.get("sha256")})
            if not self.r.set(ikey, claim, nx=True, ex=self.ttl):
                prev = json.loads(self.r.get(ikey) or "null")
                existing = self.get(prev["id"]) if prev else None
                if existing is not None:
                    if prev.get("sha256") != job.get("sha256"):
                        raise IdempotencyConflict(idempotency_key)
                    return existing, False
                self.r.set(ikey, claim, ex=self.ttl)  # the old job expired: reuse the key
        now = time.time()
        job.setdefault("status", "queued")
        job.setdefault("stage", None)
        job.setdefault("progress", 0)
        job.setdefault("attempts", 0)
        job.setdefault("error", None)
        job.setdefault("created_at", utcnow())
        job.setdefault("started_at", None)
        job.setdefault("finished_at", None)
        job["updated_at"] = job["created_at"]
        pipe = self.r.pipeline()
        pipe.set(self.job_key(job["id"]), json.dumps(job), ex=self.ttl)
        pipe.zadd(self._owner_key(owner), {job["id"]: now})
        pipe.expire(self._owner_key(owner), self.ttl)
        pipe.zadd(f"{PREFIX}queued", {job["id"]: now})
        pipe.hincrby(f"{PREFIX}stats:jobs", "created", 1)
        pipe.execute()
        return job, True

    def get(self, job_id: str) -> dict[str, Any] | None:
        raw = self.r.get(self.job_key(job_id))
        return json.loads(raw) if raw else None

    def get_result(self, job_id: str) -> dict[str, Any] | None:
        raw = self.r.get(self.result_key(job_id))
        return json.loads(raw) if raw else None

    def list(self, owner: str, limit: int = 20, offset: int = 0) -> tuple[list[dict], int]:
        """The owner's jobs, newest first, and the total count (expired ids are pruned)."""
        okey = self._owner_key(owner)
        self.r.zremrangebyscore(okey, "-inf", time.time() - self.ttl)
        ids = self.r.zrevrange(okey, offset, offset + limit - 1)
        jobs, gone = [], []
        raws = self.r.mget([self.job_key(i) for i in ids]) if ids else []
        for job_id, raw in zip(ids, raws, strict=True):
            if raw is None:
                gone.append(job_id)
            else:
                jobs.append(json.loads(raw))
        if gone:
            self.r.zrem(okey, *gone)
        return jobs, int(self.r.zcard(okey))

    # ---- worker side -----------------------------------------------------------------------
    def begin(
        self, job_id: str, max_attempts: int, worker: str | None = None
    ) -> tuple[dict[str, Any] | None, str]:
        """Start an attempt. Returns ``(job, action)`` with action ``run``; ``skip`` when the
        job is gone or already terminal (a duplicate delivery: exactly one outcome); ``poison``
        when this delivery exceeds ``max_attempts`` (the job is failed, not retried forever);
        ``busy`` when another live worker is running it right now.

        ``busy`` exists because a broker reconnect (Redis restarted) makes kombu put the
        messages of running jobs back on the queue: without it a second worker would run the
        job again alongside the first, count an attempt (several reconnects could turn a
        healthy job into ``too_many_attempts``) and POST its callback twice. ``worker`` names
        the caller; its heartbeat must already say it is busy with this job (see the task)."""
        action = "skip"

        def mutate(job: dict[str, Any]):
            nonlocal action
            if job["status"] in TERMINAL:
                action = "skip"
                return None
            owner = job.get("worker")
            if job["status"] == "running" and owner and owner != worker \
                    and self.worker_busy_with(owner, job_id):
                action = "busy"
                return None
            if worker:
                job["worker"] = worker
            job["attempts"] = int(job.get("attempts", 0)) + 1
            if job["attempts"] > max_attempts:
                action = "poison"
                job["error"] = {
                    "code": "too_many_attempts",
                    "message": f"the worker was lost {max_attempts} times while processing "
                    "this video; it is not retried again",
                }
                return self._terminal(job, "failed")
            action = "run"
            job.update(status="running", stage=STAGES[0], progress=0, started_at=utcnow())

            def extra(pipe: Any) -> None:
                pipe.zrem(f"{PREFIX}queued", job_id)
                pipe.zadd(f"{PREFIX}running", {job_id: time.time()})

            return extra

        job = self._txn(job_id, mutate)
        return job, (action if job is not None else "skip")

    def progress(self, job_id: str, stage: str, progress: float) -> bool:
        """Record progress; False when the job was cancelled or deleted (stop working)."""
        alive = False

        def mutate(job: dict[str, Any]):
            nonlocal alive
            alive = job["status"] == "running"  # reassigned on every WATCH retry
            if not alive:
                return None
            pct = max(0, min(99, int(progress)))
            if job.get("stage") == stage and job.get("progress") == pct:
                return None
            job["stage"], job["progress"] = stage, max(pct, int(job.get("progress") or 0))
            return lambda pipe: None

        self._txn(job_id, mutate)
        return alive

    def finish(self, job_id: str, result: dict[str, Any]) -> bool:
        """Store the result and mark the job succeeded, unless it was cancelled meanwhile
        (or another delivery already finished it). True when this call stored the result."""
        wrote = False

        def mutate(job: dict[str, Any]):
            nonlocal wrote
            wrote = job["status"] == "running"  # reassigned on every WATCH retry
            if not wrote:
                return None
            job.update(stage=None, progress=100)
            duration = (result.get("video") or {}).get("duration")
            if duration is not None:
                job["video_duration"] = duration
            terminal = self._terminal(job, "succeeded")

            def extra(pipe: Any) -> None:
                pipe.set(self.result_key(job_id), json.dumps(result), ex=self.ttl)
                if duration:
                    pipe.incrbyfloat(f"{PREFIX}stats:video_seconds", float(duration))
                terminal(pipe)

            return extra

        self._txn(job_id, mutate)
        return wrote

    def fail(self, job_id: str, code: str, message: str) -> dict[str, Any] | None:
        def mutate(job: dict[str, Any]):
            if job["status"] in TERMINAL:
                return None
            job["error"] = {"code": code, "message": message}
            return self._terminal(job, "failed")

        return self._txn(job_id, mutate)

    def _terminal(self, job: dict[str, Any], status: str) -> Callable[[Any], None]:
        """Edit ``job`` into a terminal status; return the commands that go with it."""
        job_id = job["id"]
        job["status"] = status
        job["finished_at"] = utcnow()
        if status != "succeeded":
            job["stage"] = None

        def extra(pipe: Any) -> None:
            pipe.zrem(f"{PREFIX}queued", job_id)
            pipe.zrem(f"{PREFIX}running", job_id)
            pipe.expire(self.job_key(job_id), self.ttl)
            pipe.hincrby(f"{PREFIX}stats:jobs", status, 1)

        return extra

    # ---- gateway side ----------------------------------------------------------------------
    def cancel(self, job_id: str) -> tuple[dict[str, Any] | None, str]:
        """DELETE semantics: an active job becomes ``cancelled`` (the worker stops at its next
        progress report); a finished one is forgotten. Returns ``(job, previous status)``."""
        prev = ""

        def mutate(job: dict[str, Any]):
            nonlocal prev
            prev = job["status"]
            if prev in TERMINAL:
                return None
            job["error"] = None
            return self._terminal(job, "cancelled")

        job = self._txn(job_id, mutate)
        if job is None:
            return None, ""
        if prev in TERMINAL:
            pipe = self.r.pipeline()
            pipe.delete(self.job_key(job_id), self.result_key(job_id))
            pipe.zrem(self._owner_key(job["owner"]), job_id)
            pipe.execute()
        return job, prev

    def counts(self) -> dict[str, int]:
        pipe = self.r.pipeline()
        pipe.zcard(f"{PREFIX}queued")
        pipe.zcard(f"{PREFIX}running")
        queued, running = pipe.execute()
        return {"queued": int(queued), "running": int(running)}

    def reap_stale(self, max_runtime_s: float, max_queued_s: float | None = None) -> list[str]:
        """Fail running jobs older than the hard time limit (a killed child whose message was
        acknowledged as timed out would otherwise stay ``running`` forever)."""
        failed = []
        cutoff = time.time() - max_runtime_s
        for job_id in self.r.zrangebyscore(f"{PREFIX}running", "-inf", cutoff):
            job = self.get(job_id)
            if job is None:
                self.r.zrem(f"{PREFIX}running", job_id)
                continue
            if self.fail(job_id, "time_limit_exceeded",
                         f"processing took longer than the {max_runtime_s:.0f} s limit"):
                failed.append(job_id)
        # Ids of expired job records would otherwise count against the queue forever.
        self.r.zremrangebyscore(f"{PREFIX}queued", "-inf", time.time() - self.ttl)
        return failed

    def rate_hit(self, owner: str, limit: int, window_s: int = 60) -> int:
        """Fixed-window rate limit; returns 0 when allowed, else seconds until the next window."""
        if limit <= 0:
            return 0
        now = int(time.time())
        window = now // window_s
        key = f"{PREFIX}rate:{owner}:{window}"
        pipe = self.r.pipeline()
        pipe.incr(key)
        pipe.expire(key, window_s + 1)
        count, _ = pipe.execute()
        if int(count) > limit:
            return max(1, (window + 1) * window_s - now)
        return 0

    # ---- metrics and heartbeats ------------------------------------------------------------
    def observe_stage(self, stage: str, seconds: float) -> None:
        key = f"{PREFIX}stats:stage:{stage}"
        pipe = self.r.pipeline()
        for b in STAGE_BUCKETS:
            if seconds <= b:
                pipe.hincrby(key, f"le:{b}", 1)
        pipe.hincrbyfloat(key, "sum", seconds)
        pipe.hincrby(key, "count", 1)
        pipe.execute()

    def stats(self) -> dict[str, Any]:
        pipe = self.r.pipeline()
        pipe.hgetall(f"{PREFIX}stats:jobs")
        pipe.get(f"{PREFIX}stats:video_seconds")
        for s in STAGES:
            pipe.hgetall(f"{PREFIX}stats:stage:{s}")
        jobs, video_seconds, *stages = pipe.execute()
        return {
            "jobs": {k: int(v) for k, v in jobs.items()},
            "video_seconds": float(video_seconds or 0.0),
            "stages": dict(zip(STAGES, stages, strict=True)),
            **self.counts(),
        }

    def heartbeat(self, name: str, info: dict[str, Any], ttl_s: float) -> None:
        self.r.set(f"{PREFIX}worker:{name}", json.dumps(info), px=int(ttl_s * 1000))

    def worker_busy_with(self, name: str, job_id: str) -> bool:
        """Whether worker ``name`` has a live heartbeat saying it is processing ``job_id``."""
        raw = self.r.get(f"{PREFIX}worker:{name}")
        return bool(raw) and json.loads(raw).get("busy_job") == job_id

    def workers(self) -> list[dict[str, Any]]:
        keys: Iterable[str] = self.r.scan_iter(match=f"{PREFIX}worker:*", count=100)
        keys = list(keys)
        return [json.loads(v) for v in self.r.mget(keys) if v] if keys else []


# Fields of the record that never leave the service (owner is a hash of the caller's API key;
# the upload path and content hash are internal).
_PRIVATE = ("owner", "sha256", "upload", "worker")


def public_view(job: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k not in _PRIVATE}
