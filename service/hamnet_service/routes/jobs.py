"""``/v1/jobs``: the only place where domain errors (video, bundle, idempotency) become HTTP
status codes."""

from __future__ import annotations

import asyncio
import math
from typing import Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from hamnet_service import state
from hamnet_service.auth import ANONYMOUS, caller
from hamnet_service.errors import ApiError, responses
from hamnet_service.schemas import ActivityNetResult, Job, JobList, Result
from hamnet_service.settings import get_settings
from hamnet_service.upload import Upload, receive

router = APIRouter(prefix="/v1", tags=["jobs"])

JOB_ID = Path(pattern=r"^[A-Za-z0-9_-]{16,64}$", description="job id (from POST /v1/jobs)")
# Decoders that PyAV happily opens as a one-frame "video" (image2 demuxer).
_STILL_CODECS = {"png", "mjpeg", "bmp", "tiff", "webp", "jpeg2000", "jpegls", "ppm", "pgm",
                 "pbm", "pam", "qoi", "sgi", "targa", "dpx", "exr", "jpegxl"}
_FIELDS = ("min_score", "include", "exclude", "callback_url", "tag")

_UPLOAD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["file"],
    "additionalProperties": False,
    "properties": {
        "file": {"type": "string", "format": "binary", "description": "the video"},
        "min_score": {"type": "number", "minimum": 0, "maximum": 1,
                      "description": "drop segments scoring below this"},
        "include": {"type": "string", "maxLength": 4096,
                    "description": "comma-separated labels to keep (default: all)"},
        "exclude": {"type": "string", "maxLength": 4096,
                    "description": "comma-separated labels to drop"},
        "callback_url": {"type": "string", "maxLength": 2048, "description":
                         "POSTed the job JSON when it finishes; public http(s) hosts only"},
        "tag": {"type": "string", "maxLength": 200, "description": "free text echoed back"},
    },
}


def job_view(job: dict[str, Any]) -> Job:
    from hamnet_worker.jobs import public_view

    view = public_view(job)
    links = {"self": f"/v1/jobs/{job['id']}"}
    if job["status"] == "succeeded":
        links["result"] = f"/v1/jobs/{job['id']}/result"
    return Job.model_validate({**view, "links": links})


def _owned(job_id: str, owner: str) -> dict[str, Any]:
    job = state.store().get(job_id)
    if job is None or job.get("owner") != owner:
        raise ApiError(404, "job_not_found", f"no job {job_id}")
    return job


def _labels(raw: str | None, classes: list[str], name: str) -> list[str] | None:
    if raw is None or not raw.strip():
        return None
    labels = [x.strip() for x in raw.split(",") if x.strip()]
    unknown = [x for x in labels if x not in classes]
    if unknown:
        raise ApiError(422, "unknown_label",
                       f"{name}: unknown label(s) {unknown[:5]}; see GET /v1/models")
    return labels


def _params(up: Upload, classes: list[str]) -> dict[str, Any]:
    from hamnet_worker.callbacks import CallbackURLError, check_callback_url

    unknown = sorted(set(up.fields) - set(_FIELDS))
    if unknown:
        raise ApiError(422, "unknown_field", f"unknown form field(s): {unknown[:5]}")
    f = up.fields
    out: dict[str, Any] = {"params": {}}
    if f.get("min_score", "").strip():
        try:
            v = float(f["min_score"])
        except ValueError:
            v = math.nan
        if not 0.0 <= v <= 1.0:
            raise ApiError(422, "invalid_parameter", "min_score must be a number in [0, 1]")
        out["params"]["min_score"] = v
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
            out["callback_url"] = check_callback_url(
                url, allow_private=get_settings().callback_allow_private
            )
        except CallbackURLError as e:
            raise ApiError(422, e.code, str(e)) from None
    return out


