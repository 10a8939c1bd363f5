"""``/v1/batches``: many remote sources, one job each (docs/SOURCES.md). HTTP in, one service
call, HTTP out; ownership by the :data:`~hamnet_service.deps.OwnedBatch` dependency."""

from __future__ import annotations

import functools

from fastapi import APIRouter, Query, Request, Response
from hamnet_jobs.batches import BatchRecord, count, finished
from hamnet_jobs.record import JobRecord
from starlette.concurrency import run_in_threadpool

from hamnet_service.deps import (
    Batches,
    Models,
    OwnedBatch,
    Owner,
    Publisher,
    Registry,
    Settings,
    Store,
    Telemetry,
)
from hamnet_service.errors import responses
from hamnet_service.schemas import Batch, BatchList, BatchRequest
from hamnet_service.services import batches as service
from hamnet_service.services.models import choose_model

router = APIRouter(prefix="/v1", tags=["batches"])


def batch_view(batch: BatchRecord, jobs: list[JobRecord | None]) -> Batch:
    counts = count(jobs)
    items = []
    for job_id, src, job in zip(batch.jobs, batch.sources, jobs, strict=True):
        links = {"self": f"/v1/jobs/{job_id}"}
        if job is not None and job.status == "succeeded":
            links["result"] = f"/v1/jobs/{job_id}/result"
        items.append({"id": job_id, "source": src,
                      "status": job.status if job is not None else "expired",
                      "error": job.error.model_dump() if job is not None and job.error else None,
                      "output": job.output if job is not None else None, "links": links})
    return Batch.model_validate({
        "id": batch.id, "status": "done" if finished(counts) else "active",
        "created_at": batch.created_at, "s3_prefix": batch.s3_prefix,
        "output_uri": batch.output_uri, "tag": batch.tag, "counts": counts, "jobs": items,
        "links": {"self": f"/v1/batches/{batch.id}"}})


@router.post(
    "/batches", status_code=202, response_model=Batch,
    summary="Start one job per remote video: a list of sources or an S3 prefix",
    responses={202: {"description": "Accepted: every job is queued", "headers": {
                   "Location": {"description": "URL of the batch", "schema": {"type": "string"}}}},
               **responses(400, 401, 404, 413, 422, 429, 503)},
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": BatchRequest.model_json_schema()}}}},
)
async def create_batch(
    request: Request, response: Response, owner: Owner, settings: Settings, store: Store,
    batches: Batches, telemetry: Telemetry, publisher: Publisher, models: Models,
    registry: Registry,
) -> Batch:
    batch, jobs = await service.submit_batch(
        request, owner=owner, settings=settings, store=store, batches=batches,
        telemetry=telemetry, publisher=publisher,
        choose=functools.partial(choose_model, registry, models, owner))
    response.headers["Location"] = f"/v1/batches/{batch.id}"
    return batch_view(batch, jobs)


@router.get("/batches", response_model=BatchList, summary="The caller's batches, newest first",
            responses=responses(401, 403, 422, 503))
def list_batches(
    owner: Owner, batches: Batches,
    limit: int = Query(20, ge=1, le=100), offset: int = Query(0, ge=0, le=100_000),
) -> BatchList:
    found, total = service.list_batches(owner, batches, limit, offset)
    nxt = offset + limit if offset + limit < total else None
    return BatchList(batches=[batch_view(b, j) for b, j in found], total=total, limit=limit,
                     offset=offset, next_offset=nxt)


@router.get("/batches/{batch_id}", response_model=Batch,
            summary="Counts by status and every job of a batch",
            responses=responses(401, 404, 422, 503))
async def get_batch(batch: OwnedBatch, batches: Batches) -> Batch:
    return batch_view(batch, await run_in_threadpool(batches.jobs, batch))


@router.delete("/batches/{batch_id}", response_model=Batch,
               summary="Cancel the batch's unfinished jobs (finished ones keep their results)",
               responses=responses(401, 404, 422, 503))
async def cancel_batch(batch: OwnedBatch, batches: Batches, store: Store) -> Batch:
    jobs = await run_in_threadpool(service.cancel_batch, batch, batches, store)
    return batch_view(batch, jobs)
