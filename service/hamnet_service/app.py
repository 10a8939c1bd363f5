"""The FastAPI application: routers, error bodies, security headers, request metrics, the
web page (``static/``, written separately) at ``/`` and the interactive API docs at ``/docs``.

``create_app()`` has no side effects beyond building the app: Redis, the bundle and the upload
store are touched on first use, so importing this module (tests, ``openapi.yaml`` generation)
needs no running services.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from hamnet import __version__

from hamnet_service import errors, metrics, state
from hamnet_service.routes import batches, datasets, health, jobs, models, streams, trainings
from hamnet_service.settings import get_settings

log = logging.getLogger("hamnet.service")
STATIC = Path(__file__).parent / "static"

SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"content-security-policy",
     b"default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
     b"style-src 'self' 'unsafe-inline'; script-src 'self'; object-src 'none'; "
     b"frame-ancestors 'none'; base-uri 'none'"),
]


class EdgeMiddleware:
    """Pure ASGI (does not touch the streamed request body): adds security headers, marks API
    responses uncacheable, and times each request by route template."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app = app

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timer = metrics.Timer()
        status = {"code": 500}
        api = scope["path"].startswith("/v1")
        rid = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = rid

        async def send_wrapper(message) -> None:  # noqa: ANN001
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", rid.encode()))
                if api:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            timer.observe(scope["method"], getattr(route, "path", "unmatched"), status["code"])


async def _sweeper() -> None:
    """Remove partial uploads left by a gateway killed mid-upload (ours or a sibling's), and
    fail the jobs such a gateway recorded but never queued."""
    from hamnet_service.services.jobs import sweep_orphans

    s = get_settings()
    failing = False
    while True:
        try:
            await asyncio.to_thread(state.storage().sweep_partials, s.partial_idle_s)
            for job_id in await asyncio.to_thread(sweep_orphans, state.store(),
                                                  state.storage(), s.orphan_after_s):
                log.warning("job %s was recorded but never queued: failed", job_id)
            from hamnet_service.services import datasets as ds_service

            for ds_id in await asyncio.to_thread(ds_service.sweep_stale,
                                                 ds_service.dataset_store(),
                                                 ds_service.blob_store(), state.storage(),
                                                 s.dataset_stale_s):
                log.warning("dataset %s: its validation was interrupted: failed", ds_id)
            failing = False
        except Exception:
            if not failing:  # once per outage, with the traceback
                log.warning("sweeping partial uploads and orphan jobs failed", exc_info=True)
            failing = True
        await asyncio.sleep(min(30.0, s.partial_idle_s))


@contextlib.asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    problem = get_settings().exposure_problem()
    if problem:
        raise RuntimeError(problem)
    if not get_settings().keys:
        log.warning("no API keys (HAMNET_API_KEYS): every caller is anonymous; jobs are "
                    "reachable by id only and cannot be listed")
    if get_settings().storage != "local":
        state.storage()  # fail at start (boto3 missing, bad settings), not on every upload
    task = asyncio.create_task(_sweeper())
    try:
        yield
    finally:
        task.cancel()


def create_app() -> FastAPI:
    app = FastAPI(
        title="hamnet",
        version=__version__,
        description=(
            "Find when actions happen in a video (HAM-Net weakly-supervised temporal action "
            "localization). Upload a video to `POST /v1/jobs`, poll `GET /v1/jobs/{id}`, read "
            "`GET /v1/jobs/{id}/result`. Errors are `{\"error\": {\"code\", \"message\"}}`. "
            "With API keys configured, send `Authorization: Bearer <key>`."
        ),
        lifespan=lifespan,
        # FastAPI's /docs loads Swagger UI from a CDN with an inline script: it would not work
        # offline nor under our CSP. Ours (_mount_docs) serves Swagger UI's files from the
        # swagger-ui-bundle-v2 package and starts it from a script file of our own.
        docs_url=None,
        redoc_url=None,
    )
    errors.install(app)
    app.include_router(jobs.router)
    app.include_router(batches.router)
    app.include_router(models.router)
    app.include_router(health.router)
    app.include_router(datasets.router)
    app.include_router(trainings.router)
    app.include_router(streams.router)
    app.add_middleware(EdgeMiddleware)
    app.add_api_route("/", _index, include_in_schema=False, response_class=HTMLResponse)
    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    _mount_docs(app)
    return app


def _mount_docs(app: FastAPI) -> None:
    """``/docs``: Swagger UI on ``/openapi.json``, every file from this origin (no CDN, works
    offline) and no inline script (``script-src 'self'``): ``static/docs.html`` loads the
    bundle from ``/docs/assets/`` and starts it with ``static/docs.js``."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # the service extra installs it (swagger-ui-bundle-v2)
        log.warning("swagger-ui-bundle-v2 is not installed: no interactive API docs at /docs")
        return
    app.add_api_route("/docs", _docs, include_in_schema=False, response_class=HTMLResponse)
    app.mount("/docs/assets", StaticFiles(directory=str(swagger_ui_path)), name="swagger-ui")


async def _index():  # noqa: ANN202
    page = STATIC / "index.html"
    if page.is_file():
        return FileResponse(page, media_type="text/html")
    return HTMLResponse("<!doctype html><title>hamnet</title><p>hamnet API: see "
                        "/openapi.json</p>")


async def _docs():  # noqa: ANN202
    return FileResponse(STATIC / "docs.html", media_type="text/html")


app = create_app()