def _probe(path: Any, filename: str) -> dict[str, Any]:
    """Check the content (not the client's Content-Type) with PyAV; map why it is unusable."""
    from hamnet.errors import (
        CorruptVideoError,
        NotAVideoError,
        NoVideoStreamError,
        VideoError,
        VideoTooShortError,
    )
    from hamnet.video.decode import probe

    s = get_settings()
    try:
        info = probe(path)
    except NotAVideoError:
        raise ApiError(415, "not_a_video", f"{filename}: not a video file") from None
    except NoVideoStreamError:
        raise ApiError(415, "no_video_stream", f"{filename}: the file has no video stream") \
            from None
    except CorruptVideoError:
        raise ApiError(422, "corrupt_video", f"{filename}: the video cannot be decoded") \
            from None
    except VideoTooShortError:
        raise ApiError(422, "video_too_short", f"{filename}: the video is too short") from None
    except VideoError as e:
        raise ApiError(422, getattr(e, "code", "invalid_video"), f"{filename}: unusable video") \
            from None
    except Exception:  # a decoder surprise on hostile input is still the input's fault
        raise ApiError(422, "invalid_video", f"{filename}: the video cannot be read") from None
    if info.codec in _STILL_CODECS and info.duration <= 0 and info.num_frames_est <= 1:
        raise ApiError(415, "not_a_video", f"{filename}: a still image, not a video")
    if info.width < 16 or info.height < 16:
        raise ApiError(422, "resolution_too_small",
                       f"{filename}: {info.width}x{info.height} is below 16x16 pixels")
    if info.width > s.max_dimension or info.height > s.max_dimension:
        raise ApiError(422, "resolution_too_large",
                       f"{filename}: {info.width}x{info.height} exceeds {s.max_dimension} px")
    if not (0 < info.fps <= 1000) or not math.isfinite(info.duration) or info.duration < 0:
        raise ApiError(422, "invalid_timing", f"{filename}: implausible frame rate or duration")
    if (0 < info.duration < s.min_duration_s) or info.num_frames_est == 1:
        raise ApiError(422, "video_too_short",
                       f"{filename}: shorter than {s.min_duration_s:g} s")
    if info.duration > s.max_duration_s:
        raise ApiError(422, "video_too_long",
                       f"{filename}: {info.duration:.0f} s exceeds {s.max_duration_s:.0f} s")
    return {"duration": info.duration, "fps": info.fps, "width": info.width,
            "height": info.height, "rotation": info.rotation, "codec": info.codec}


def _discard(storage: Any, job_id: str, stored: bool) -> None:
    """Error path of ``create_job``: delete whatever the request stored. Local files go at once;
    an object is deleted in a thread, so that a slow or unreachable object store never blocks
    the event loop (and a cancelled request still cleans up)."""
    if storage.kind == "local":
        storage.remove(job_id)
        return
    storage.partial_path(job_id).unlink(missing_ok=True)
    if stored:
        asyncio.get_running_loop().run_in_executor(None, storage.remove, job_id)


