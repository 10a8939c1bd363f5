"""Live-stream use cases (docs/STREAMS.md): start, read, list, stop, and the Server-Sent
Events feed.

Admission: a stream occupies one worker slot for as long as it plays, so a stream is accepted
only while a slot is free (slots are the stream-worker children with a live slot heartbeat;
``429 streams_busy`` otherwise, ``503 no_stream_worker`` when no stream worker runs). The URL
is checked at submit time against the scheme allow-list and the outbound address policy
(``HAMNET_SOURCE_ALLOW_PRIVATE``), like a remote source.

SSE: events are read from the stream's Redis event log with a blocking ``XREAD`` (in a thread),
so a client that connects late, or reconnects with ``Last-Event-ID``, gets everything still
in the log after that sequence number; a comment line every ``KEEPALIVE_S`` keeps proxies from
closing an idle feed; the feed ends after the ``end`` event (or, if no worker will ever write
one, soon after the stream became terminal).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from functools import lru_cache
from typing import Any

from hamnet_jobs.record import JobError
from hamnet_jobs.streams import (
    StreamRecord,
    StreamStore,
    StreamURLError,
    check_stream_url,
    new_stream_id,
    send_stream,
)
from hamnet_jobs.urls import URLPolicyError, check_callback_url
from starlette.concurrency import run_in_threadpool

from hamnet_service import state
from hamnet_service.errors import ApiError
from hamnet_service.settings import ServiceSettings, get_settings

SLOT_PATTERN = "hamnet:stream-slot:*"
KEEPALIVE_S = 15.0
BLOCK_MS = 5000
END_GRACE_S = 10.0  # a terminal stream without an ``end`` event closes the feed after this


@lru_cache(maxsize=1)
def get_stream_store() -> StreamStore:
    s = get_settings()
    return StreamStore(state.store().r, ttl=s.job_ttl_s, events_max=s.stream_events_max)


def slots(store: StreamStore) -> tuple[int, int]:
    """``(slots, busy)``: stream-worker children with a live slot heartbeat, and how many of
    them play a stream."""
    found = list(store.r.scan_iter(match=SLOT_PATTERN, count=100))
    infos = [json.loads(v) for v in store.r.mget(found) if v] if found else []
    return len(infos), sum(1 for i in infos if i.get("busy"))


def start_stream(body: dict[str, Any], owner: str, settings: ServiceSettings,
                 store: StreamStore, publisher: Any, registry: Any, models: Any
                 ) -> StreamRecord:
    from hamnet_service.services.models import choose_model

    url = body.get("url")
    try:
        check_stream_url(url, allow_private=settings.source_allow_private)
    except StreamURLError as e:
        raise ApiError(422, e.code, str(e)) from None
    callback_url = body.get("callback_url")
    if callback_url:
        try:
            check_callback_url(callback_url, allow_private=settings.callback_allow_private)
        except URLPolicyError as e:
            raise ApiError(422, "invalid_callback_url", str(e)) from None
    model, _ = choose_model(registry, models, owner, body.get("model"))
    total, _busy = slots(store)
    if total == 0:
        raise ApiError(503, "no_stream_worker", "no worker takes live streams right now "
                       "(start one with `hamnet worker --streams only`)",
                       headers={"Retry-After": "30"})
    active = store.stats()["active"]
    if active >= total:
        raise ApiError(429, "streams_busy", f"all {total} stream slot(s) are taken; stop a "
                       "stream or try later", headers={"Retry-After": "30"})
    rec = StreamRecord(id=new_stream_id(), owner=owner, url=url, model=model,
                       callback_url=callback_url or None, tag=body.get("tag"))
    store.create(rec)
    try:
        send_stream(publisher, rec.id, settings.stream_queue, settings.stream_max_s)
    except Exception:
        store.discard(rec.id, owner)
        raise ApiError(503, "queue_unavailable", "the stream could not be queued") from None
    return rec


def get_owned(stream_id: str, owner: str, store: StreamStore) -> StreamRecord:
    rec = store.get(stream_id)
    if rec is None or rec.owner != owner:
        raise ApiError(404, "stream_not_found", f"no stream {stream_id}")
    return rec


def view(rec: StreamRecord, store: StreamStore | None = None, segments: int = 0
         ) -> dict[str, Any]:
    """The public record, its links and (``segments`` > 0) the rolling result: the latest
    published segments, oldest first."""
    out = rec.public() | {"links": {"self": f"/v1/streams/{rec.id}",
                                    "events": f"/v1/streams/{rec.id}/events"}}
    if store is not None and segments > 0:
        tail = store.tail(rec.id, count=max(segments * 2, 50))
        out["recent"] = [d for _, kind, d in tail if kind == "segment"][-segments:]
    return out


def list_streams(owner: str, store: StreamStore, limit: int, offset: int
                 ) -> tuple[list[StreamRecord], int]:
    return store.list(owner, limit, offset)


def stop_stream(rec: StreamRecord, store: StreamStore) -> None:
    """DELETE: stop an active stream (its worker flushes and writes the ``end`` event; a
    stream still queued gets its ``end`` event here), or forget a terminal one."""
    _, prev = store.stop(rec.id)
    if prev == "queued":
        store.publish(rec.id, "end", {"status": "stopped", "error": None, "segments": 0})


def _sse(seq: int | None, kind: str, data: dict[str, Any]) -> bytes:
    head = f"id: {seq}\n" if seq is not None else ""
    return f"{head}event: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def event_feed(rec: StreamRecord, store: StreamStore, after: int
                     ) -> AsyncIterator[bytes]:
    """The SSE body: ``retry``, then every event above ``after`` as it is published."""
    yield b"retry: 3000\n\n"
    last_send = time.monotonic()
    terminal_since: float | None = None
    while True:
        events = await run_in_threadpool(store.wait, rec.id, after, BLOCK_MS)
        for seq, kind, data in events:
            after = seq
            yield _sse(seq, kind, data)
            last_send = time.monotonic()
            if kind == "end":
                return
        if events:
            continue
        if time.monotonic() - last_send >= KEEPALIVE_S:
            yield b": keep-alive\n\n"
            last_send = time.monotonic()
        cur = await run_in_threadpool(store.get, rec.id)
        if cur is None:
            yield _sse(None, "end", {"status": "gone", "error": None})
            return
        if cur.terminal:
            terminal_since = terminal_since or time.monotonic()
            if time.monotonic() - terminal_since > END_GRACE_S:
                err = cur.error.model_dump() if isinstance(cur.error, JobError) else None
                yield _sse(None, "end", {"status": cur.status, "error": err,
                                         "segments": cur.segments})
                return


def parse_last_event_id(header: str | None, query: int | None) -> int:
    """``Last-Event-ID`` (what EventSource sends when it reconnects) wins over ``?after=``."""
    if header:
        try:
            return max(0, int(header.strip()))
        except ValueError:
            raise ApiError(400, "invalid_last_event_id",
                           "Last-Event-ID must be an event sequence number") from None
    return max(0, int(query or 0))
