"""Job use cases: submit, list, read a result, cancel.

The submission is the one with real orchestration, and its order is what makes it safe:

1. admission (rate limit, queue depth) before reading a byte of the body;
2. stream the upload to ``incoming/`` (bounded, hashed);
3. validate the form fields, then probe the content in a sandboxed child process;
4. commit the upload to the store (rename, or S3 upload);
5. write the record and the idempotency claim in one transaction;
6. publish the task, then mark the record enqueued.

Anything that fails after step 2 removes what this request stored; a request cancelled after
step 5 (the client went away) discards its record, so no ``queued`` orphan counts against the
queue; a gateway killed between 5 and 6 leaves a record without ``enqueued_at``, which the
sweeper fails after ``HAMNET_ORPHAN_AFTER_S``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import math
from typing import Any

from fastapi import Request
from hamnet_jobs.queue import send_job
from hamnet_jobs.record import JobRecord, new_job_id
from hamnet_jobs.registry import ModelRegistry
from hamnet_jobs.storage import Storage, StorageUnavailable
from hamnet_jobs.store import IdempotencyConflict, JobStore
from hamnet_jobs.telemetry import Telemetry
from hamnet_jobs.urls import URLPolicyError, check_callback_url
from starlette.concurrency import run_in_threadpool

from hamnet_service.auth import ANONYMOUS
from hamnet_service.errors import ApiError
from hamnet_service.probing import ProbeLimits, probe_upload
from hamnet_service.services import sources
from hamnet_service.services.models import choose_model
from hamnet_service.settings import ServiceSettings
from hamnet_service.state import ModelState
from hamnet_service.upload import Upload, receive

log = logging.getLogger("hamnet.service")

FIELDS = ("min_score", "min_raw_score", "include", "exclude", "callback_url", "tag", "model",
          "source_url", "output_uri")


def _number(raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        return math.nan


def _labels(raw: str | None, classes: list[str], name: str) -> list[str] | None:
    if raw is None or not raw.strip():
        return None
    labels = [x.strip() for x in raw.split(",") if x.strip()]
    unknown = [x for x in labels if x not in classes]
    if unknown:
        raise ApiError(422, "unknown_label",
                       f"{name}: unknown label(s) {unknown[:5]}; see GET /v1/models")
    return labels


def parse_params(up: Upload, classes: list[str], allow_private: bool) -> dict[str, Any]:
    """The form fields besides ``file``, validated."""
    unknown = sorted(set(up.fields) - set(FIELDS))
    if unknown:
        raise ApiError(422, "unknown_field", f"unknown form field(s): {unknown[:5]}")
    f = up.fields
    out: dict[str, Any] = {"params": {}}
    # min_score: on the calibrated confidence (a probability); min_raw_score: on HAM-Net's
    # unbounded OIC score. The worker hands both to hamnet.pipeline.predict_video.
    if f.get("min_score", "").strip():
        v = _number(f["min_score"])
        if not 0.0 <= v <= 1.0:
            raise ApiError(422, "invalid_parameter",
                           "min_score (on the calibrated confidence) must be a number in [0, 1]")
        out["params"]["min_score"] = v
    if f.get("min_raw_score", "").strip():
        v = _number(f["min_raw_score"])
        if not math.isfinite(v):
            raise ApiError(422, "invalid_parameter", "min_raw_score must be a finite number")
        out["params"]["min_raw_score"] = v
    out["params"]["include"] = _labels(f.get("include"), classes, "include")
    out["params"]["exclude"] = _labels(f.get("exclude"), classes, "exclude")
    tag = f.get("tag")
    if tag is not None:
        if len(tag) > 200 or not tag.isprintable():
            raise ApiError(422, "invalid_parameter", "tag: at most 200 printable characters")
        out["tag"] = tag
    url = (f.get("callback_url") or "").strip()
    if url:
        try:
            out["callback_url"] = check_callback_url(url, allow_private=allow_private)
        except URLPolicyError as e:
            raise ApiError(422, e.code, str(e)) from None
    return out


def _discard(storage: Storage, job_id: str, stored: bool) -> None:
    """Delete whatever the request stored. Local files go at once; an object is deleted in a
    thread, so that a slow or unreachable object store never blocks the event loop (and a
    cancelled request still cleans up)."""
    if storage.kind == "local":
        storage.remove(job_id)
        return
    storage.partial_path(job_id).unlink(missing_ok=True)
    if stored:
        asyncio.get_running_loop().run_in_executor(None, storage.remove, job_id)


def upload_fingerprint(up: Upload, model: dict[str, Any]) -> str:
    """What an Idempotency-Key is bound to for an upload: the video's content hash, every
    form field and the resolved model, so the same video sent again with another model or
    other options is a 409, not a silent replay of the first job."""
    canon = json.dumps({"sha256": up.sha256, "fields": up.fields,
                        "model": model.get("checksum")}, sort_keys=True)
    return "upload:" + hashlib.sha256(canon.encode()).hexdigest()


async def submit_job(
    request: Request, *, owner: str, idempotency_key: str | None, settings: ServiceSettings,
    store: JobStore, telemetry: Telemetry, storage: Storage, publisher: Any,
    models: ModelState, registry: ModelRegistry | None = None,
) -> tuple[JobRecord, bool]:
    """Accept an upload as a job. Returns ``(job, created)``; ``created`` is False for an
    ``Idempotency-Key`` replay (the existing job)."""
    s = settings
    model = await run_in_threadpool(models.ref)
    if model is None:
        raise ApiError(503, "model_unavailable", "the model bundle is not available yet")
    client = request.client.host if request.client else ""
    rate_owner = owner if owner != ANONYMOUS else f"ip:{client}"
    # Redis calls run in the thread pool: during a Redis restart the client retries for
    # seconds, which must not freeze the event loop (and every other request) meanwhile.
    wait = await run_in_threadpool(telemetry.rate_hit, rate_owner, s.rate_limit_per_minute)
    if wait:
        raise ApiError(429, "rate_limited", "too many jobs submitted; retry later",
                       headers={"Retry-After": str(wait)})
    if (await run_in_threadpool(store.counts))["queued"] >= s.max_queue:
        raise ApiError(429, "queue_full", f"{s.max_queue} jobs are waiting; retry later",
                       headers={"Retry-After": str(s.queue_retry_after_s)})
    job_id = new_job_id()
    if sources.is_fields_only(request):  # a remote source as JSON or a url-encoded form
        fields = await sources.read_fields(request, s.max_field_bytes * s.max_fields)
        up = Upload(path=storage.partial_path(job_id), fields=fields)
    else:
        up = await receive(request, storage.partial_path(job_id), s.max_upload_bytes,
                           s.max_field_bytes, s.max_fields, idle_s=s.partial_idle_s,
                           require_file=False)
    if up.size == 0 or up.fields.get("source_url", "").strip():
        return await sources.submit_source_job(
            up, owner=owner, scope=None if owner != ANONYMOUS else f"{owner}:{client}",
            idempotency_key=idempotency_key, settings=s, store=store, publisher=publisher,
            choose=functools.partial(choose_model, registry, models, owner))
    stored = False  # the upload may be in the object store (from the start of the commit on)
    created = False
    try:
        # model=NAME[@VERSION]: resolved now (404 model_not_found discards the upload)
        model, classes = await run_in_threadpool(choose_model, registry, models, owner,
                                                 up.fields.get("model"))
        extra = await run_in_threadpool(parse_params, up, classes, s.callback_allow_private)
        extra["output"] = await run_in_threadpool(sources.upload_output, up, s)
        video = await run_in_threadpool(probe_upload, up.path, up.filename,
                                        ProbeLimits.from_settings(s))
        stored = True
        try:  # local: a rename into uploads/; S3: upload to the bucket, local file deleted
            await run_in_threadpool(storage.commit, job_id)
        except StorageUnavailable:
            raise ApiError(503, "storage_unavailable", "the upload store is unavailable; "
                           "retry shortly", headers={"Retry-After": "5"}) from None
        record = JobRecord(id=job_id, owner=owner, model=model, filename=up.filename,
                           size_bytes=up.size, sha256=up.sha256, video=video, **extra)
        # Without API keys every caller is "anonymous": scope Idempotency-Keys by client
        # address too, so a stranger's key cannot hand out someone else's job id.
        scope = None if owner != ANONYMOUS else f"{owner}:{client}"
        try:
            job, created = await run_in_threadpool(store.create, record, idempotency_key,
                                                   scope, upload_fingerprint(up, model))
        except IdempotencyConflict:
            raise ApiError(409, "idempotency_key_reused", "this Idempotency-Key was used for "
                           "a different upload or different parameters") from None
        if not created:
            await run_in_threadpool(storage.remove, job_id)
            return job, False
        try:
            await run_in_threadpool(send_job, publisher, job_id, s.queue)
        except Exception:
            log.exception("job %s could not be queued", job_id)
            await run_in_threadpool(store.fail, job_id, "enqueue_failed",
                                    "the job could not be queued")
            created = False  # failed, not an orphan: keep the record, drop the upload
            raise ApiError(503, "broker_unavailable", "the job queue is unavailable") from None
        await run_in_threadpool(store.mark_enqueued, job_id)
        return job, True
    except BaseException:
        if created:
            # The record exists but this request did not finish (client gone, gateway
            # stopping): the message may be out, so cancel rather than delete the record.
            await asyncio.shield(run_in_threadpool(_abandon, store, job_id))
        _discard(storage, job_id, stored)
        raise


def _abandon(store: JobStore, job_id: str) -> None:
    job, _ = store.cancel(job_id)
    if job is not None and job.enqueued_at is None:
        store.discard(job_id)


def cancel_job(job: JobRecord, store: JobStore, storage: Storage) -> None:
    """DELETE: an active job is cancelled (the worker stops at its next progress report); a
    finished one is forgotten. Either way its video goes."""
    gone, _ = store.cancel(job.id)
    if gone is None:
        raise ApiError(404, "job_not_found", f"no job {job.id}")
    storage.remove(job.id)


def read_result(job: JobRecord, store: JobStore) -> dict[str, Any]:
    if job.status != "succeeded":
        raise ApiError(409, f"job_{job.status}", f"job {job.id} is {job.status}")
    result = store.get_result(job.id)
    if result is None:
        raise ApiError(404, "result_expired", f"the result of job {job.id} has expired")
    return result


def list_jobs(owner: str, settings: ServiceSettings, store: JobStore, limit: int,
              offset: int) -> tuple[list[JobRecord], int]:
    if owner == ANONYMOUS:
        # Every keyless caller is the same owner: a list would hand out everyone's job ids.
        raise ApiError(403, "listing_requires_api_key",
                       "listing jobs needs API keys (HAMNET_API_KEYS); without them a job is "
                       "reachable only through the id returned when it was submitted")
    return store.list(owner, limit=limit, offset=offset)


def sweep_orphans(store: JobStore, storage: Storage, older_than_s: float) -> list[str]:
    """Fail queued jobs whose task was never published (their gateway died in between)."""
    failed = []
    for job_id in store.orphans(older_than_s):
        if store.fail(job_id, "enqueue_failed", "the job was never queued (the gateway "
                      "stopped while accepting it); submit it again"):
            storage.remove(job_id)
            failed.append(job_id)
    return failed
