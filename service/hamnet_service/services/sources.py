"""Jobs whose video is a remote ``source_url`` instead of an upload (docs/SOURCES.md).

The gateway never downloads: it checks what can be checked cheaply (syntax, allowed scheme,
the address policy on the resolved host, the S3 bucket allow-lists, ``output_uri``) and queues
a job record that carries the URL; the worker downloads into its scratch directory with the
pinned, redirect-vetting connection of :mod:`hamnet_jobs.urls`, enforcing the size limit while
reading. Admission (rate limit, queue depth) has already run in
:func:`hamnet_service.services.jobs.submit_job` when these functions are called.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from hamnet_jobs.queue import send_job
from hamnet_jobs.record import JobRecord, new_job_id
from hamnet_jobs.sources import (
    SourceError,
    SourcePolicy,
    check_source,
    output_target,
    redact_url,
    source_name,
)
from hamnet_jobs.store import IdempotencyConflict, JobStore
from starlette.concurrency import run_in_threadpool

from hamnet_service.errors import ApiError
from hamnet_service.services import jobs as jobs_service
from hamnet_service.settings import ServiceSettings
from hamnet_service.upload import Upload

log = logging.getLogger("hamnet.service")

FORM = "application/x-www-form-urlencoded"


def _ctype(request: Request) -> str:
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower()


def is_json(request: Request) -> bool:
    ctype = _ctype(request)
    return ctype == "application/json" or ctype.endswith("+json")


def is_fields_only(request: Request) -> bool:
    """A body that cannot carry a file: JSON, or a url-encoded form (``curl -d``)."""
    return is_json(request) or _ctype(request) == FORM


async def _read(request: Request, max_bytes: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, "body_too_large", f"the body is larger than {max_bytes} bytes")
    buf = bytearray()
    async for chunk in request.stream():
        buf += chunk
        if len(buf) > max_bytes:
            raise ApiError(413, "body_too_large", f"the body is larger than {max_bytes} bytes")
    return bytes(buf)


async def read_json(request: Request, max_bytes: int) -> Any:
    """The request body as JSON, at most ``max_bytes`` (413 ``body_too_large``)."""
    raw = await _read(request, max_bytes)
    try:
        return json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "malformed_json", "the body is not valid JSON") from None


async def read_fields(request: Request, max_bytes: int) -> dict[str, str]:
    """The fields of a JSON or url-encoded body, as multipart form fields would be."""
    if is_json(request):
        return form_fields(await read_json(request, max_bytes))
    raw = await _read(request, max_bytes)
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "malformed_form", "the form body is not valid") from None
    return dict(pairs)


def form_fields(body: Any, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """A JSON object as the string fields a multipart form would carry, so that both go
    through the same validation (:func:`hamnet_service.services.jobs.parse_params`): numbers
    as text, label lists comma-joined."""
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_parameter", "the JSON body must be an object")
    out: dict[str, str] = {}
    for k, v in body.items():
        if k in skip:
            continue
        if isinstance(v, bool) or v is None or isinstance(v, dict):
            raise ApiError(422, "invalid_parameter", f"{str(k)[:64]}: unsupported value")
        if isinstance(v, (int, float)):
            try:
                out[k] = repr(float(v)) if math.isfinite(v) else "nan"
            except OverflowError:  # an integer beyond a float
                out[k] = "nan"
        elif isinstance(v, list):
            if not all(isinstance(x, str) for x in v):
                raise ApiError(422, "invalid_parameter", f"{str(k)[:64]}: a list of strings")
            out[k] = ",".join(v)
        else:
            out[k] = str(v)
    return out


def policy(settings: ServiceSettings) -> SourcePolicy:
    return SourcePolicy.from_settings(settings)


def api_error(e: SourceError, where: str = "") -> ApiError:
    return ApiError(e.status, e.code, f"{where}{e.message}")


def check_url(url: str, settings: ServiceSettings) -> str:
    """:func:`hamnet_jobs.sources.check_source` as an :class:`ApiError` (422 + code)."""
    try:
        return check_source(url, policy(settings))
    except SourceError as e:
        raise api_error(e) from None


def check_output(output_uri: str | None, source_url: str | None, name: str,
                 settings: ServiceSettings) -> dict[str, Any] | None:
    """The job's initial ``output`` (``{"uri", "written": null}``), or None."""
    try:
        target = output_target(output_uri, source_url, name, policy(settings))
    except SourceError as e:
        raise api_error(e) from None
    return {"uri": target, "written": None} if target else None


