"""The Redis key schema, in one place because operators read Redis directly.

All keys live under ``hamnet:``:

``job:<id>``            job record (JSON, :class:`hamnet_jobs.record.JobRecord`); expires ``ttl``
                        seconds after creation, and again ``ttl`` seconds after it is terminal
``result:<id>``         result JSON of a succeeded job; same TTL as its record
``owner:<owner>``       sorted set of the owner's job ids by creation time (``GET /v1/jobs``)
``idem:<owner>:<key>``  ``{"id", "sha256"}`` of an ``Idempotency-Key``; same TTL
``queued``/``running``  sorted sets of active job ids by the time they entered the status
``leases``              sorted set of running job ids by lease expiry (unix seconds): a worker
                        renews its job's lease on every heartbeat; an expired lease puts the
                        job back in the queue
``stats:*``             counters and stage-latency histograms that ``/metrics`` exposes
``worker:<name>``       worker heartbeat (JSON, short TTL): readiness and execution provider
``rate:<owner>:<win>``  fixed-window submission counter
``callback-key``        the master key webhook secrets are derived from, when none is set
"""

from __future__ import annotations

PREFIX = "hamnet:"

QUEUED = f"{PREFIX}queued"
RUNNING = f"{PREFIX}running"
LEASES = f"{PREFIX}leases"
STATS_JOBS = f"{PREFIX}stats:jobs"
STATS_VIDEO_SECONDS = f"{PREFIX}stats:video_seconds"
CALLBACK_KEY = f"{PREFIX}callback-key"


def job(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def result(job_id: str) -> str:
    return f"{PREFIX}result:{job_id}"


def owner(owner_id: str) -> str:
    return f"{PREFIX}owner:{owner_id}"


def idempotency(owner_id: str, key: str) -> str:
    return f"{PREFIX}idem:{owner_id}:{key}"


def stage_stats(stage: str) -> str:
    return f"{PREFIX}stats:stage:{stage}"


def worker(name: str) -> str:
    return f"{PREFIX}worker:{name}"


WORKER_PATTERN = f"{PREFIX}worker:*"


def rate(owner_id: str, window: int) -> str:
    return f"{PREFIX}rate:{owner_id}:{window}"
