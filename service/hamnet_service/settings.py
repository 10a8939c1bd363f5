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
| ``HAMNET_MAX_UPLOAD_BYTES`` | 2 GiB | 413 above this |
| ``HAMNET_MAX_DURATION_S`` | 14400 | 422 ``video_too_long`` above this |
| ``HAMNET_MIN_DURATION_S`` | 0.5 | 422 ``video_too_short`` below this (or a single frame) |
| ``HAMNET_MAX_DIMENSION`` | 8192 | 422 ``resolution_too_large`` when width or height exceed it |
| ``HAMNET_MAX_QUEUE`` | 100 | 429 ``queue_full`` when this many jobs wait |
| ``HAMNET_RATE_LIMIT_PER_MINUTE`` | 60 | job submissions per key (or client) and minute; 0: off |
| ``HAMNET_JOB_TTL_S`` | 604800 | seconds jobs and results are kept |
| ``HAMNET_CALLBACK_ALLOW_PRIVATE`` | false | allow callback URLs to loopback/private ranges |
"""

from __future__ import annotations

from functools import lru_cache

from hamnet_worker.settings import SharedSettings
from pydantic import Field


class ServiceSettings(SharedSettings):
    """Gateway settings; the ones shared with the workers live in ``SharedSettings``."""

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    api_keys: str = ""
    max_upload_bytes: int = Field(default=2 * 1024**3, ge=1)
    max_duration_s: float = Field(default=4 * 3600.0, gt=0)
    min_duration_s: float = Field(default=0.5, ge=0)
    max_dimension: int = Field(default=8192, ge=1)
    max_queue: int = Field(default=100, ge=1)
    queue_retry_after_s: int = Field(default=30, ge=1)
    rate_limit_per_minute: int = Field(default=60, ge=0)
    max_field_bytes: int = Field(default=8192, ge=64)
    max_fields: int = Field(default=16, ge=1)
    partial_idle_s: float = Field(default=60.0, gt=0, description="stale partial uploads")
    worker_stale_s: float = Field(default=30.0, gt=0)

    @property
    def keys(self) -> list[str]:
        return [k.strip() for k in self.api_keys.split(",") if k.strip()]


@lru_cache(maxsize=1)
def get_settings() -> ServiceSettings:
    return ServiceSettings()
