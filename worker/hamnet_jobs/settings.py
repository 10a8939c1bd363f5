"""The settings the gateway and the workers must agree on (one Redis, one bundle, one upload
store, one queue, one job TTL, one callback policy). Both processes' settings classes extend
:class:`SharedSettings`, so a shared variable is declared once and cannot drift."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SharedSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HAMNET_", extra="ignore")

    redis_url: str = "redis://localhost:6379/0"
    bundle: Path | None = Field(
        default=None, description="Model bundle directory; the default bundle when unset."
    )
    data_dir: Path = Path(".hamnet/data")
    storage: Literal["local", "s3"] = Field(
        default="local", description="Upload store: local directory or S3-compatible bucket."
    )
    s3_bucket: str = ""
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint (MinIO, Ceph ...); unset: AWS."
    )
    s3_prefix: str = "uploads/"
    s3_region: str | None = None
    queue: str = "gpu"
    job_ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    # Content limits: the gateway checks what the container claims, the worker enforces them
    # on decoded time and decoded frame size.
    max_duration_s: float = Field(default=4 * 3600.0, gt=0)
    max_dimension: int = Field(default=8192, ge=16)
    max_pixels: int = Field(default=8192 * 4320, ge=256, description="width x height")
    callback_allow_private: bool = False
    # Remote sources (docs/SOURCES.md): the same outbound policy as callbacks, own switch.
    source_allow_private: bool = Field(
        default=False, description="Allow source URLs on loopback/private addresses.")
    source_schemes: str = Field(
        default="https,http,s3", description="Comma-separated source URL schemes accepted.")
    source_max_bytes: int = Field(default=2 * 1024**3, ge=1, description="Largest download.")
    source_timeout_s: float = Field(default=30.0, gt=0, description="Per socket operation.")
    source_deadline_s: float = Field(default=1200.0, gt=0, description="Whole download.")
    source_retries: int = Field(default=4, ge=0, description="Resumes after failures in a row.")
    source_max_redirects: int = Field(default=5, ge=0)
    source_s3_buckets: str = Field(
        default="", description="Buckets s3:// sources may name (comma-separated, `*`: any the "
        "credentials can read); empty: s3:// sources are refused.")
    output_s3_buckets: str = Field(
        default="", description="Buckets `output_uri` may name (comma-separated, `*`: any); "
        "empty: output_uri is refused.")
    batch_max_sources: int = Field(default=100, ge=1, le=10_000)
    # Live streams (docs/STREAMS.md); URLs follow source_allow_private.
    stream_queue: str = Field(default="streams", description="Queue of live-stream tasks "
                              "(a worker slot runs one stream for as long as it plays).")
    stream_max_s: float = Field(default=24 * 3600.0, gt=0,
                                description="Longest a stream is followed (seconds).")
    stream_events_max: int = Field(default=5000, ge=10,
                                   description="Events kept per stream (oldest trimmed).")
    callback_secret: str = Field(
        default="", description="Master key of the webhook signing secrets (one per API key, "
        "derived from it); empty: generated once and kept in Redis."
    )

    @model_validator(mode="after")
    def _s3_bucket_set(self) -> SharedSettings:
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("HAMNET_STORAGE=s3 needs HAMNET_S3_BUCKET")
        return self
