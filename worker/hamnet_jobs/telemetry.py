"""Telemetry in Redis: submission rate counters, job/stage statistics, worker heartbeats.

Kept apart from the job store because none of it decides a job's outcome: losing it (a
flushed stats key, an expired heartbeat) changes a metric or a readiness answer, never a job.
Written by the workers and read by any gateway replica, so ``/metrics`` aggregates over the
whole cluster.
"""

from __future__ import annotations

import json
import time
from typing import Any

import redis

from hamnet_jobs import keys
from hamnet_jobs.record import STAGES

# Upper bounds (seconds) of the stage-latency histogram buckets.
STAGE_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)


class Telemetry:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    def rate_hit(self, owner: str, limit: int, window_s: int = 60) -> int:
        """Fixed-window rate limit; returns 0 when allowed, else seconds until the next window."""
        if limit <= 0:
            return 0
        now = int(time.time())
        window = now // window_s
        key = keys.rate(owner, window)
        pipe = self.r.pipeline()
        pipe.incr(key)
        pipe.expire(key, window_s + 1)
        count, _ = pipe.execute()
        if int(count) > limit:
            return max(1, (window + 1) * window_s - now)
        return 0

    def observe_stage(self, stage: str, seconds: float) -> None:
        key = keys.stage_stats(stage)
        pipe = self.r.pipeline()
        for b in STAGE_BUCKETS:
            if seconds <= b:
                pipe.hincrby(key, f"le:{b}", 1)
        pipe.hincrbyfloat(key, "sum", seconds)
        pipe.hincrby(key, "count", 1)
        pipe.execute()

    def stats(self) -> dict[str, Any]:
        pipe = self.r.pipeline()
        pipe.hgetall(keys.STATS_JOBS)
        pipe.get(keys.STATS_VIDEO_SECONDS)
        for s in STAGES:
            pipe.hgetall(keys.stage_stats(s))
        pipe.zcard(keys.QUEUED)
        pipe.zcard(keys.RUNNING)
        jobs, video_seconds, *stages, queued, running = pipe.execute()
        return {
            "jobs": {k: int(v) for k, v in jobs.items()},
            "video_seconds": float(video_seconds or 0.0),
            "stages": dict(zip(STAGES, stages, strict=True)),
            "queued": int(queued),
            "running": int(running),
        }

    def heartbeat(self, name: str, info: dict[str, Any], ttl_s: float) -> None:
        self.r.set(keys.worker(name), json.dumps(info), px=int(ttl_s * 1000))

    def forget_worker(self, name: str) -> None:
        self.r.delete(keys.worker(name))

    def workers(self) -> list[dict[str, Any]]:
        found = list(self.r.scan_iter(match=keys.WORKER_PATTERN, count=100))
        return [json.loads(v) for v in self.r.mget(found) if v] if found else []