def upload_output(up: Upload, settings: ServiceSettings) -> dict[str, Any] | None:
    """``output_uri`` of an upload job: an S3 prefix, named after the uploaded file."""
    return check_output(up.fields.get("output_uri"), None, up.filename or "video", settings)


def fingerprint(url: str, fields: dict[str, str]) -> str:
    """What an Idempotency-Key is bound to for a source job (the store compares it as the
    upload's content hash): the URL and every parameter, so a replay with a different source
    or different options is a 409, not a silent replay."""
    canon = json.dumps({"source_url": url, **fields}, sort_keys=True)
    return "source:" + hashlib.sha256(canon.encode()).hexdigest()


def source_record(job_id: str, owner: str, model: dict[str, Any] | None, url: str, kind: str,
                  extra: dict[str, Any], output: dict[str, Any] | None, sha: str,
                  batch: str | None = None) -> JobRecord:
    return JobRecord(id=job_id, owner=owner, model=model, filename=source_name(url),
                     sha256=sha, source_url=url, source={"uri": redact_url(url), "kind": kind},
                     output=output, batch=batch, **extra)


def enqueue(store: JobStore, publisher: Any, job_id: str, queue: str) -> None:
    """Publish a created job, then mark it enqueued; a broker failure fails the job (never a
    queued orphan) and answers 503."""
    try:
        send_job(publisher, job_id, queue)
    except Exception:
        log.exception("job %s could not be queued", job_id)
        store.fail(job_id, "enqueue_failed", "the job could not be queued")
        raise ApiError(503, "broker_unavailable", "the job queue is unavailable") from None
    store.mark_enqueued(job_id)


async def submit_source_job(
    up: Upload, *, owner: str, scope: str | None, idempotency_key: str | None,
    settings: ServiceSettings, store: JobStore, publisher: Any,
    choose: Callable[[str | None], tuple[dict[str, Any], list[str]]],
) -> tuple[JobRecord, bool]:
    """A job for ``up.fields['source_url']`` (form or JSON body); ``up`` carries no file.
    ``choose(model field)`` resolves the model and its classes (the registry's rules)."""
    if up.size:
        Path(up.path).unlink(missing_ok=True)
        raise ApiError(422, "conflicting_source",
                       "send either a `file` or a `source_url`, not both")
    url = (up.fields.get("source_url") or "").strip()
    if not url:
        raise ApiError(422, "missing_file",
                       "the request has neither a `file` part nor a `source_url`")
    fields = {k: v for k, v in up.fields.items() if k != "source_url"}
    kind = await run_in_threadpool(check_url, url, settings)  # may resolve the host name
    model, classes = await run_in_threadpool(choose, up.fields.get("model"))
    extra = await run_in_threadpool(jobs_service.parse_params, up, classes,
                                    settings.callback_allow_private)
    output = check_output(fields.get("output_uri"), url, source_name(url), settings)
    job_id = new_job_id()
    record = source_record(job_id, owner, model, url, kind, extra, output,
                           fingerprint(url, fields))
    created = False
    try:
        try:
            job, created = await run_in_threadpool(store.create, record, idempotency_key,
                                                   scope)
        except IdempotencyConflict:
            raise ApiError(409, "idempotency_key_reused", "this Idempotency-Key was used for "
                           "a different request") from None
        if not created:
            return job, False
        try:
            await run_in_threadpool(enqueue, store, publisher, job_id, settings.queue)
        except ApiError:
            created = False  # failed, not an orphan: keep the record
            raise
        return job, True
    except BaseException:
        if created:  # the client went away between create and publish
            await asyncio.shield(run_in_threadpool(jobs_service._abandon, store, job_id))
        raise
