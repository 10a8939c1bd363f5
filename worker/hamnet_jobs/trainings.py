"""Training jobs: the record (``hamnet:training:<id>``), its store and the ``train`` task contract.

The status machine is the job's (:data:`hamnet_jobs.record.TRANSITIONS`): ``queued -> running
-> succeeded | failed | cancelled``, and ``running -> queued`` when the training worker died
(its lease expired). A training also carries its ``stage`` (``fetch``, ``features``,
``train``, ``bundle``, ``publish``), the ``epoch`` it is at and a ``history`` of one row per
finished epoch ``{epoch, loss, loss_1, loss_2, loss_norm, loss_guide, val_map, seconds}``,
which the web page plots while it trains.

Leases work as for jobs (:mod:`hamnet_jobs.store`): the running attempt renews its lease from a
heartbeat thread; a trainer that finds an expired lease puts the training back in ``queued``
and publishes a new message; the next attempt resumes from the last epoch checkpoint in the
blob store (``trainings/<id>/checkpoint.pt``). The attempt that lost its lease can no longer
write (its token no longer matches), so a training never runs twice at once.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, ClassVar

import redis
from pydantic import Field

from hamnet_jobs.record import (
    TERMINAL,
    TRANSITIONS,
    JobError,
    Status,
    new_job_id,
    utcnow,
)
from hamnet_jobs.records import Extra, RecordStore, StatefulRecord, noop

TRAIN_TASK = "hamnet.train"
TRAIN_QUEUE = "train"
STAGES = ("fetch", "features", "train", "bundle", "publish")
BACKBONES = ("motion",)
PREFIX = "hamnet:"
LEASES_KEY = f"{PREFIX}train-leases"
ACTIVE_KEY = f"{PREFIX}train-active"
TRAINING_PRIVATE = frozenset({"owner", "lease", "worker"})


def training_key(training_id: str) -> str:
    return f"{PREFIX}training:{training_id}"


def owner_trainings_key(owner: str) -> str:
    return f"{PREFIX}trainings:{owner}"


def trainer_key(name: str) -> str:
    """Heartbeat of a training worker (not ``worker:*``: those are inference workers)."""
    return f"{PREFIX}trainer:{name}"


def checkpoint_key(training_id: str) -> str:
    return f"trainings/{training_id}/checkpoint.pt"


def training_prefix(training_id: str) -> str:
    return f"trainings/{training_id}"


class TrainingRecord(StatefulRecord):
    """One training as stored in Redis (``hamnet:training:<id>``); the job's status machine."""

    KIND: ClassVar[str] = "training"
    TRANSITIONS: ClassVar[dict[str, frozenset[str]]] = TRANSITIONS
    TERMINAL: ClassVar[tuple[str, ...]] = TERMINAL
    PRIVATE: ClassVar[frozenset[str]] = TRAINING_PRIVATE

    id: str = Field(default_factory=new_job_id)
    owner: str
    name: str
    dataset: str
    backbone: str = "motion"
    epochs: int = Field(default=20, ge=1, le=500)
    validation_fraction: float = Field(default=0.2, ge=0.0, le=0.5)
    seed: int = 0
    status: Status = "queued"
    stage: str | None = None
    progress: int = Field(default=0, ge=0, le=100)
    stage_progress: dict[str, Any] | None = None
    epoch: int = 0
    history: list[dict[str, Any]] = Field(default_factory=list)
    attempts: int = 0
    requeues: int = 0
    resumed_from_epoch: int | None = None
    error: JobError | None = None
    model: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    split: dict[str, int] | None = None
    created_at: str = Field(default_factory=utcnow)
    updated_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    worker: str | None = None
    lease: str | None = None

    def on_terminal(self, status: str) -> None:
        if status != "succeeded":
            self.stage = None


def send_training(app: Any, training_id: str) -> None:
    """Publish the ``train`` task by name (the gateway never imports the trainer)."""
    app.send_task(TRAIN_TASK, args=[training_id], queue=TRAIN_QUEUE)


