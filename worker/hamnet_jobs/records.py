"""What the records kept in Redis (jobs, trainings, datasets, streams) share: a status machine
on the record, and a store of one JSON key per record plus an owner index.

Why a shared base: each of these stores needs the same few things done exactly right — every
status change a WATCH/MULTI read-modify-write (so a cancel racing with a worker resolves to one
outcome), creation of the record, its owner index and its "still active" index in one
pipeline, listing newest first with expired ids pruned, and a lease renewal that never
re-creates a lease someone else removed. Written once here, a fix reaches all of them.

The job record (:mod:`hamnet_jobs.record`) is a :class:`StatefulRecord` too, and the job store
(:mod:`hamnet_jobs.store`) uses the transaction loop, ``get`` and ``list``, with its own
encoding (:meth:`RecordStore.encode`) and extra watched keys; its creation stays its own (it is
tied to idempotency keys).

The bases declare no pydantic fields on purpose: fields of a base class come first in
``model_dump_json``, and the stored JSON of every record must keep its field order.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

import redis
from pydantic import BaseModel, ConfigDict

Extra = Callable[[Any], None]
"""Commands a mutation queues on the transaction's pipeline after the record is written."""


class InvalidTransition(RuntimeError):
    """A status change the state machine does not allow (a bug in the caller)."""


def utcnow() -> str:
    """The timestamps records carry: ISO 8601, UTC, milliseconds, ``Z``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def noop(_: Any) -> None:
    """An :data:`Extra` that queues nothing: "write the record, nothing else"."""
    return None


class PublicRecord(BaseModel):
    """A stored record with fields that never leave the service (``PRIVATE``)."""

    # Records written by a newer version stay readable by an older one during a rollout.
    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    PRIVATE: ClassVar[frozenset[str]] = frozenset()

    if TYPE_CHECKING:  # declared by every subclass (see the module docstring on field order)
        id: str
        owner: str
        updated_at: str | None

    def public(self) -> dict[str, Any]:
        """The record as the API shows it: everything but the ``PRIVATE`` fields."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k not in self.PRIVATE}


class StatefulRecord(PublicRecord):
    """A record with a status machine: subclasses name the ``TRANSITIONS`` allowed from each
    status and the ``TERMINAL`` statuses, so an impossible change is an error in the code
    that attempts it, not a corrupt record. Entering a terminal status stamps
    ``finished_at``, drops the lease and calls :meth:`on_terminal`."""

    KIND: ClassVar[str] = "record"
    TRANSITIONS: ClassVar[Mapping[str, frozenset[str]]]
    TERMINAL: ClassVar[tuple[str, ...]]

    if TYPE_CHECKING:
        status: str
        finished_at: str | None
        lease: str | None

    @property
    def terminal(self) -> bool:
        return self.status in self.TERMINAL

    def move(self, status: str) -> None:
        """Change status, or raise :class:`InvalidTransition`."""
        if status not in self.TRANSITIONS[self.status]:
            raise InvalidTransition(f"{self.KIND} {self.id}: {self.status} -> {status} "
                                    "is not allowed")
        self.status = status
        if status in self.TERMINAL:
            self.finished_at = utcnow()
            self.lease = None
            self.on_terminal(status)

    def on_terminal(self, status: str) -> None:
        """Clear what only means something while the record is active (a subclass hook)."""


# A pydantic record with ``id``, ``owner`` and ``updated_at`` fields.
R = TypeVar("R", bound=BaseModel)


