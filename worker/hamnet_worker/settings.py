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
