"""Liveness (the process answers) versus readiness (it can do useful work: Redis reachable,
a worker with the model loaded has sent a heartbeat, the gateway has read the bundle).

``/readyz`` is unauthenticated (load balancers call it), so it shows states, never internal
error text: the details (bundle load errors, exception names) go to the gateway's log and,
with a valid API key, to ``/readyz?detail=true``."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from hamnet_service import metrics
from hamnet_service.auth import is_authenticated
from hamnet_service.deps import Models, Store, Telemetry
from hamnet_service.schemas import Health

router = APIRouter(tags=["health"])
log = logging.getLogger("hamnet.service")


@router.get("/livez", response_model=Health, summary="The gateway process is alive")
def livez() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health,
            responses={503: {"model": Health, "description": "Not ready"}},
            summary="Redis reachable, a worker answering, model loaded")
async def readyz(
    request: Request, store: Store, telemetry: Telemetry, models: Models,
    detail: bool = Query(False, description="with a valid API key: worker error texts"),
) -> JSONResponse:
    checks: dict = {}
    try:
        await run_in_threadpool(store.r.ping)
        checks["redis"] = "ok"
        workers = await run_in_threadpool(telemetry.workers)
    except Exception:
        log.warning("readiness: Redis unreachable", exc_info=True)
        checks["redis"] = "unreachable"
        workers = []
    loaded = [w for w in workers if w.get("model_loaded")]
    checks["workers"] = len(workers)
    checks["workers_with_model"] = len(loaded)
    errors = sorted({w["load_error"] for w in workers if w.get("load_error")})
    if errors:
        checks["worker_errors"] = len(errors)
        if detail and is_authenticated(request):
            checks["worker_error_messages"] = errors[:3]
    bundle = await run_in_threadpool(models.get)
    checks["model"] = "ok" if bundle is not None else "unavailable"
    ok = checks["redis"] == "ok" and loaded and bundle is not None
    body = Health(status="ok" if ok else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}})
async def prometheus() -> Response:
    body = await run_in_threadpool(metrics.render)
    return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")
