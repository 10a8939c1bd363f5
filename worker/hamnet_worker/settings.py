"""Worker configuration, read from ``HAMNET_*`` environment variables once per process.

The time limits are validated together because their order is what makes ``acks_late`` safe:
the soft limit lets the task fail the job cleanly, the hard limit kills a stuck child, and the
broker's visibility timeout must exceed both or Redis would hand a still-running job to a second
worker.
"""

from __future__ import annotations

from functools import lru_cache

from hamnet_jobs.settings import SharedSettings
from pydantic import Field, model_validator


class WorkerSettings(SharedSettings):
    concurrency: int = Field(default=1, ge=1)
    soft_time_limit: float = Field(default=1800.0, gt=0, description="Seconds; job fails.")
    time_limit: float = Field(default=1900.0, gt=0, description="Seconds; child is killed.")
    visibility_timeout: float = Field(default=2400.0, gt=0)
    restore_interval: float = Field(
        default=10.0, gt=0, description="Seconds between scans for lost (unacked) jobs."
    )
    max_attempts: int = Field(default=3, ge=1, description="Deliveries before a job is poison.")
    heartbeat_s: float = Field(default=5.0, gt=0)
    lease_s: float = Field(
        default=30.0, gt=0, description="A running job whose worker has not renewed its lease "
        "for this long (the whole worker died) is queued again on a live worker.",
    )
    max_tasks_per_child: int = Field(default=0, ge=0, description="0: unlimited.")
    providers: str = Field(
        default="", description="Comma-separated ONNX Runtime providers; empty: CUDA then CPU."
    )
    preload: bool = Field(default=True, description="Load the model when a child starts.")
    # Live streams (docs/STREAMS.md): the sliding window, in seconds of stream time.
    # Defaults chosen on validation videos (bench/results/stream.md; 0.64 s snippets).
    stream_window_s: float = Field(default=122.88, gt=0, description="Window the head runs on.")
    stream_hop_s: float = Field(default=2.56, gt=0, description="Stream time between runs.")
    stream_margin_s: float = Field(default=3.84, ge=0, description="A segment is final once "
                                   "it ends this long before the window's right edge.")
    stream_min_window_s: float = Field(default=20.48, gt=0,
                                       description="Stream time before the first run.")
    stream_dedupe_tiou: float = Field(default=0.7, gt=0, le=1)
    stream_open_timeout_s: float = Field(default=15.0, gt=0,
                                         description="Connect/read timeout of the source.")
    stream_down_s: float = Field(default=60.0, gt=0, description="A source down this long "
                                 "(reconnecting with backoff) ends the stream failed.")
    model_cache_size: int = Field(
        default=3, ge=1, description="Registry models (besides the default one) each child "
        "keeps loaded; the least recently used is dropped, ONNX sessions included.",
    )
    soft_shutdown_s: float = Field(
        default=0.0, ge=0,
        description="Celery soft shutdown: on a cold shutdown (SIGQUIT, or SIGTERM with "
        "REMAP_SIGTERM=SIGQUIT as in the worker image) wait this long for running jobs before "
        "requeueing them; 0: off. Container stop grace periods must exceed it.",
    )

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> WorkerSettings:
        if self.lease_s < 3 * self.heartbeat_s:
            raise ValueError("need HAMNET_LEASE_S >= 3 x HAMNET_HEARTBEAT_S (a lease must "
                             f"survive a missed heartbeat; got {self.lease_s}, {self.heartbeat_s})")
        return self

    @model_validator(mode="after")
    def _limits_ordered(self) -> WorkerSettings:
        if not self.soft_time_limit < self.time_limit < self.visibility_timeout:
            raise ValueError(
                "need HAMNET_SOFT_TIME_LIMIT < HAMNET_TIME_LIMIT < HAMNET_VISIBILITY_TIMEOUT "
                f"(got {self.soft_time_limit}, {self.time_limit}, {self.visibility_timeout})"
            )
        return self


@lru_cache(maxsize=1)
def get_settings() -> WorkerSettings:
    """Read the environment once; tests start fresh processes instead of mutating this."""
    return WorkerSettings()
