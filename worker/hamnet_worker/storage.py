"""Where uploaded videos and per-job scratch files live under ``HAMNET_DATA_DIR``.

Layout: ``uploads/<id>.video`` (complete uploads, named by job id only: a client's filename
never reaches the file system, so there is no path traversal), ``incoming/<id>.part`` (uploads
still streaming; renamed into ``uploads/`` only when complete, so a worker never sees half a
file) and ``scratch/<id>/`` (temporary files of one attempt). The gateway and the workers must
share the directory.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

_ID = re.compile(r"^[A-Za-z0-9_-]{8,64}$")


class Storage:
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
