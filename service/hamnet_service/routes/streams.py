"""``/v1/streams``: live streams localized as they play (docs/STREAMS.md). HTTP in, one
service call, HTTP out; ownership is checked by :data:`~hamnet_service.deps.OwnedStream`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from hamnet_service.deps import (
    Models,
    OwnedStream,
    Owner,
    Publisher,
    Registry,
    Settings,
    Streams,
)
from hamnet_service.errors import responses
from hamnet_service.schemas import Stream, StreamCreate, StreamList
from hamnet_service.services import streams as service

router = APIRouter(prefix="/v1", tags=["streams"])


@router.post(
    "/streams", status_code=201, response_model=Stream,
    summary="Start following a live stream (rtsp, rtmp, HLS, http progressive)",
    responses={201: {"description": "Accepted: a stream worker will open it", "headers": {
        "Location": {"description": "URL of the stream", "schema": {"type": "string"}}}},
        **responses(400, 401, 404, 422, 429, 503)},
)
async def create_stream(
    body: StreamCreate, response: Response, owner: Owner, settings: Settings,
    store: Streams, publisher: Publisher, registry: Registry, models: Models,
) -> Stream:
    rec = await run_in_threadpool(service.start_stream, body.model_dump(), owner, settings,
                                  store, publisher, registry, models)
    response.headers["Location"] = f"/v1/streams/{rec.id}"
    return Stream.model_validate(service.view(rec))


@router.get("/streams", response_model=StreamList, summary="The caller's streams, newest first",
            responses=responses(401, 422, 503))
def list_streams(
    owner: Owner, store: Streams,
    limit: int = Query(20, ge=1, le=100), offset: int = Query(0, ge=0, le=100_000),
) -> StreamList:
    recs, total = service.list_streams(owner, store, limit, offset)
    nxt = offset + limit if offset + limit < total else None
    return StreamList(streams=[Stream.model_validate(service.view(r)) for r in recs],
                      total=total, limit=limit, offset=offset, next_offset=nxt)


@router.get("/streams/{stream_id}", response_model=Stream,
            summary="Status of a stream and its rolling result (latest segments)",
            responses=responses(401, 404, 422, 503))
def get_stream(
    rec: OwnedStream, store: Streams,
    segments: int = Query(100, ge=0, le=1000, description="latest segments to include"),
) -> Stream:
    return Stream.model_validate(service.view(rec, store, segments))


@router.get(
    "/streams/{stream_id}/events",
    summary="Server-Sent Events: each segment as it closes (absolute stream time), status "
    "changes, and the end",
    response_class=StreamingResponse,
    responses={200: {"description": "`text/event-stream`; events `segment`, `status`, `end`; "
                     "`id` is the event sequence number (resume with `Last-Event-ID`)",
                     "content": {"text/event-stream": {"schema": {"type": "string"}}}},
               **responses(400, 401, 404, 422, 503)},
)
def stream_events(
    rec: OwnedStream, store: Streams,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    after: int | None = Query(None, ge=0, description="resume after this sequence number "
                              "(the `Last-Event-ID` header wins)"),
) -> StreamingResponse:
    start = service.parse_last_event_id(last_event_id, after)
    return StreamingResponse(
        service.event_feed(rec, store, start), media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.delete("/streams/{stream_id}", status_code=204, response_class=Response,
               summary="Stop a stream (or forget a finished one, with its events)",
               responses=responses(401, 404, 422, 503))
async def delete_stream(rec: OwnedStream, store: Streams) -> Response:
    await run_in_threadpool(service.stop_stream, rec, store)
    return Response(status_code=204)
