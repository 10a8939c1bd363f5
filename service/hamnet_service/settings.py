"""Gateway configuration: ``HAMNET_*`` environment variables, read once per process.

| variable | default | meaning |
|---|---|---|
| ``HAMNET_REDIS_URL`` | ``redis://localhost:6379/0`` | broker and job store |
| ``HAMNET_BUNDLE`` | default bundle | model bundle directory (must match the workers') |
| ``HAMNET_DATA_DIR`` | ``.hamnet/data`` | uploads and scratch, shared with the workers |
| ``HAMNET_STORAGE`` | ``local`` | ``s3``: uploads go to ``HAMNET_S3_BUCKET`` (docs/DEPLOY.md) |
| ``HAMNET_S3_BUCKET`` / ``HAMNET_S3_PREFIX`` | empty / ``uploads/`` | object key ``PREFIX<id>.video`` |
| ``HAMNET_S3_ENDPOINT_URL`` / ``HAMNET_S3_REGION`` | unset | S3-compatible endpoint and region |
| ``HAMNET_HOST`` / ``HAMNET_PORT`` | ``127.0.0.1`` / ``8000`` | listen address |
| ``HAMNET_API_KEYS`` | empty (no auth) | comma-separated keys for ``Authorization: Bearer`` |
| ``HAMNET_ALLOW_ANONYMOUS_PUBLIC`` | false | serve without API keys on a non-loopback address |
| ``HAMNET_MAX_UPLOAD_BYTES`` | 2 GiB | 413 above this |
| ``HAMNET_MAX_DURATION_S`` | 14400 | 422 ``video_too_long`` above this |
| ``HAMNET_MIN_DURATION_S`` | 0.5 | 422 ``video_too_short`` below this (or a single frame) |
| ``HAMNET_MAX_DIMENSION`` | 8192 | 422 ``resolution_too_large`` when width or height exceed it |
| ``HAMNET_MAX_PIXELS`` | 35389440 | 422 ``resolution_too_large`` above this many pixels a frame |
| ``HAMNET_PROBE_TIMEOUT_S`` / ``_CPU_S`` / ``_MEMORY_MB`` | 20 / 10 / 1024 | limits of the child process that probes an upload |
| ``HAMNET_MAX_QUEUE`` | 100 | 429 ``queue_full`` when this many jobs wait |
| ``HAMNET_RATE_LIMIT_PER_MINUTE`` | 60 | job submissions per key (or client) and minute; 0: off |
| ``HAMNET_JOB_TTL_S`` | 604800 | seconds jobs and results are kept |
| ``HAMNET_CALLBACK_ALLOW_PRIVATE`` | false | allow callback URLs to loopback/private ranges |
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from hamnet_jobs.settings import SharedSettings
from pydantic import Field


class ServiceSettings(SharedSettings):
    """Gateway settings; the ones shared with the workers live in ``SharedSettings``."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: str = ""
    allow_anonymous_public: bool = Field(
        default=False, description="Serve without API keys on a non-loopback address (every "
        "caller who can reach the port can then submit jobs).",
    )
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1)
    min_duration_s: float = Field(default=0.5, ge=0)
    probe_timeout_s: float = Field(default=20.0, gt=0)
    probe_cpu_s: int = Field(default=10, ge=1)
    probe_memory_mb: int = Field(default=1024, ge=64)
    orphan_after_s: float = Field(
        default=120.0, gt=0, description="A queued job whose task was never published after "
        "this long (its gateway died in between) is failed.",
    )
    max_queue: int = Field(default=100, ge=1)
    queue_retry_after_s: int = Field(default=30, ge=1)
    rate_limit_per_minute: int = Field(default=60, ge=0)
    max_field_bytes: int = Field(default=8192, ge=64)
    max_fields: int = Field(default=16, ge=1)
    partial_idle_s: float = Field(default=60.0, gt=0, description="stale partial uploads")
    worker_stale_s: float = Field(default=30.0, gt=0)
    # Labelled datasets (docs/TRAINING.md): limits of an uploaded archive.
    dataset_max_bytes: int = Field(default=8 * 1024**3, ge=1, description="archive upload")
    dataset_max_members: int = Field(default=5000, ge=1)
    dataset_max_unpacked_bytes: int = Field(default=16 * 1024**3, ge=1)
    dataset_max_ratio: float = Field(default=200.0, gt=1, description="zip bomb guard")
    dataset_min_videos: int = Field(default=2, ge=1)
    dataset_stale_s: float = Field(default=120.0, gt=0, description="a dataset whose "
                                   "validation has not reported for this long is failed")

    @property
    def keys(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]

    def exposure_problem(self) -> str | None:
        """Why serving with these settings would expose every job to strangers, or None."""
        if self.keys or self.allow_anonymous_public or is_loopback(self.host):
            return None
        return (f"refusing to listen on {self.host} without API keys: anyone who can reach "
                "the port could submit jobs. Set HAMNET_API_KEYS (comma-separated keys), or "
                "listen on 127.0.0.1, or set HAMNET_ALLOW_ANONYMOUS_PUBLIC=true to accept this")


def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@lru_cache(maxsize=1)
def get_settings() -> ServiceSettings:
    return ServiceSettings()
