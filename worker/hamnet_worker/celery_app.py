"""The Celery application and its configuration.

The settings below are what make "nothing accepted is ever lost" hold with a Redis broker:

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only after the
  task returns, and a child killed mid-job (OOM, ``kill -9``) puts it back on the queue.
* ``worker_prefetch_multiplier = 1``: a busy worker does not hoard messages that an idle one
  could run (videos take minutes, so fairness beats round-trip savings).
* ``visibility_timeout`` above the hard time limit: Redis redelivers an unacknowledged message
  after this long, which must never happen to a job that is still legitimately running.
* the soft time limit fails the job cleanly (``time_limit_exceeded``); the hard limit kills a
  child stuck in native code.

Results are not stored by Celery (``task_ignore_result``): the job store owns them.
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery
from hamnet_jobs import TASK_NAME
from kombu import Queue


def make_app(
    redis_url: str,
    *,
    queue: str = "gpu",
    soft_time_limit: float = 1800.0,
    time_limit: float = 1900.0,
    visibility_timeout: float = 2400.0,
    max_tasks_per_child: int = 0,
    soft_shutdown_timeout: float = 0.0,
    restore_interval: float = 10.0,
) -> Celery:
    app = Celery("hamnet", broker=redis_url, include=[])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=queue,
        task_queues=[Queue(queue, routing_key=queue)],
        task_routes={TASK_NAME: {"queue": queue}},
        task_soft_time_limit=soft_time_limit,
        task_time_limit=time_limit,
        # kombu scans for expired unacknowledged messages every interval x throttle seconds
        # (default 10 x 10); throttle 1 makes a lost job come back within ``restore_interval``
        # of its visibility timeout instead of up to 100 s later.
        broker_transport_options={
            "visibility_timeout": int(visibility_timeout),
            "unacked_restore_interval": restore_interval,
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # A lost broker connection must not kill a job that is half done; the store's
        # transactions make a redelivery after reconnection harmless.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_max_tasks_per_child=max_tasks_per_child or None,
        worker_soft_shutdown_timeout=soft_shutdown_timeout,
        worker_send_task_events=False,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        broker_channel_error_retry=True,
    )
    return app


@lru_cache(maxsize=1)
def get_app() -> Celery:
    """The worker's app, built from its settings and with the task module included."""
    from hamnet_worker.settings import get_settings

    s = get_settings()
    app = make_app(
        s.redis_url,
        queue=s.queue,
        soft_time_limit=s.soft_time_limit,
        time_limit=s.time_limit,
        visibility_timeout=s.visibility_timeout,
        max_tasks_per_child=s.max_tasks_per_child,
        soft_shutdown_timeout=s.soft_shutdown_s,
        restore_interval=s.restore_interval,
    )
    from hamnet_jobs.trainings import TRAIN_QUEUE, TRAIN_TASK

    if s.queue == TRAIN_QUEUE:
        # The training worker: its tasks (and torch) live in hamnet_trainer, which Celery
        # imports by name at start; this package never imports it (import-linter contract),
        # nor the inference tasks, whose per-child model loading a trainer does not want.
        app.conf.include = ["hamnet_trainer.tasks"]
        app.conf.task_routes = {TRAIN_TASK: {"queue": TRAIN_QUEUE}}
        return app
    app.conf.include = ["hamnet_worker.tasks", "hamnet_worker.streams"]
    from hamnet_jobs.streams import STREAM_TASK

    # live streams (docs/STREAMS.md): their own queue, consumed with `hamnet worker --streams`
    import hamnet_worker.streams  # noqa: F401
    import hamnet_worker.tasks  # noqa: F401  (registers the task and the process signals)

    app.conf.task_queues = [*app.conf.task_queues,
                            Queue(s.stream_queue, routing_key=s.stream_queue)]
    app.conf.task_routes = {**app.conf.task_routes, STREAM_TASK: {"queue": s.stream_queue}}

    return app
