"""Every error response is ``{"error": {"code", "message"}}``; the code is the stable,
machine-readable part. Routes raise :class:`ApiError`; the handlers here also reshape
FastAPI's own validation errors and Starlette's 404/405 into the same body."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from hamnet_service.schemas import ErrorBody

log = logging.getLogger("hamnet.service")


def request_id(request: Request) -> str:
    """The id the edge middleware gave this request (also sent as ``X-Request-ID``)."""
    rid = getattr(request.state, "request_id", None)
    if not rid:
        rid = request.state.request_id = uuid.uuid4().hex
    return rid


class ApiError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=status, headers=headers
    )


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error statuses a route can return."""
    text = {
        400: "Malformed request", 401: "Missing or invalid API key", 404: "No such job or model", 408: "Upload stalled",
        409: "Conflict", 413: "Upload or form field too large", 415: "Not a video",
        422: "Invalid parameter or unusable video", 429: "Queue full or rate limited",
        500: "Unexpected error (logged with the request id it names)",
        503: "Dependency unavailable", 507: "Upload storage full",
    }
    return {c: {"model": ErrorBody, "description": text.get(c, "Error")} for c in codes}


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 401: "unauthorized"}


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "path"))
            parts.append(f"{loc}: {err.get('msg')}")
        return error_response(422, "invalid_parameter", "; ".join(parts) or "invalid request")

    @app.exception_handler(redis.RedisError)
    async def _redis(_: Request, exc: redis.RedisError) -> JSONResponse:
        return error_response(
            503, "store_unavailable", "the job store is unavailable; retry shortly",
            headers={"Retry-After": "5"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        """A bug or an unforeseen failure: never disguised as bad input. Logged with its
        traceback and the request id, which the answer names so the two can be matched."""
        rid = request_id(request)
        log.error("unexpected error in %s %s (request %s)", request.method, request.url.path,
                  rid, exc_info=exc)
        return error_response(500, "internal_error",
                              f"unexpected error; quote request id {rid} when reporting it",
                              headers={"X-Request-ID": rid})

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return error_response(exc.status_code, code, str(exc.detail), headers)


def _allowed_methods(request: Request) -> list[str]:
    """Starlette's ``Allow`` names only the first route matching the path; a resource served
    by several routes (``GET`` and ``POST /v1/jobs``) must list all of them."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        regex, route_methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and route_methods and regex.match(request.url.path):
            methods |= set(route_methods)
    return sorted(methods)
