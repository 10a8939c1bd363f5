"""Batch use cases: submit many remote sources (a list, or every video under an S3 prefix)
as one job each, read a batch's counts, list an owner's batches, cancel what is left.

Submission order (what keeps it safe): admission (rate limit once per batch, queue depth for
all its jobs) -> every source checked, and every output target, before anything is written
(one bad URL refuses the whole batch with the index that failed: nothing half-created) ->
the batch record -> each job record -> each job published. A broker failure fails the jobs
not yet published (``enqueue_failed``) and answers 503; a gateway that dies in between leaves
records without ``enqueued_at``, which the orphan sweeper fails as for single jobs.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request
from hamnet_jobs.batches import BatchRecord, BatchStore
from hamnet_jobs.record import JobRecord, new_job_id
from hamnet_jobs.sources import SourceError, list_videos, redact_url, s3_client, source_name
from hamnet_jobs.store import JobStore
from hamnet_jobs.telemetry import Telemetry
from starlette.concurrency import run_in_threadpool

from hamnet_service import state
from hamnet_service.auth import ANONYMOUS
from hamnet_service.errors import ApiError
from hamnet_service.services import jobs as jobs_service
from hamnet_service.services import sources
from hamnet_service.settings import ServiceSettings, get_settings
from hamnet_service.upload import Upload

MAX_BODY = 1 << 20
Chooser = Callable[[str | None], tuple[dict[str, Any], list[str]]]


@lru_cache(maxsize=1)
def batch_store() -> BatchStore:
    return BatchStore(state.store().r, ttl=get_settings().job_ttl_s)


def expand(body: Any, settings: ServiceSettings) -> tuple[list[str], str | None, dict[str, str]]:
    """``(source URLs, s3_prefix or None, the other fields as form fields)``."""
    if not isinstance(body, dict):
        raise ApiError(422, "invalid_parameter", "the JSON body must be an object")
    srcs, prefix = body.get("sources"), body.get("s3_prefix")
    if (srcs is None) == (prefix is None):
        raise ApiError(422, "invalid_batch", "send exactly one of `sources` (a list of URLs) "
                       "and `s3_prefix`")
    if "source_url" in body:
        raise ApiError(422, "unknown_field", "a batch takes `sources`, not `source_url`")
    fields = sources.form_fields(body, skip=("sources", "s3_prefix"))
    limit = settings.batch_max_sources
    if prefix is not None:
        if not isinstance(prefix, str):
            raise ApiError(422, "invalid_parameter", "s3_prefix must be a string")
        try:
            pol = sources.policy(settings)
            # the bucket must be one sources may come from
            sources.check_source(prefix.rstrip("/") + "/x", pol, resolve=False)
            client = s3_client(settings.s3_endpoint_url, settings.s3_region,
                               settings.source_timeout_s)
            urls = list_videos(prefix, client, limit)
        except SourceError as e:
            raise sources.api_error(e, "s3_prefix: ") from None
        return urls, prefix, fields
    if not isinstance(srcs, list) or not all(isinstance(u, str) for u in srcs):
        raise ApiError(422, "invalid_parameter", "sources must be a list of URL strings")
    if not srcs:
        raise ApiError(422, "batch_empty", "sources is empty")
    if len(srcs) > limit:
        raise ApiError(422, "batch_too_large", f"{len(srcs)} sources; at most {limit} a batch "
                       "(HAMNET_BATCH_MAX_SOURCES)")
    return [u.strip() for u in srcs], None, fields


def _check_all(urls: list[str], fields: dict[str, str],
               settings: ServiceSettings) -> tuple[list[str], list[dict[str, Any] | None]]:
    """Every source and output target, or the first failure as ``sources[i]: ...``."""
    kinds, outputs, seen = [], [], set()
    pol = sources.policy(settings)
    for i, url in enumerate(urls):
        try:
            kinds.append(sources.check_source(url, pol))
            out = sources.output_target(fields.get("output_uri"), url, source_name(url), pol)
        except SourceError as e:
            raise sources.api_error(e, f"sources[{i}]: ") from None
        if out is not None:
            if out in seen:
                raise ApiError(422, "output_collision", f"sources[{i}]: its result would "
                               f"overwrite another's ({out}); sources need distinct names")
            seen.add(out)
        outputs.append({"uri": out, "written": None} if out else None)
    return kinds, outputs


async def submit_batch(
    request: Request, *, owner: str, settings: ServiceSettings, store: JobStore,
    batches: BatchStore, telemetry: Telemetry, publisher: Any, choose: Chooser,
) -> tuple[BatchRecord, list[JobRecord | None]]:
    s = settings
    body = await sources.read_json(request, MAX_BODY)
    client = request.client.host if request.client else ""
    urls, prefix, fields = await run_in_threadpool(expand, body, s)
    wait = await run_in_threadpool(telemetry.rate_hit,
                                   owner if owner != ANONYMOUS else f"ip:{client}",
                                   s.rate_limit_per_minute)
    if wait:
        raise ApiError(429, "rate_limited", "too many jobs submitted; retry later",
                       headers={"Retry-After": str(wait)})
    queued = (await run_in_threadpool(store.counts))["queued"]
    if queued + len(urls) > s.max_queue:
        raise ApiError(429, "queue_full", f"{queued} jobs are waiting and the queue holds "
                       f"{s.max_queue}; retry later or send fewer sources",
                       headers={"Retry-After": str(s.queue_retry_after_s)})
    model, classes = await run_in_threadpool(choose, fields.get("model"))
    extra = await run_in_threadpool(jobs_service.parse_params, Upload(Path(), fields=fields),
                                    classes, s.callback_allow_private)
    kinds, outputs = await run_in_threadpool(_check_all, urls, fields, s)
    batch = BatchRecord(owner=owner, jobs=[new_job_id() for _ in urls],
                        sources=[redact_url(u) for u in urls], s3_prefix=prefix,
                        output_uri=fields.get("output_uri"), tag=extra.get("tag"))
    await run_in_threadpool(_create, batch, urls, kinds, outputs, model, extra, fields,
                            store, batches, publisher, s.queue)
    return batch, await run_in_threadpool(batches.jobs, batch)


def _create(batch: BatchRecord, urls: list[str], kinds: list[str],
            outputs: list[dict[str, Any] | None], model: dict[str, Any], extra: dict[str, Any],
            fields: dict[str, str], store: JobStore, batches: BatchStore, publisher: Any,
            queue: str) -> None:
    batches.create(batch)
    for job_id, url, kind, out in zip(batch.jobs, urls, kinds, outputs, strict=True):
        record = sources.source_record(job_id, batch.owner, model, url, kind, extra, out,
                                       sources.fingerprint(url, fields), batch=batch.id)
        store.create(record)
    for i, job_id in enumerate(batch.jobs):
        try:
            sources.enqueue(store, publisher, job_id, queue)
        except ApiError:
            for rest in batch.jobs[i + 1:]:
                store.fail(rest, "enqueue_failed", "the job could not be queued")
            raise


def list_batches(owner: str, batches: BatchStore, limit: int,
                 offset: int) -> tuple[list[tuple[BatchRecord, list[JobRecord | None]]], int]:
    if owner == ANONYMOUS:
        raise ApiError(403, "listing_requires_api_key",
                       "listing batches needs API keys (HAMNET_API_KEYS); without them a batch "
                       "is reachable only through the id returned when it was submitted")
    found, total = batches.list(owner, limit=limit, offset=offset)
    return [(b, batches.jobs(b)) for b in found], total


def cancel_batch(batch: BatchRecord, batches: BatchStore,
                 store: JobStore) -> list[JobRecord | None]:
    """Cancel every job of the batch that has not finished; finished ones keep their
    results. Returns the jobs as they are now."""
    for job in batches.jobs(batch):
        if job is not None and not job.terminal:
            store.cancel(job.id)
    return batches.jobs(batch)


