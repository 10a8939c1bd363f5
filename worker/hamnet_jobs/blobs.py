"""Named files of datasets and trainings (videos, labels, feature cache, epoch checkpoints),
in the same store as the uploads: a directory under ``HAMNET_DATA_DIR`` or the S3 bucket.

Why a second interface next to :mod:`hamnet_jobs.storage`: an upload is one file named by
its job id; a dataset is a tree of files under a prefix (``datasets/<id>/...``) that must be
written, listed and deleted as a whole ("nothing half-written stays behind"). Keys are
relative POSIX paths built by this service from validated ids and generated names, never
from a client's file name; :func:`check_key` refuses anything else.

Local layout: ``<data_dir>/blobs/<key>`` (writes go to a temporary name, then a rename, so a
reader never sees half a file). S3: ``<bucket>/<key>``.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hamnet_jobs.storage import S3Storage, Storage, StorageUnavailable, _describe, _missing

log = logging.getLogger("hamnet.blobs")

_KEY = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]*(/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*$")


def check_key(key: str) -> str:
    """A key is ``seg/seg/...``: no absolute path, no ``..``, no empty or hidden segment."""
    if not _KEY.match(key) or ".." in key.split("/"):
        raise ValueError(f"invalid blob key {key!r}")
    return key


class BlobStore:
    """Files under ``<data_dir>/blobs/``."""

    kind = "local"

    def __init__(self, data_dir: Path | str) -> None:
        self.root = Path(data_dir) / "blobs"

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_file(self, key: str, src: Path | str) -> None:
        dst = self.path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".tmp-")
        os.close(fd)
        try:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes) -> None:
        dst = self.path(key)
        dst.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_file(self, key: str, dst: Path | str) -> Path:
        """Copy the blob to ``dst``; FileNotFoundError when it does not exist."""
        shutil.copyfile(self.path(key), dst)
        return Path(dst)

    def get_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix`` (a directory-like key), sorted."""
        base = self.path(prefix.rstrip("/"))
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix() for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )

    def delete_prefix(self, prefix: str) -> None:
        """Remove everything under ``prefix``; safe to call twice."""
        shutil.rmtree(self.path(prefix.rstrip("/")), ignore_errors=True)

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)


class S3BlobStore(BlobStore):
    """The same files as objects of the upload bucket (same client and credentials)."""

    kind = "s3"

    def __init__(self, storage: S3Storage) -> None:
        super().__init__(storage.root)
        self.s3 = storage

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if _missing(e):
                raise FileNotFoundError(what) from None
            log.warning("object store: %s failed: %s", what, _describe(e))
            raise StorageUnavailable("the object store is unavailable") from None

    def put_file(self, key: str, src: Path | str) -> None:
        self._call(key, self.s3.client.upload_file, str(src), self.s3.bucket, check_key(key),
                   Config=self.s3._transfer())

    def put_bytes(self, key: str, data: bytes) -> None:
        self._call(key, self.s3.client.put_object, Bucket=self.s3.bucket, Key=check_key(key),
                   Body=data)

    def get_file(self, key: str, dst: Path | str) -> Path:
        try:
            self._call(key, self.s3.client.download_file, self.s3.bucket, check_key(key),
                       str(dst), Config=self.s3._transfer())
        except BaseException:
            Path(dst).unlink(missing_ok=True)
            raise
        return Path(dst)

    def get_bytes(self, key: str) -> bytes:
        obj = self._call(key, self.s3.client.get_object, Bucket=self.s3.bucket,
                         Key=check_key(key))
        return obj["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self._call(key, self.s3.client.head_object, Bucket=self.s3.bucket,
                       Key=check_key(key))
            return True
        except FileNotFoundError:
            return False

    def list(self, prefix: str) -> list[str]:
        pfx = check_key(prefix.rstrip("/")) + "/"
        out: list[str] = []
        token = None
        while True:
            kw = {"Bucket": self.s3.bucket, "Prefix": pfx}
            if token:
                kw["ContinuationToken"] = token
            page = self._call(pfx, self.s3.client.list_objects_v2, **kw)
            out += [o["Key"] for o in page.get("Contents", [])]
            if not page.get("IsTruncated"):
                return sorted(out)
            token = page.get("NextContinuationToken")

    def delete_prefix(self, prefix: str) -> None:
        """Delete every object under ``prefix``; a failure is logged, never raised."""
        try:
            keys = self.list(prefix)
            for i in range(0, len(keys), 1000):
                self.s3.client.delete_objects(
                    Bucket=self.s3.bucket,
                    Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]], "Quiet": True},
                )
        except Exception as e:
            log.warning("object store: deleting %s failed: %s", prefix, _describe(e))

    def delete(self, key: str) -> None:
        try:
            self._call(key, self.s3.client.delete_object, Bucket=self.s3.bucket,
                       Key=check_key(key))
        except (FileNotFoundError, StorageUnavailable):
            pass


def make_blobs(storage: Storage) -> BlobStore:
    """The blob store next to an upload store (:func:`hamnet_jobs.storage.make_storage`)."""
    if isinstance(storage, S3Storage):
        return S3BlobStore(storage)
    return BlobStore(storage.root)
