"""Prometheus metrics. Job, queue and stage figures are read from Redis at scrape time (the
workers write them there), so every gateway replica reports the same cluster-wide numbers and
nothing is lost when a worker process restarts. HTTP latency is per gateway process."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from hamnet_service import state

REGISTRY = CollectorRegistry(auto_describe=True)

HTTP_LATENCY = Histogram(
    "hamnet_http_request_duration_seconds",
    "Gateway request latency by route template",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)


class JobCollector:
    def describe(self):  # noqa: ANN201 (prometheus_client protocol)
        """Nothing to describe up front: without this, registering would call ``collect()``
        and query Redis at import time."""
        return []

    def collect(self):  # noqa: ANN201 (prometheus_client protocol)
        from hamnet_jobs.telemetry import STAGE_BUCKETS

        try:
            stats = state.telemetry().stats()
            workers = state.telemetry().workers()
        except Exception:
            up = GaugeMetricFamily("hamnet_redis_up", "Whether Redis answered the scrape")
            up.add_metric([], 0)
            yield up
            return
        up = GaugeMetricFamily("hamnet_redis_up", "Whether Redis answered the scrape")
        up.add_metric([], 1)
        yield up
        g = GaugeMetricFamily("hamnet_jobs", "Active jobs by status", labels=["status"])
        g.add_metric(["queued"], stats["queued"])
        g.add_metric(["running"], stats["running"])
        yield g
        q = GaugeMetricFamily("hamnet_queue_depth", "Jobs waiting for a worker")
        q.add_metric([], stats["queued"])
        yield q
        c = CounterMetricFamily(
            "hamnet_jobs_finished", "Jobs that reached a terminal status", labels=["status"]
        )
        for status in ("succeeded", "failed", "cancelled"):
            c.add_metric([status], stats["jobs"].get(status, 0))
        yield c
        created = CounterMetricFamily("hamnet_jobs_created", "Jobs accepted")
        created.add_metric([], stats["jobs"].get("created", 0))
        yield created
        v = CounterMetricFamily("hamnet_video_seconds_processed", "Seconds of video processed")
        v.add_metric([], stats["video_seconds"])
        yield v
        w = GaugeMetricFamily("hamnet_workers", "Worker processes with a live heartbeat")
        w.add_metric([], len(workers))
        yield w
        h = HistogramMetricFamily(
            "hamnet_stage_duration_seconds", "Per-stage processing time", labels=["stage"]
        )
        for stage, raw in stats["stages"].items():
            buckets = [(str(b), float(raw.get(f"le:{b}", 0))) for b in STAGE_BUCKETS]
            buckets.append(("+Inf", float(raw.get("count", 0))))
            h.add_metric([stage], buckets, float(raw.get("sum", 0.0)))
        yield h


REGISTRY.register(JobCollector())


class StreamCollector:
    """Live streams (docs/STREAMS.md): slots (stream-worker children, one stream each), streams
    by status, segments published, streams ended by status."""

    def describe(self):  # noqa: ANN201 (prometheus_client protocol)
        return []

    def collect(self):  # noqa: ANN201 (prometheus_client protocol)
        from hamnet_service.services.streams import get_stream_store, slots

        try:
            store = get_stream_store()
            stats = store.stats()
            total, busy = slots(store)
        except Exception:
            return
        g = GaugeMetricFamily("hamnet_stream_slots", "Stream worker slots (one stream each)",
                              labels=["state"])
        g.add_metric(["total"], total)
        g.add_metric(["busy"], busy)
        yield g
        a = GaugeMetricFamily("hamnet_streams_active", "Live streams by status",
                              labels=["status"])
        a.add_metric(["running"], stats["running"])
        a.add_metric(["queued"], max(0, stats["active"] - stats["running"]))
        yield a
        c = stats["counters"]
        seg = CounterMetricFamily("hamnet_stream_segments_published",
                                  "Segments published by live streams")
        seg.add_metric([], c.get("segments", 0))
        yield seg
        e = CounterMetricFamily("hamnet_streams_ended", "Live streams that ended, by status",
                                labels=["status"])
        for status in ("finished", "failed", "stopped"):
            e.add_metric([status], c.get(status, 0))
        yield e


REGISTRY.register(StreamCollector())


def render() -> bytes:
    return generate_latest(REGISTRY)


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def observe(self, method: str, route: str, status: int) -> None:
        HTTP_LATENCY.labels(method, route, str(status)).observe(time.perf_counter() - self.t0)
