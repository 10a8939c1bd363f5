"""The job record, typed, and its state machine.

Both sides read and write the record through :class:`hamnet_jobs.store.JobStore`; this
module says what a record holds and which status changes exist, so an impossible one
(``succeeded`` -> ``running``) is an error in the code that attempts it, not a corrupt job.

::

    queued --begin--> running --finish--> succeeded
      |                 |  \\---fail----> failed
      |                 |   \\--cancel--> cancelled
      |                 \\--lease expired--> queued   (the worker died; runs again)
      +--cancel/fail--> cancelled / failed
"""

from __future__ import annotations

import secrets
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ACTIVE: tuple[Status, ...] = ("queued", "running")
TERMINAL: tuple[Status, ...] = ("succeeded", "failed", "cancelled")
STATUSES: tuple[Status, ...] = ACTIVE + TERMINAL
STAGES = ("decode", "features", "localize")

TRANSITIONS: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "cancelled", "failed"}),
    "running": frozenset({"queued", "succeeded", "failed", "cancelled"}),
    "succeeded": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}

# Fields that never leave the service: the owner is a hash of the caller's API key; the upload
# path, content hash, worker name and lease token are internal.
PRIVATE = frozenset({"owner", "sha256", "upload", "worker", "lease", "enqueued_at"})


class InvalidTransition(RuntimeError):
    """A status change the state machine does not allow (a bug in the caller)."""


class JobError(BaseModel):
    code: str
    message: str


class CallbackDelivery(BaseModel):
    """Outcome of the completion callback, visible on the job."""

    status: Literal["pending", "delivered", "failed"] = "pending"
    attempts: int = 0
    http_status: int | None = None
    last_error: str | None = None
    last_attempt_at: str | None = None
    delivered_at: str | None = None


def new_job_id() -> str:
    """128 random bits, URL-safe: ids are capabilities when API keys are off."""
    return secrets.token_urlsafe(16)


def utcnow() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JobRecord(BaseModel):
    """One job as stored in Redis (``hamnet:job:<id>``)."""

    # Records written by a newer version stay readable by an older one during a rollout.
    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    id: str
    owner: str
    status: Status = "queued"
    stage: str | None = None
    progress: int = Field(default=0, ge=0, le=100)
    attempts: int = Field(default=0, ge=0)
    requeues: int = Field(default=0, ge=0, description="times an expired lease requeued it")
    error: JobError | None = None
    created_at: str = Field(default_factory=utcnow)
    updated_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    enqueued_at: str | None = None
    model: dict[str, Any] | None = None
    filename: str | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    video: dict[str, Any] | None = None
    video_duration: float | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    tag: str | None = None
    callback_url: str | None = None
    callback: CallbackDelivery | None = None
    worker: str | None = None
    lease: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def move(self, status: Status) -> None:
        """Change status, or raise :class:`InvalidTransition`."""
        if status not in TRANSITIONS[self.status]:
            raise InvalidTransition(f"job {self.id}: {self.status} -> {status} is not allowed")
        self.status = status
        if status in TERMINAL:
            self.finished_at = utcnow()
            self.lease = None
            if status != "succeeded":
                self.stage = None

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=False)

    def public(self) -> dict[str, Any]:
        return public_view(self)


def public_view(job: JobRecord | dict[str, Any]) -> dict[str, Any]:
    data = job.dump() if isinstance(job, JobRecord) else dict(job)
    return {k: v for k, v in data.items() if k not in PRIVATE}
