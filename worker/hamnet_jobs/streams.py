"""The live-stream contract (docs/STREAMS.md): record, state machine, Redis keys, the event
log, leases, the task name and how the gateway publishes it.

Why one Redis Stream per live stream for events: it is at once the rolling result (``GET
/v1/streams/{id}`` reads its tail, bounded by ``MAXLEN``), the live feed (the gateway's SSE
endpoint blocks on ``XREAD``), and the resume point (entry ids are ``<seq>-1`` with ``seq`` the
event's sequence number, so ``Last-Event-ID: 41`` resumes with ``XRANGE (41-1 +``). No
pub/sub: a subscriber that connects late or reconnects misses nothing still in the bound.

::

    queued --begin--> running --end--> finished | failed | stopped
      |                 \\--lease expired--> queued   (the worker died; resumed elsewhere)
      +--stop--> stopped

Keys (under ``hamnet:``): ``stream:<id>`` (record JSON, TTL), ``stream-events:<id>`` (the
event log, same TTL once terminal), ``stream-seq:<id>`` (event counter), ``streams:<owner>``
(the owner's stream ids by creation time), ``streams:active`` (queued/running ids),
``streams:leases`` (running ids by lease expiry), ``stats:streams`` (counters for
``/metrics``).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

import redis
from pydantic import Field

from hamnet_jobs.record import JobError, utcnow
from hamnet_jobs.records import Extra, RecordStore, StatefulRecord

STREAM_TASK = "hamnet.process_stream"
PREFIX = "hamnet:"
ACTIVE_KEY = f"{PREFIX}streams:active"
LEASES_KEY = f"{PREFIX}streams:leases"
STATS_KEY = f"{PREFIX}stats:streams"
SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "http", "https")
DEFAULT_EVENTS_MAX = 5000

StreamStatus = Literal["queued", "running", "finished", "failed", "stopped"]
TERMINAL: tuple[str, ...] = ("finished", "failed", "stopped")
TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "stopped", "failed"}),
    "running": frozenset({"queued", "finished", "failed", "stopped"}),
    "finished": frozenset(), "failed": frozenset(), "stopped": frozenset(),
}
PRIVATE = frozenset({"owner", "worker", "lease", "source_offset"})


def record_key(stream_id: str) -> str:
    return f"{PREFIX}stream:{stream_id}"


def events_key(stream_id: str) -> str:
    return f"{PREFIX}stream-events:{stream_id}"


def seq_key(stream_id: str) -> str:
    return f"{PREFIX}stream-seq:{stream_id}"


def owner_key(owner: str) -> str:
    return f"{PREFIX}streams:{owner}"


class StreamURLError(ValueError):
    """A stream URL the service will not open (``code``: ``invalid_stream_url``)."""

    code = "invalid_stream_url"


def check_stream_url(url: str, allow_private: bool, resolve: bool = True) -> str:
    """Scheme allow-list (rtsp/rtmp(s), http(s) for HLS playlists and progressive streams),
    then the outbound address policy of :mod:`hamnet_jobs.urls` on the host (loopback and
    private addresses refused unless ``HAMNET_SOURCE_ALLOW_PRIVATE``). The policy checks an
    ``http`` URL with the same host and port, since it knows only web schemes."""
    from hamnet_jobs.urls import URLPolicyError, check_outbound_url

    if not isinstance(url, str) or not url:
        raise StreamURLError("url is required")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise StreamURLError(f"url scheme must be one of {', '.join(SCHEMES)}, got "
                             f"{parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise StreamURLError("url must name a host")
    probe = url if scheme in ("http", "https") else urlunsplit(
        ("https" if scheme.endswith("s") else "http", parts.netloc, parts.path or "/",
         parts.query, ""))
    try:
        check_outbound_url(probe, allow_private=allow_private, resolve=resolve, field="url")
    except URLPolicyError as e:
        raise StreamURLError(str(e)) from None
    return url


class StreamRecord(StatefulRecord):
    """One live stream as stored in Redis (``hamnet:stream:<id>``)."""

    KIND: ClassVar[str] = "stream"
    TRANSITIONS: ClassVar[dict[str, frozenset[str]]] = TRANSITIONS
    TERMINAL: ClassVar[tuple[str, ...]] = TERMINAL
    PRIVATE: ClassVar[frozenset[str]] = PRIVATE

    id: str
    owner: str
    url: str
    status: StreamStatus = "queued"
    state: str | None = Field(None, description="while running: connecting, live, "
                              "reconnecting")
    error: JobError | None = None
    created_at: str = Field(default_factory=utcnow)
    updated_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    origin_at: float | None = Field(None, description="unix time of stream time 0 (the first "
                                    "frame of the first connection)")
    model: dict[str, Any] | None = None
    callback_url: str | None = None
    tag: str | None = None
    attempts: int = 0
    reconnects: int = 0
    segments: int = 0
    last_seq: int = 0
    stream_seconds: float = 0.0
    source_offset: float | None = Field(None, description="source timestamp at stream time 0 "
                                        "(a resumed HLS stream continues its timeline)")
    window: dict[str, Any] | None = None
    callbacks: dict[str, int] = Field(default_factory=lambda: {"delivered": 0, "failed": 0})
    worker: str | None = None
    lease: str | None = None

    def on_terminal(self, status: str) -> None:
        self.state = None


def new_stream_id() -> str:
    return secrets.token_urlsafe(16)


Mutation = Callable[[StreamRecord], bool]


class StreamStore(RecordStore[StreamRecord]):
    """Reads and writes of stream state and events (both sides). ``get``, ``renew`` and the
    transaction loop come from :class:`~hamnet_jobs.records.RecordStore`."""

    record_type = StreamRecord
    record_key = staticmethod(record_key)
    owner_key = staticmethod(owner_key)
    active_key = ACTIVE_KEY
    leases_key = LEASES_KEY
    prune_index = True

    def __init__(self, client: redis.Redis, ttl: int = 7 * 24 * 3600,
                 events_max: int = DEFAULT_EVENTS_MAX) -> None:
        super().__init__(client, ttl)
        self.events_max = int(events_max)

    # ---- records ---------------------------------------------------------------------------
    def _txn(self, stream_id: str, mutate: Mutation,
             extra: Callable[[Any, StreamRecord], None] | None = None) -> StreamRecord | None:
        """Apply ``mutate`` (returns False to leave Redis unchanged) in a WATCH/MULTI; a
        record that became terminal leaves the active and lease sets and its keys get the
        terminal TTL, then ``extra`` queues its own commands."""
        def step(rec: StreamRecord) -> Extra | None:
            if not mutate(rec):
                return None

            def queue(pipe: Any) -> None:
                if rec.terminal:
                    pipe.zrem(ACTIVE_KEY, stream_id)
                    pipe.zrem(LEASES_KEY, stream_id)
                    pipe.expire(record_key(stream_id), self.ttl)
                    pipe.expire(events_key(stream_id), self.ttl)
                    pipe.expire(seq_key(stream_id), self.ttl)
                if extra is not None:
                    extra(pipe, rec)

            return queue

        return super()._txn(stream_id, step)

    def create(self, rec: StreamRecord) -> StreamRecord:
        rec.updated_at = rec.created_at
        return self._insert(rec, lambda pipe: pipe.hincrby(STATS_KEY, "created", 1))

    def list(self, owner: str, limit: int = 20, offset: int = 0
             ) -> tuple[list[StreamRecord], int]:
        return super().list(owner, limit, offset)  # a page of 20 by default, not 50

    def discard(self, stream_id: str, owner: str) -> None:
        """Forget a stream whose task could not be published."""
        pipe = self.r.pipeline()
        pipe.delete(record_key(stream_id), events_key(stream_id), seq_key(stream_id))
        pipe.zrem(owner_key(owner), stream_id)
        pipe.zrem(ACTIVE_KEY, stream_id)
        pipe.execute()

    # ---- worker side -----------------------------------------------------------------------
    def begin(self, stream_id: str, worker: str, lease_s: float, max_attempts: int
              ) -> tuple[StreamRecord | None, str]:
        """Claim the stream: ``run`` (with a fresh lease token in ``rec.lease``), ``skip``
        (gone, terminal, or running under another live lease), ``poison`` (failed after
        ``max_attempts`` lost workers)."""
        action = "skip"

        def mutate(rec: StreamRecord) -> bool:
            nonlocal action
            action = "skip"
            if rec.terminal or rec.status == "running":
                return False
            rec.attempts += 1
            if rec.attempts > max_attempts:
                action = "poison"
                rec.error = JobError(code="worker_lost", message=f"the worker running this "
                                     f"stream was lost {max_attempts} times")
                rec.move("failed")
                return True
            action = "run"
            rec.move("running")
            rec.state, rec.worker = "connecting", worker
            rec.started_at = rec.started_at or utcnow()
            rec.lease = secrets.token_hex(8)
            return True

        def extra(pipe: Any, rec: StreamRecord) -> None:
            if action == "run":
                pipe.zadd(LEASES_KEY, {stream_id: time.time() + lease_s})
            elif action == "poison":
                pipe.hincrby(STATS_KEY, "failed", 1)

        rec = self._txn(stream_id, mutate, extra)
        return rec, (action if rec is not None else "skip")

    def update(self, stream_id: str, token: str, **fields: Any) -> StreamRecord | None:
        """Set fields while the attempt holding ``token`` runs the stream; None when it no
        longer does (stopped by DELETE, expired lease, deleted): stop working."""
        alive = False

        def mutate(rec: StreamRecord) -> bool:
            nonlocal alive
            alive = self.holds(rec, token)
            if not alive:
                return False
            for k, v in fields.items():
                setattr(rec, k, v)
            return bool(fields)

        rec = self._txn(stream_id, mutate)
        return rec if alive else None

    def end(self, stream_id: str, token: str, status: StreamStatus,
            error: tuple[str, str] | None = None) -> StreamRecord | None:
        """The attempt holding ``token`` ends the stream (``finished``/``failed``/``stopped``)."""
        def mutate(rec: StreamRecord) -> bool:
            if not self.holds(rec, token):
                return False
            rec.error = JobError(code=error[0], message=error[1]) if error else None
            rec.move(status)
            return True

        def extra(pipe: Any, rec: StreamRecord) -> None:
            pipe.hincrby(STATS_KEY, status, 1)

        return self._txn(stream_id, mutate, extra)

    def note_callbacks(self, stream_id: str, delivered: int, failed: int) -> None:
        """Final callback counts (delivery finishes after the stream's status is terminal)."""
        def mutate(rec: StreamRecord) -> bool:
            rec.callbacks = {"delivered": delivered, "failed": failed}
            return True

        self._txn(stream_id, mutate)

    def requeue_expired(self, max_attempts: int) -> list[str]:
        """Running streams whose lease expired (their worker died): back to ``queued`` (the
        caller publishes them again) or, past ``max_attempts``, ``failed`` ``worker_lost``."""
        out = []
        for sid in self.r.zrangebyscore(LEASES_KEY, "-inf", time.time()):
            moved = False

            def mutate(rec: StreamRecord) -> bool:
                nonlocal moved
                moved = False
                score = self.lease_deadline(rec.id)
                if rec.status != "running" or score is None or score > time.time():
                    return False
                if rec.attempts >= max_attempts:
                    rec.error = JobError(code="worker_lost", message="the worker running this "
                                         f"stream was lost {rec.attempts} times")
                    rec.move("failed")
                    return True
                rec.move("queued")
                rec.state, rec.worker, rec.lease = None, None, None
                moved = True
                return True

            def extra(pipe: Any, rec: StreamRecord) -> None:
                pipe.zrem(LEASES_KEY, rec.id)
                pipe.hincrby(STATS_KEY, "requeued" if rec.status == "queued" else "failed", 1)

            rec = self._txn(sid, mutate, extra)
            if rec is None:
                self.r.zrem(LEASES_KEY, sid)
            elif moved:
                out.append(sid)
        return out

    # ---- gateway side ----------------------------------------------------------------------
    def stop(self, stream_id: str) -> tuple[StreamRecord | None, str]:
        """DELETE: an active stream becomes ``stopped`` (its worker notices within a heartbeat,
        flushes and closes); a terminal one is forgotten with its events."""
        prev = ""

        def mutate(rec: StreamRecord) -> bool:
            nonlocal prev
            prev = rec.status
            if rec.terminal:
                return False
            rec.move("stopped")
            return True

        def extra(pipe: Any, rec: StreamRecord) -> None:
            pipe.hincrby(STATS_KEY, "stopped", 1)

        rec = self._txn(stream_id, mutate, extra)
        if rec is not None and prev in TERMINAL:
            pipe = self.r.pipeline()
            pipe.delete(record_key(stream_id), events_key(stream_id), seq_key(stream_id))
            pipe.zrem(owner_key(rec.owner), stream_id)
            pipe.execute()
        return rec, prev

    # ---- events ----------------------------------------------------------------------------
    def publish(self, stream_id: str, kind: str, data: dict[str, Any]) -> int:
        """Append an event (``segment``, ``status``, ``end``); returns its sequence number."""
        seq = int(self.r.incr(seq_key(stream_id)))
        body = dict(data, seq=seq, published_at=round(time.time(), 3))
        pipe = self.r.pipeline()
        pipe.xadd(events_key(stream_id), {"type": kind, "data": json.dumps(body)},
                  id=f"{seq}-1", maxlen=self.events_max, approximate=True)
        pipe.expire(seq_key(stream_id), self.ttl)
        pipe.expire(events_key(stream_id), self.ttl)
        if kind == "segment":
            pipe.hincrby(STATS_KEY, "segments", 1)
        pipe.execute()
        return seq

    @staticmethod
    def _decode(entries: Any) -> list[tuple[int, str, dict[str, Any]]]:
        return [(int(eid.split("-")[0]), f["type"], json.loads(f["data"]))
                for eid, f in entries]

    def events(self, stream_id: str, after: int = 0, count: int | None = None
               ) -> list[tuple[int, str, dict[str, Any]]]:
        """Events with sequence number above ``after`` (oldest first), up to ``count``."""
        entries = self.r.xrange(events_key(stream_id), f"({after}-1", "+", count=count)
        return self._decode(entries)

    def tail(self, stream_id: str, count: int) -> list[tuple[int, str, dict[str, Any]]]:
        return list(reversed(self._decode(self.r.xrevrange(events_key(stream_id), "+", "-",
                                                           count=count))))

    def wait(self, stream_id: str, after: int, block_ms: int, count: int = 100
             ) -> list[tuple[int, str, dict[str, Any]]]:
        """Block up to ``block_ms`` for events above ``after`` (the SSE loop)."""
        got = self.r.xread({events_key(stream_id): f"{after}-1"}, count=count, block=block_ms)
        return self._decode(got[0][1]) if got else []

    # ---- counts ----------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        pipe = self.r.pipeline()
        pipe.hgetall(STATS_KEY)
        pipe.zcard(ACTIVE_KEY)
        pipe.zcard(LEASES_KEY)
        raw, active, running = pipe.execute()
        return {"counters": {k: int(v) for k, v in raw.items()}, "active": int(active),
                "running": int(running)}


def payload(stream_id: str) -> list[Any]:
    return [stream_id]


def send_stream(app: Any, stream_id: str, queue: str, max_s: float) -> None:
    """Publish the stream task by name. Per-message time limits above the stream's longest
    allowed duration replace the job limits (a stream runs for hours)."""
    app.send_task(STREAM_TASK, args=payload(stream_id), queue=queue,
                  soft_time_limit=max_s + 120, time_limit=max_s + 240)