@router.post(
    "/jobs",
    status_code=202,
    response_model=Job,
    summary="Upload a video and start a job",
    responses={202: {"description": "Accepted: the job is queued", "headers": {
                   "Location": {"description": "URL of the job", "schema": {"type": "string"}}}},
               200: {"model": Job, "description": "Idempotency-Key replay: the same job"},
               **responses(400, 401, 408, 409, 413, 415, 422, 429, 503, 507)},
    openapi_extra={"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": _UPLOAD_SCHEMA}}}},
)
async def create_job(
    request: Request,
    response: Response,
    owner: str = Depends(caller),
    idempotency_key: str | None = Header(
        None, alias="Idempotency-Key", max_length=128, pattern=r"^[\x21-\x7e]+$",
        description="same key and same content: the same job is returned",
    ),
) -> Job:
    from hamnet_worker.celery_app import send_job
    from hamnet_worker.jobs import IdempotencyConflict, new_job_id
    from hamnet_worker.storage import StorageUnavailable

    s = get_settings()
    store, storage = state.store(), state.storage()
    model = await run_in_threadpool(state.model_state.ref)
    if model is None:
        raise ApiError(503, "model_unavailable", "the model bundle is not available yet")
    client = owner if owner != ANONYMOUS else f"ip:{request.client.host if request.client else ''}"
    # Redis calls run in the thread pool: during a Redis restart the client retries for
    # seconds, which must not freeze the event loop (and every other request) meanwhile.
    wait = await run_in_threadpool(store.rate_hit, client, s.rate_limit_per_minute)
    if wait:
        raise ApiError(429, "rate_limited", "too many jobs submitted; retry later",
                       headers={"Retry-After": str(wait)})
    if (await run_in_threadpool(store.counts))["queued"] >= s.max_queue:
        raise ApiError(429, "queue_full", f"{s.max_queue} jobs are waiting; retry later",
                       headers={"Retry-After": str(s.queue_retry_after_s)})
    job_id = new_job_id()
    up = await receive(request, storage.partial_path(job_id), s.max_upload_bytes,
                       s.max_field_bytes, s.max_fields, idle_s=s.partial_idle_s)
    stored = False  # the upload may be in the object store (from the start of the commit on)
    try:
        bundle = state.model_state.get()
        extra = await run_in_threadpool(_params, up, list(bundle.classes))
        video = await run_in_threadpool(_probe, up.path, up.filename)
        stored = True
        try:  # local: a rename into uploads/; S3: upload to the bucket, local file deleted
            await run_in_threadpool(storage.commit, job_id)
        except StorageUnavailable:
            raise ApiError(503, "storage_unavailable", "the upload store is unavailable; "
                           "retry shortly", headers={"Retry-After": "5"}) from None
        record = {
            "id": job_id, "owner": owner, "model": model, "filename": up.filename,
            "size_bytes": up.size, "sha256": up.sha256, "video": video, **extra,
        }
        try:
            job, created = await run_in_threadpool(store.create, record, idempotency_key)
        except IdempotencyConflict:
            raise ApiError(409, "idempotency_key_reused",
                           "this Idempotency-Key was used for a different upload") from None
        if not created:
            await run_in_threadpool(storage.remove, job_id)
            response.status_code = 200
            response.headers["Idempotent-Replayed"] = "true"
            response.headers["Location"] = f"/v1/jobs/{job['id']}"
            return job_view(job)
        try:
            await run_in_threadpool(send_job, state.celery_client(), job_id, s.queue)
        except Exception:
            await run_in_threadpool(store.fail, job_id, "enqueue_failed",
                                    "the job could not be queued")
            raise ApiError(503, "broker_unavailable", "the job queue is unavailable") from None
    except BaseException:
        _discard(storage, job_id, stored)
        raise
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return job_view(job)


@router.get("/jobs", response_model=JobList, summary="The caller's recent jobs, newest first",
            responses=responses(401, 422, 503))
def list_jobs(
    owner: str = Depends(caller),
    limit: int = Query(20, ge=1, le=100),
    offset: int = Query(0, ge=0, le=100_000),
) -> JobList:
    jobs, total = state.store().list(owner, limit=limit, offset=offset)
    nxt = offset + limit if offset + limit < total else None
    return JobList(jobs=[job_view(j) for j in jobs], total=total, limit=limit, offset=offset,
                   next_offset=nxt)


@router.get("/jobs/{job_id}", response_model=Job, summary="Status, stage and progress of a job",
            responses=responses(401, 404, 422, 503))
def get_job(job_id: str = JOB_ID, owner: str = Depends(caller)) -> Job:
    return job_view(_owned(job_id, owner))


@router.get(
    "/jobs/{job_id}/result",
    response_model=Result | ActivityNetResult,
    summary="Detected segments (seconds) and video-level class scores",
    responses=responses(401, 404, 409, 422, 503),
)
def get_result(
    job_id: str = JOB_ID,
    owner: str = Depends(caller),
    format: Literal["json", "activitynet"] = Query("json", description="`activitynet`: "
                                                  "the research submission format"),
) -> Result | ActivityNetResult:
    job = _owned(job_id, owner)
    if job["status"] != "succeeded":
        raise ApiError(409, f"job_{job['status']}", f"job {job_id} is {job['status']}")
    result = state.store().get_result(job_id)
    if result is None:
        raise ApiError(404, "result_expired", f"the result of job {job_id} has expired")
    if format == "activitynet":
        dets = [{"label": s["label"], "score": s["score"], "segment": [s["start"], s["end"]]}
                for s in result.get("segments", [])]
        return ActivityNetResult(version="VERSION 1.3", results={job_id: dets},
                                 external_data={"used": False, "model": result.get("model")})
    return Result.model_validate({**result, "id": job_id})


@router.delete("/jobs/{job_id}", status_code=204, response_class=Response,
               summary="Cancel a job (or forget a finished one): video and result removed",
               responses=responses(401, 404, 422, 503))
def delete_job(job_id: str = JOB_ID, owner: str = Depends(caller)) -> Response:
    _owned(job_id, owner)
    job, _ = state.store().cancel(job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no job {job_id}")
    state.storage().remove(job_id)
    return Response(status_code=204)
