"""Where uploaded videos and per-job scratch files live under ``HAMNET_DATA_DIR``.

Layout: ``uploads/<id>.video`` (complete uploads, named by job id only: a client's filename
never reaches the file system, so there is no path traversal), ``incoming/<id>.part`` (uploads
still streaming; renamed into ``uploads/`` only when complete, so a worker never sees half a
file) and ``scratch/<id>/`` (temporary files of one attempt). The gateway and the workers must
share the directory.

With ``HAMNET_STORAGE=s3`` (:class:`S3Storage`, see docs/DEPLOY.md) only ``incoming/`` and
``scratch/`` stay local: a complete upload is published to an S3-compatible bucket as
``<HAMNET_S3_PREFIX><id>.video`` instead of being renamed into ``uploads/``, and a worker
downloads it into its own ``scratch/<id>/`` before decoding. Gateway and workers then share
only the bucket. boto3 is imported only when S3 storage is selected.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("hamnet.storage")

_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class StorageUnavailable(Exception):
    """The upload store (the object store) cannot be reached or refused the request."""


class Storage:
    """Uploads in a local (or shared) directory."""

    kind = "local"

    def __init__(self, data_dir: Path | str) -> None:
        self.root = Path(data_dir)

    def ensure(self) -> Storage:
        for sub in ("uploads", "incoming", "scratch"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        return self

    @staticmethod
    def _check(job_id: str) -> str:
        if not _ID.match(job_id):
            raise ValueError(f"invalid job id {job_id!r}")
        return job_id

    def partial_path(self, job_id: str) -> Path:
        return self.root / "incoming" / f"{self._check(job_id)}.part"

    def upload_path(self, job_id: str) -> Path:
        return self.root / "uploads" / f"{self._check(job_id)}.video"

    def scratch_dir(self, job_id: str) -> Path:
        return self.root / "scratch" / self._check(job_id)

    def commit(self, job_id: str) -> Path:
        """Atomically publish a complete upload (same file system: a rename)."""
        dst = self.upload_path(job_id)
        os.replace(self.partial_path(job_id), dst)
        return dst

    def fetch(self, job_id: str) -> Path:
        """The complete upload as a local file for the worker; FileNotFoundError if gone."""
        path = self.upload_path(job_id)
        if not path.exists():
            raise FileNotFoundError(path)
        return path

    def release(self, job_id: str) -> None:
        """Drop this process's local copies of an attempt (its scratch files) but keep the
        upload itself: an interrupted attempt is redelivered and needs it again."""
        shutil.rmtree(self.scratch_dir(job_id), ignore_errors=True)

    def remove(self, job_id: str) -> None:
        """Delete everything of a job; safe to call twice and from any process."""
        for p in (self.partial_path(job_id), self.upload_path(job_id)):
            p.unlink(missing_ok=True)
        shutil.rmtree(self.scratch_dir(job_id), ignore_errors=True)

    def sweep_partials(self, idle_s: float) -> list[Path]:
        """Remove partial uploads nobody has written for ``idle_s`` seconds: the leftovers of a
        gateway that was killed mid-upload (a live upload touches its file continuously)."""
        removed = []
        cutoff = time.time() - idle_s
        for p in (self.root / "incoming").glob("*.part"):
            try:
                if p.stat().st_mtime < cutoff:
                    p.unlink()
                    removed.append(p)
            except FileNotFoundError:
                continue
        return removed


def _missing(err: Exception) -> bool:
    response = getattr(err, "response", None) or {}  # botocore ClientError
    code = str((response.get("Error") or {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


class S3Storage(Storage):
    """Uploads as objects in an S3-compatible bucket (AWS S3, MinIO, Ceph RGW ...).

    Same interface as :class:`Storage`. Partial uploads and scratch files stay under the local
    ``data_dir``; credentials come from boto3's standard chain (``AWS_*`` variables, shared
    config files, instance or task roles) and are never logged."""

    kind = "s3"

    def __init__(self, data_dir: Path | str, bucket: str, prefix: str = "uploads/",
                 endpoint_url: str | None = None, region: str | None = None) -> None:
        super().__init__(data_dir)
        if not bucket:
            raise ValueError("HAMNET_S3_BUCKET is required when HAMNET_STORAGE=s3")
        self.bucket, self.prefix = bucket, prefix or ""
        self.endpoint_url, self.region = endpoint_url or None, region or None
        self._client: Any = None
        self._lock = threading.Lock()

    def ensure(self) -> S3Storage:
        """Local directories, and the client (no request yet): a missing boto3 or a bad
        endpoint URL stops the process at start instead of failing every job."""
        for sub in ("incoming", "scratch"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.client  # noqa: B018
        return self

    @property
    def client(self) -> Any:
        """One boto3 client per process (created lazily: never inherited across fork)."""
        with self._lock:
            if self._client is None:
                try:
                    import boto3
                    from botocore.config import Config
                except ImportError:
                    raise RuntimeError("HAMNET_STORAGE=s3 needs boto3: "
                                       "pip install 'hamnet[s3]' (or boto3)") from None

                config = Config(
                    retries={"max_attempts": 4, "mode": "standard"},
                    connect_timeout=10, read_timeout=120,
                    # MinIO and most self-hosted stores expect path-style URLs
                    s3={"addressing_style": "path"} if self.endpoint_url else None,
                )
                self._client = boto3.session.Session().client(
                    "s3", endpoint_url=self.endpoint_url, region_name=self.region,
                    config=config,
                )
            return self._client

    @staticmethod
    def _transfer() -> Any:
        from boto3.s3.transfer import TransferConfig

        # multipart above 16 MiB: a 2 GiB upload is 128 parts, each retried on its own
        return TransferConfig(multipart_threshold=16 << 20, multipart_chunksize=16 << 20,
                              max_concurrency=4)

    def key(self, job_id: str) -> str:
        return f"{self.prefix}{self._check(job_id)}.video"

    def upload_path(self, job_id: str) -> Path:
        """Where the worker keeps its local copy of the object while the job runs."""
        return self.scratch_dir(job_id) / f"{self._check(job_id)}.video"

    def commit(self, job_id: str) -> str:
        """Upload the complete partial file to the bucket, then delete the local file."""
        src, key = self.partial_path(job_id), self.key(job_id)
        try:
            self.client.upload_file(str(src), self.bucket, key, Config=self._transfer())
        except Exception as e:
            log.warning("uploading job %s to the object store failed: %s", job_id,
                        _describe(e))
            raise StorageUnavailable("the upload store is unavailable") from None
        src.unlink(missing_ok=True)
        return key

    def fetch(self, job_id: str) -> Path:
        """Download the object into the job's scratch directory (streamed to disk)."""
        dst = self.upload_path(job_id)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, self.key(job_id), str(dst),
                                      Config=self._transfer())
        except Exception as e:
            dst.unlink(missing_ok=True)
            if _missing(e):
                raise FileNotFoundError(self.key(job_id)) from None
            log.warning("downloading job %s from the object store failed: %s", job_id,
                        _describe(e))
            raise StorageUnavailable("the upload store is unavailable") from None
        return dst

    def exists(self, job_id: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.key(job_id))
            return True
        except Exception as e:
            if _missing(e):
                return False
            raise StorageUnavailable("the upload store is unavailable") from None

    def remove(self, job_id: str) -> None:
        """Delete the local files and the object; never raises (a failure is logged, and a
        bucket lifecycle rule is the backstop, see docs/DEPLOY.md)."""
        self.partial_path(job_id).unlink(missing_ok=True)
        shutil.rmtree(self.scratch_dir(job_id), ignore_errors=True)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key(job_id))
        except Exception as e:
            log.warning("deleting the upload of job %s from the object store failed: %s",
                        job_id, _describe(e))


def _describe(err: Exception) -> str:
    """botocore's messages name the operation and the error code, never the credentials."""
    return f"{type(err).__name__}: {err}"[:300]


def make_storage(settings: Any) -> Storage:
    """The storage ``HAMNET_STORAGE`` selects (service and worker settings alike)."""
    kind = (getattr(settings, "storage", "local") or "local").lower()
    if kind == "local":
        return Storage(settings.data_dir)
    if kind == "s3":
        return S3Storage(settings.data_dir, bucket=settings.s3_bucket,
                         prefix=settings.s3_prefix, endpoint_url=settings.s3_endpoint_url,
                         region=settings.s3_region)
    raise ValueError(f"unknown HAMNET_STORAGE {kind!r} (local or s3)")
