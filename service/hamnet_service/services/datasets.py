"""Dataset use cases: upload (inspect, then validate in the background), read, list, delete.

Order, and why:

1. stream the archive to ``incoming/<id>.part`` (bounded, like a video upload);
2. inspect it in the request (:func:`hamnet_service.archives.inspect`): format, member names,
   links, counts, declared sizes, compression ratios, ``labels.csv`` line by line. These are
   cheap and answered at once as 4xx; nothing has been stored, and the partial file goes;
3. record the dataset ``validating`` and answer 202;
4. a background thread of this gateway extracts the listed videos one at a time (byte caps),
   probes each in the sandboxed probe child, copies it to ``datasets/<id>/videos/`` and
   finally writes ``labels.json`` and marks the dataset ``ready``. Any problem: everything
   under ``datasets/<id>/`` is deleted and the dataset is ``failed`` with one error per video.

Why a gateway thread, not a queued task: the gateway already holds the archive and the probe
sandbox, and the inference workers must not wait behind a dataset. What makes it robust: the
thread refreshes ``heartbeat_at`` after every video; a gateway killed mid-validation stops
doing so, and every gateway's sweeper fails such a dataset (``validation_interrupted``) after
``HAMNET_DATASET_STALE_S`` and deletes its files, so none stays ``validating`` forever.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request
from hamnet_jobs.blobs import BlobStore, make_blobs
from hamnet_jobs.datasets import DatasetRecord, DatasetStore, ItemError, storage_prefix
from hamnet_jobs.record import new_job_id
from hamnet_jobs.storage import Storage
from starlette.concurrency import run_in_threadpool

from hamnet_service import state
from hamnet_service.archives import (
    ArchiveError,
    ArchiveLimits,
    Listing,
    Problem,
    copy_member,
    inspect,
    iter_members,
)
from hamnet_service.auth import ANONYMOUS
from hamnet_service.errors import ApiError
from hamnet_service.probing import ProbeLimits, probe_upload
from hamnet_service.settings import ServiceSettings, get_settings
from hamnet_service.upload import receive

log = logging.getLogger("hamnet.service")
NAME_MAX = 100


@lru_cache(maxsize=1)
def dataset_store() -> DatasetStore:
    return DatasetStore(state.store().r, ttl=max(get_settings().job_ttl_s, 30 * 24 * 3600))


@lru_cache(maxsize=1)
def blob_store() -> BlobStore:
    return make_blobs(state.storage())


def limits(s: ServiceSettings) -> ArchiveLimits:
    return ArchiveLimits(max_members=s.dataset_max_members,
                         max_total_bytes=s.dataset_max_unpacked_bytes,
                         max_member_bytes=s.max_upload_bytes, max_ratio=s.dataset_max_ratio,
                         min_videos=s.dataset_min_videos)


def _name(fields: dict[str, str], filename: str) -> str:
    unknown = sorted(set(fields) - {"name"})
    if unknown:
        raise ApiError(422, "unknown_field", f"unknown form field(s): {unknown[:5]}")
    name = (fields.get("name") or "").strip() or (filename.rsplit(".", 1)[0] or "dataset")
    if len(name) > NAME_MAX or not name.isprintable():
        raise ApiError(422, "invalid_parameter", f"name: at most {NAME_MAX} printable "
                       "characters")
    return name


async def submit_dataset(request: Request, *, owner: str, settings: ServiceSettings,
                         store: DatasetStore, storage: Storage, blobs: BlobStore) -> DatasetRecord:
    s = settings
    dataset_id = new_job_id()
    partial = storage.partial_path(dataset_id)
    up = await receive(request, partial, s.dataset_max_bytes, s.max_field_bytes, s.max_fields,
                       idle_s=s.partial_idle_s)
    handed_over = False
    try:
        name = _name(up.fields, up.filename)
        try:
            listing = await run_in_threadpool(inspect, up.path, limits(s))
        except ArchiveError as e:
            raise ApiError(e.status, e.code, e.message) from None
        rec = DatasetRecord(id=dataset_id, owner=owner, name=name, filename=up.filename,
                            size_bytes=up.size, sha256=up.sha256, videos=len(listing.entries),
                            classes=listing.classes, prefix=storage_prefix(dataset_id))
        # Out of incoming/: the partial-upload sweeper judges by mtime, and a long validation
        # does not touch the archive. scratch/<id>/ is removed by validate() or, if this
        # gateway dies, by sweep_stale().
        archive = storage.scratch_dir(dataset_id) / "archive"
        archive.parent.mkdir(parents=True, exist_ok=True)
        os.replace(up.path, archive)
        await run_in_threadpool(store.create, rec)
        thread = threading.Thread(
            target=validate, name=f"dataset-{dataset_id}", daemon=True,
            args=(dataset_id, archive, listing, store, storage, blobs,
                  ProbeLimits.from_settings(s)),
        )
        thread.start()
        handed_over = True
        return rec
    finally:
        if not handed_over:
            partial.unlink(missing_ok=True)
            shutil.rmtree(storage.scratch_dir(dataset_id), ignore_errors=True)


def validate(dataset_id: str, archive: Path, listing: Listing, store: DatasetStore,
             storage: Storage, blobs: BlobStore, probe: ProbeLimits) -> None:
    """Extract, probe and store every listed video; ``ready`` or ``failed`` (all or nothing)."""
    prefix = storage_prefix(dataset_id)
    scratch = storage.scratch_dir(dataset_id)  # holds the archive too
    try:
        problems = _store_videos(dataset_id, archive, listing, store, scratch, blobs, probe)
        if problems is None:  # deleted meanwhile
            blobs.delete_prefix(prefix)
            return
        if problems:
            blobs.delete_prefix(prefix)
            codes = sorted({p.code for p in problems})
            code = codes[0] if len(codes) == 1 else "invalid_videos"
            names = ", ".join(p.member or "" for p in problems[:5])
            store.mark_failed(dataset_id, ItemError(
                code=code, message=f"{len(problems)} of {len(listing.entries)} video(s) "
                f"cannot be used: {names}"), [ItemError(**p.as_dict()) for p in problems])
            return
        labels = {"classes": sorted(listing.classes), "videos": [
            {"file": f"videos/{e.name}", "name": e.member, "labels": e.labels, "line": e.line}
            for e in listing.entries]}
        blobs.put_bytes(f"{prefix}/labels.json", json.dumps(labels, indent=1).encode())
        rec = store.mark_ready(dataset_id, len(listing.entries), listing.classes)
        if rec is None or rec.status != "ready":
            blobs.delete_prefix(prefix)
    except Exception as e:
        log.exception("validating dataset %s failed", dataset_id)
        blobs.delete_prefix(prefix)
        code = e.code if isinstance(e, ArchiveError) else "internal_error"
        msg = e.message if isinstance(e, ArchiveError) else "the dataset could not be stored"
        store.mark_failed(dataset_id, ItemError(code=code, message=msg))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        archive.unlink(missing_ok=True)


def _store_videos(dataset_id: str, archive: Path, listing: Listing, store: DatasetStore,
                  scratch: Path, blobs: BlobStore, probe: ProbeLimits) -> list[Problem] | None:
    prefix = storage_prefix(dataset_id)
    scratch.mkdir(parents=True, exist_ok=True)
    by_member = {e.path or e.member: e for e in listing.entries}
    problems: list[Problem] = []
    seen: set[str] = set()
    store.update(dataset_id, stage="probe", progress=0)
    for path, fh in iter_members(archive, listing.kind, set(by_member)):
        entry = by_member[path]
        member = entry.member
        local = scratch / entry.name
        copy_member(fh, local, entry.size, member)
        try:
            probe_upload(local, member, probe)
        except ApiError as e:
            problems.append(Problem(e.code, e.message, line=entry.line, member=member))
        else:
            if not problems:  # once one video is bad, nothing more is stored
                blobs.put_file(f"{prefix}/videos/{entry.name}", local)
        local.unlink(missing_ok=True)
        seen.add(path)
        rec = store.update(dataset_id, progress=min(99, int(100 * len(seen) / len(by_member))))
        if rec is None or rec.status != "validating":
            return None
    missing = set(by_member) - seen
    if missing:  # iter_members found fewer members than the listing (changed archive)
        problems += [Problem("archive_corrupt", "member could not be read",
                             member=by_member[m].member) for m in sorted(missing)]
    return problems


def sweep_stale(store: DatasetStore, blobs: BlobStore, storage: Storage,
                older_than_s: float) -> list[str]:
    """Fail datasets whose validating gateway died, and delete what they had stored (the
    files in the store, and the archive and scratch files in a shared data directory)."""
    out = []
    for rec in store.stale(older_than_s):
        blobs.delete_prefix(rec.prefix or storage_prefix(rec.id))
        shutil.rmtree(storage.scratch_dir(rec.id), ignore_errors=True)
        storage.partial_path(rec.id).unlink(missing_ok=True)
        store.mark_failed(rec.id, ItemError(
            code="validation_interrupted", message="the gateway validating this dataset "
            "stopped; upload the archive again"))
        out.append(rec.id)
    return out


def list_datasets(owner: str, store: DatasetStore, limit: int,
                  offset: int) -> tuple[list[DatasetRecord], int]:
    if owner == ANONYMOUS:  # every keyless caller is one owner: a list would leak ids
        raise ApiError(403, "listing_requires_api_key", "listing datasets needs API keys "
                       "(HAMNET_API_KEYS); without them a dataset is reachable by its id only")
    return store.list(owner, limit, offset)


def delete_dataset(rec: DatasetRecord, store: DatasetStore, blobs: BlobStore) -> None:
    """Forget the dataset and delete its files (a running validation stops at its next video
    and deletes what it wrote; a training already running keeps its local copy)."""
    store.delete(rec)
    blobs.delete_prefix(rec.prefix or storage_prefix(rec.id))


def view(rec: DatasetRecord) -> dict[str, Any]:
    return {**rec.public(), "links": {"self": f"/v1/datasets/{rec.id}"}}
