"""``/v1/jobs``: HTTP in, one service call, HTTP out. Ownership is checked by the
:data:`~hamnet_service.deps.OwnedJob` dependency; domain errors become status codes in
:mod:`hamnet_service.errors` and the service functions."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from hamnet_jobs.record import JobRecord, public_view
from starlette.concurrency import run_in_threadpool

from hamnet_service.deps import (
    Models,
    OwnedJob,
    Owner,
    Publisher,
    Registry,
    Settings,
    Storage,
    Store,
    Telemetry,
)
from hamnet_service.errors import responses
from hamnet_service.schemas import ActivityNetResult, Job, JobList, JobSourceRequest, Result
from hamnet_service.services import jobs as service

router = APIRouter(prefix="/v1", tags=["jobs"])

_UPLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    # a `file`, or a remote `source_url` (docs/SOURCES.md)
    "anyOf": [{"required": ["file"]}, {"required": ["source_url"]}],
    "additionalProperties": False,
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "the video"},
        "source_url": {"type": "string", "maxLength": 2048, "description":
                       "instead of `file`: `https://`, `http://` or `s3://bucket/key` of the "
                       "video, downloaded by the worker (docs/SOURCES.md)"},
        "output_uri": {"type": "string", "maxLength": 2048, "description":
                       "`s3://bucket/prefix/` (or `same`, next to an s3:// source): the "
                       "result JSON is also written there"},
        "min_score": {"type": "number", "minimum": 0, "maximum": 1, "description":
                      "drop segments whose calibrated `confidence` (probability of a true "
                      "detection) is below this; on a bundle without calibration, whose raw "
                      "`score` is below it"},
        "min_raw_score": {"type": "number", "description":
                          "drop segments whose raw HAM-Net `score` (unbounded OIC score) is "
                          "below this"},
        "include": {"type": "string", "maxLength": 4096,
                    "description": "comma-separated labels to keep (default: all)"},
        "exclude": {"type": "string", "maxLength": 4096,
                    "description": "comma-separated labels to drop"},
        "callback_url": {"type": "string", "maxLength": 2048, "description":
                         "POSTed the job JSON when it finishes, signed (`Hamnet-Signature`); "
                         "public http(s) hosts only"},
        "tag": {"type": "string", "maxLength": 200, "description": "free text echoed back"},
        "model": {"type": "string", "maxLength": 80, "description":
                  "`NAME` (its latest version) or `NAME@VERSION` from `GET /v1/models`; "
                  "default: `default`. Resolved at submission: the job keeps that version"},
    },
}

IdempotencyKey = Annotated[str | None, Header(
    alias="Idempotency-Key", max_length=128, pattern=r"^[\x21-\x7e]+$",
    description="same key and same content: the same job is returned",
)]


def job_view(job: JobRecord) -> Job:
    links = {"self": f"/v1/jobs/{job.id}"}
    if job.status == "succeeded":
        links["result"] = f"/v1/jobs/{job.id}/result"
    return Job.model_validate({**public_view(job), "links": links})


@router.post(
    "/jobs",
    status_code=202,
    response_model=Job,
    summary="Upload a video (or name a remote one: `source_url`) and start a job",
    responses={202: {"description": "Accepted: the job is queued", "headers": {
                   "Location": {"description": "URL of the job", "schema": {"type": "string"}}}},
               200: {"model": Job, "description": "Idempotency-Key replay: the same job"},
               **responses(400, 401, 404, 408, 409, 413, 415, 422, 429, 500, 503, 507)},
    openapi_extra={"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": _UPLOAD_SCHEMA},
        "application/json": {"schema": JobSourceRequest.model_json_schema()}}}},
)
async def create_job(
    request: Request, response: Response, owner: Owner, settings: Settings, store: Store,
    telemetry: Telemetry, storage: Storage, publisher: Publisher, models: Models,
    registry: Registry, idempotency_key: IdempotencyKey = None,
) -> Job:
    job, created = await service.submit_job(
        request, owner=owner, idempotency_key=idempotency_key, settings=settings,
        store=store, telemetry=telemetry, storage=storage, publisher=publisher, models=models,
        registry=registry,
    )
    if not created:
        response.status_code = 200
        response.headers["Idempotent-Replayed"] = "true"
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return job_view(job)


@router.get("/jobs", response_model=JobList, summary="The caller's recent jobs, newest first",
            responses=responses(401, 403, 422, 503))
def list_jobs(
    owner: Owner, settings: Settings, store: Store,
    limit: int = Query(20, ge=1, le=100),
    offset: int = Query(0, ge=0, le=100_000),
) -> JobList:
    jobs, total = service.list_jobs(owner, settings, store, limit, offset)
    nxt = offset + limit if offset + limit < total else None
    return JobList(jobs=[job_view(j) for j in jobs], total=total, limit=limit, offset=offset,
                   next_offset=nxt)


@router.get("/jobs/{job_id}", response_model=Job, summary="Status, stage and progress of a job",
            responses=responses(401, 404, 422, 503))
def get_job(job: OwnedJob) -> Job:
    return job_view(job)


@router.get(
    "/jobs/{job_id}/result",
    response_model=Result | ActivityNetResult,
    summary="Detected segments (seconds) and video-level class scores",
    responses=responses(401, 404, 409, 422, 503),
)
def get_result(
    job: OwnedJob, store: Store,
    format: Literal["json", "activitynet"] = Query("json", description="`activitynet`: "
                                                  "the research submission format"),
) -> Result | ActivityNetResult:
    result = service.read_result(job, store)
    if format == "activitynet":
        dets = [{"label": s["label"], "score": s["score"], "segment": [s["start"], s["end"]]}
                for s in result.get("segments", [])]
        return ActivityNetResult(version="VERSION 1.3", results={job.id: dets},
                                 external_data={"used": False, "model": result.get("model")})
    return Result.model_validate({**result, "id": job.id})


@router.delete("/jobs/{job_id}", status_code=204, response_class=Response,
               summary="Cancel a job (or forget a finished one): video and result removed",
               responses=responses(401, 404, 422, 503))
async def delete_job(job: OwnedJob, store: Store, storage: Storage) -> Response:
    await run_in_threadpool(service.cancel_job, job, store, storage)
    return Response(status_code=204)