class TrainingStore(RecordStore[TrainingRecord]):
    """Reads and writes of training records (``get``, ``list``, ``renew`` and the
    transaction loop come from :class:`~hamnet_jobs.records.RecordStore`)."""

    record_type = TrainingRecord
    record_key = staticmethod(training_key)
    owner_key = staticmethod(owner_trainings_key)
    active_key = ACTIVE_KEY
    leases_key = LEASES_KEY

    def __init__(self, client: redis.Redis, ttl: int = 30 * 24 * 3600) -> None:
        super().__init__(client, ttl)

    def create(self, rec: TrainingRecord) -> TrainingRecord:
        rec.updated_at = rec.created_at
        return self._insert(rec)

    # ---- trainer side ------------------------------------------------------------------
    def begin(self, training_id: str, max_attempts: int, worker: str,
              lease_s: float) -> tuple[TrainingRecord | None, str]:
        """``run`` (this attempt now holds a fresh lease), ``skip`` (gone or finished),
        ``busy`` (running under a live lease of another attempt) or ``poison``."""
        action = "skip"

        def mutate(rec: TrainingRecord) -> Any:
            nonlocal action
            if rec.terminal:
                action = "skip"
                return None
            score = self.lease_deadline(training_id)
            if rec.status == "running" and score is not None and score > time.time():
                action = "busy"
                return None
            rec.attempts += 1
            if rec.attempts > max_attempts:
                action = "poison"
                rec.error = JobError(code="too_many_attempts", message=f"the training worker "
                                     f"was lost {max_attempts} times; not retried again")
                return self._terminal(rec, "failed")
            action = "run"
            if rec.status == "queued":
                rec.move("running")
            rec.worker, rec.lease = worker, secrets.token_hex(8)
            rec.started_at = rec.started_at or utcnow()

            def extra(pipe: Any) -> None:
                pipe.zadd(LEASES_KEY, {training_id: time.time() + lease_s})

            return extra

        rec = self._txn(training_id, mutate)
        return rec, (action if rec is not None else "skip")

    def report(self, training_id: str, token: str, **changes: Any) -> bool:
        """Write progress fields while this attempt holds the training; False when it was
        cancelled, deleted or lost its lease (the caller stops)."""
        alive = False

        def mutate(rec: TrainingRecord) -> Any:
            nonlocal alive
            alive = self.holds(rec, token)
            if not alive:
                return None
            for k, v in changes.items():
                setattr(rec, k, v)
            return noop

        self._txn(training_id, mutate)
        return alive

    def alive(self, training_id: str, token: str) -> bool:
        rec = self.get(training_id)
        return rec is not None and self.holds(rec, token)

    def finish(self, training_id: str, token: str, model: dict[str, Any] | None,
               metrics: dict[str, Any]) -> bool:
        wrote = False

        def mutate(rec: TrainingRecord) -> Any:
            nonlocal wrote
            wrote = self.holds(rec, token)
            if not wrote:
                return None
            rec.model, rec.metrics, rec.progress = model, metrics, 100
            rec.stage = None
            return self._terminal(rec, "succeeded")

        self._txn(training_id, mutate)
        return wrote

    def fail(self, training_id: str, code: str, message: str,
             token: str | None = None) -> TrainingRecord | None:
        def mutate(rec: TrainingRecord) -> Any:
            if rec.terminal or (token is not None and rec.lease != token):
                return None
            rec.error = JobError(code=code, message=message)
            return self._terminal(rec, "failed")

        return self._txn(training_id, mutate)

    def _terminal(self, rec: TrainingRecord, status: Status) -> Extra:
        """Move ``rec`` into a terminal status; return the commands that go with it."""
        rec.move(status)
        tid = rec.id

        def extra(pipe: Any) -> None:
            pipe.zrem(LEASES_KEY, tid)
            pipe.zrem(ACTIVE_KEY, tid)
            pipe.expire(training_key(tid), self.ttl)

        return extra

    def requeue_expired(self) -> list[str]:
        """Running trainings whose lease expired go back to ``queued``; returns their ids
        (the caller publishes a message for each)."""
        out = []
        for tid in self.r.zrangebyscore(LEASES_KEY, "-inf", time.time()):
            moved = False

            def mutate(rec: TrainingRecord) -> Any:
                nonlocal moved
                moved = False
                if rec.status != "running":
                    return lambda pipe: pipe.zrem(LEASES_KEY, rec.id)
                score = self.lease_deadline(rec.id)
                if score is None or score > time.time():
                    return None
                rec.move("queued")
                rec.lease, rec.worker = None, None
                rec.requeues += 1
                moved = True
                return lambda pipe: pipe.zrem(LEASES_KEY, rec.id)

            rec = self._txn(tid, mutate)
            if rec is None:
                self.r.zrem(LEASES_KEY, tid)
            elif moved:
                out.append(tid)
        return out

    # ---- gateway side ------------------------------------------------------------------
    def cancel(self, training_id: str) -> tuple[TrainingRecord | None, str]:
        """An active training becomes ``cancelled`` (the trainer stops at its next batch);
        a finished one is forgotten. Returns ``(record, previous status)``."""
        prev = ""

        def mutate(rec: TrainingRecord) -> Any:
            nonlocal prev
            prev = rec.status
            if prev in TERMINAL:
                return None
            return self._terminal(rec, "cancelled")

        rec = self._txn(training_id, mutate)
        if rec is None:
            return None, ""
        if prev in TERMINAL:
            pipe = self.r.pipeline()
            pipe.delete(training_key(training_id))
            pipe.zrem(owner_trainings_key(rec.owner), training_id)
            pipe.execute()
        return rec, prev

    def heartbeat(self, name: str, info: dict[str, Any], ttl_s: float) -> None:
        self.r.set(trainer_key(name), json.dumps(info), ex=max(1, int(ttl_s)))

    def trainers(self) -> list[dict[str, Any]]:
        out = []
        for key in self.r.scan_iter(match=f"{PREFIX}trainer:*"):
            raw = self.r.get(key)
            if raw:
                out.append(json.loads(raw))
        return out


__all__ = ["BACKBONES", "STAGES", "TRAIN_QUEUE", "TRAIN_TASK", "TrainingRecord",
           "TrainingStore", "checkpoint_key", "new_job_id", "send_training"]