class RecordStore(Generic[R]):
    """One JSON key per record (with a TTL), the owner's ids by creation time, and the ids
    still active. Subclasses set the record type and the key functions; their own methods
    express each status change as a mutation passed to :meth:`_txn`."""

    record_type: type[R]
    record_key: Callable[[str], str]  # a staticmethod of the subclass
    owner_key: Callable[[str], str]  # a staticmethod of the subclass
    active_key: str
    leases_key: str = ""
    # Drop index entries older than the TTL before listing, so the total counts only records
    # that can still exist (the job and stream stores).
    prune_index: bool = False

    def __init__(self, client: redis.Redis, ttl: int) -> None:
        self.r = client
        self.ttl = int(ttl)

    def encode(self, rec: R) -> str:
        """The stored JSON of a record."""
        return rec.model_dump_json()

    def _txn(self, record_id: str, mutate: Callable[[R], Extra | None],
             watch: tuple[str, ...] = ()) -> R | None:
        """Apply ``mutate`` atomically (WATCH/MULTI on the record and ``watch``, retried on a
        concurrent write): it edits the record in place and returns the commands to queue
        with it, or None to leave Redis unchanged. Returns the record as written (or as read,
        when unchanged), or None when it does not exist. The key keeps its TTL;
        ``updated_at`` is stamped."""
        key = self.record_key(record_id)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key, *watch)
                    raw = pipe.get(key)
                    if raw is None:
                        pipe.reset()
                        return None
                    rec = self.record_type.model_validate_json(raw)
                    extra = mutate(rec)
                    if extra is None:
                        pipe.reset()
                        return rec
                    rec.updated_at = utcnow()
                    pipe.multi()
                    pipe.set(key, self.encode(rec), keepttl=True)
                    extra(pipe)
                    pipe.execute()
                    return rec
                except redis.WatchError:
                    continue

    def _insert(self, rec: R, extra: Extra = noop) -> R:
        """Store a new record, index it under its owner and as active, in one pipeline."""
        now = time.time()
        okey = self.owner_key(rec.owner)
        pipe = self.r.pipeline()
        pipe.set(self.record_key(rec.id), self.encode(rec), ex=self.ttl)
        pipe.zadd(okey, {rec.id: now})
        pipe.expire(okey, self.ttl)
        pipe.zadd(self.active_key, {rec.id: now})
        extra(pipe)
        pipe.execute()
        return rec

    def get(self, record_id: str) -> R | None:
        raw = self.r.get(self.record_key(record_id))
        return self.record_type.model_validate_json(raw) if raw else None

    def list(self, owner: str, limit: int = 50, offset: int = 0) -> tuple[list[R], int]:
        """The owner's records, newest first, and the total count. Ids whose record expired
        are dropped from the index as they are met."""
        okey = self.owner_key(owner)
        if self.prune_index:
            self.r.zremrangebyscore(okey, "-inf", time.time() - self.ttl)
        ids = self.r.zrevrange(okey, offset, offset + limit - 1)
        raws = self.r.mget([self.record_key(i) for i in ids]) if ids else []
        out, gone = [], []
        for record_id, raw in zip(ids, raws, strict=True):
            if raw is None:
                gone.append(record_id)
            else:
                out.append(self.record_type.model_validate_json(raw))
        if gone:
            self.r.zrem(okey, *gone)
        return out, int(self.r.zcard(okey))

    # ---- leases (stores whose records run on a worker) -------------------------------------
    @staticmethod
    def holds(rec: Any, token: str) -> bool:
        """Whether the attempt holding lease ``token`` still runs ``rec``."""
        return rec.status == "running" and rec.lease == token

    def lease_deadline(self, record_id: str) -> float | None:
        """Unix time the record's lease expires (None: it holds none)."""
        return self.r.zscore(self.leases_key, record_id)

    def renew(self, record_id: str, token: str, lease_s: float) -> bool:
        """Extend the lease of the attempt holding ``token``; False when it no longer holds
        the record (finished, stopped, or requeued after its lease expired)."""
        rec = self.get(record_id)
        if rec is None or not self.holds(rec, token):
            return False
        # XX: never re-create a lease that a requeue or a terminal status removed meanwhile
        self.r.zadd(self.leases_key, {record_id: time.time() + lease_s}, xx=True)
        return True
