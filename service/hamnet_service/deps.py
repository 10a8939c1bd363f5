"""FastAPI dependencies: what a route needs, declared in its signature.

A route that takes :data:`OwnedJob` cannot forget the ownership check, because the dependency
does it (a job of another owner answers 404, exactly like a missing one). Tests replace any of
these with ``app.dependency_overrides``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Path
from hamnet_jobs.record import JobRecord
from hamnet_jobs.storage import Storage as _Storage
from hamnet_jobs.store import JobStore
from hamnet_jobs.telemetry import Telemetry as _Telemetry
from starlette.concurrency import run_in_threadpool

from hamnet_service import state
from hamnet_service.auth import caller
from hamnet_service.errors import ApiError
from hamnet_service.settings import ServiceSettings, get_settings

Settings = Annotated[ServiceSettings, Depends(get_settings)]
Owner = Annotated[str, Depends(caller)]
Store = Annotated[JobStore, Depends(state.store)]
Telemetry = Annotated[_Telemetry, Depends(state.telemetry)]
Storage = Annotated[_Storage, Depends(state.storage)]
Publisher = Annotated[Any, Depends(state.publisher)]
Models = Annotated[state.ModelState, Depends(state.get_model_state)]

JobId = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{16,64}$",
                            description="job id (from POST /v1/jobs)")]


async def owned_job(job_id: JobId, owner: Owner, store: Store) -> JobRecord:
    """The job, if the caller owns it; 404 ``job_not_found`` otherwise."""
    job = await run_in_threadpool(store.get, job_id)
    if job is None or job.owner != owner:
        raise ApiError(404, "job_not_found", f"no job {job_id}")
    return job


OwnedJob = Annotated[JobRecord, Depends(owned_job)]
