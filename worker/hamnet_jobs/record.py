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
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

# InvalidTransition and utcnow live with the shared record base; imported from here as before.
from hamnet_jobs.records import InvalidTransition as InvalidTransition
from hamnet_jobs.records import StatefulRecord, utcnow

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
# ``source_url`` is the full remote URL (a presigned query may be a credential); ``source``
# is its public, redacted form.
PRIVATE = frozenset({"owner", "sha256", "upload", "worker", "lease", "enqueued_at",
                     "source_url"})


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


class JobRecord(StatefulRecord):
    """One job as stored in Redis (``hamnet:job:<id>``). Records written by a newer version
    stay readable by an older one during a rollout (unknown fields are ignored)."""

    KIND: ClassVar[str] = "job"
    TRANSITIONS: ClassVar[dict[str, frozenset[str]]] = TRANSITIONS
    TERMINAL: ClassVar[tuple[str, ...]] = TERMINAL
    PRIVATE: ClassVar[frozenset[str]] = PRIVATE

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
    # remote source jobs (hamnet_jobs.sources): URL, public view, result copy, batch
    source_url: str | None = None
    source: dict[str, Any] | None = None
    output: dict[str, Any] | None = None
    batch: str | None = None

    def on_terminal(self, status: str) -> None:
        if status != "succeeded":
            self.stage = None

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=False)


def public_view(job: JobRecord | dict[str, Any]) -> dict[str, Any]:
    data = job.dump() if isinstance(job, JobRecord) else dict(job)
    return {k: v for k, v in data.items() if k not in PRIVATE}
