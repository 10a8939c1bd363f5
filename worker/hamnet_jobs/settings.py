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
    callback_secret: str = Field(
        default="", description="Master key of the webhook signing secrets (one per API key, "
        "derived from it); empty: generated once and kept in Redis."
    )

    @model_validator(mode="after")
    def _s3_bucket_set(self) -> SharedSettings:
        if self.storage == "s3" and not self.s3_bucket:
            raise ValueError("HAMNET_STORAGE=s3 needs HAMNET_S3_BUCKET")
        return self
