"""The task contract: its name, its payload, and how the gateway publishes it.

The gateway publishes by name with a bare Celery app (no task module imported), so it never
loads the worker's code; the worker registers a task under :data:`TASK_NAME` taking
:func:`payload`'s arguments.
"""

from __future__ import annotations

from typing import Any

from hamnet_jobs import TASK_NAME

__all__ = ["TASK_NAME", "payload", "publisher", "send_job"]


def payload(job_id: str) -> list[Any]:
    """The task's positional arguments: only the id; everything else is in the record."""
    return [job_id]


def publisher(redis_url: str, queue: str = "gpu") -> Any:
    """A Celery app that can only send (no tasks, no results): what the gateway needs."""
    from celery import Celery

    app = Celery("hamnet-publisher", broker=redis_url, include=[])
    app.conf.update(task_ignore_result=True, result_backend=None, task_serializer="json",
                    accept_content=["json"], task_default_queue=queue,
                    broker_connection_retry_on_startup=True)
    return app


def send_job(app: Any, job_id: str, queue: str = "gpu") -> None:
    """Enqueue by name. The message id is a fresh uuid (not the job id): a requeued job gets a
    new message while the old one may still sit unacknowledged in the broker."""
    app.send_task(TASK_NAME, args=payload(job_id), queue=queue)
