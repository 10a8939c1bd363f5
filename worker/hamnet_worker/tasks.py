"""The Celery task: like a web view, it only wires the stages together.

``begin`` (attempt counter, duplicate-delivery guard) → ``predict_video`` (decode → features →
localize, reporting progress, which doubles as the cancellation check) → ``finish``/``fail`` →
clean-up of the upload and scratch files → optional callback. The heavy imports happen inside
the task, in the worker child.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_failure, worker_process_init, worker_process_shutdown, worker_ready

from hamnet_worker import TASK_NAME
from hamnet_worker.runtime import get_runtime

log = logging.getLogger("hamnet.worker")

# Share of the 0-100 progress bar given to each stage (features dominate the run time).
_SPANS = {"decode": (0.0, 10.0), "features": (10.0, 90.0), "localize": (90.0, 99.0)}


class JobCancelled(Exception):
    """Raised from the progress callback when the job was cancelled (DELETE)."""


def _stage_of(name: str) -> str:
    """Map the pipeline's stage names onto the three the API reports."""
    n = name.lower()
    if any(k in n for k in ("decode", "probe", "open")):
        return "decode"
    if any(k in n for k in ("feature", "backbone", "extract", "snippet", "flow", "encode")):
        return "features"
    return "localize"


class Progress:
    """Progress callback: throttled writes to Redis, stage latencies, cancellation."""

    def __init__(self, store: Any, job_id: str, min_interval: float = 0.5) -> None:
        self.store, self.job_id, self.min_interval = store, job_id, min_interval
        self.stage = "decode"
        self.stage_t0 = time.perf_counter()
        self.last_write = 0.0
        self.timings: dict[str, float] = {}

    def __call__(self, stage: str, fraction: float = 0.0) -> None:
        st = _stage_of(stage)
        changed = st != self.stage and list(_SPANS).index(st) > list(_SPANS).index(self.stage)
        if changed:
            self._close_stage()
            self.stage, self.stage_t0 = st, time.perf_counter()
        now = time.monotonic()
        if not changed and now - self.last_write < self.min_interval:
            return
        self.last_write = now
        lo, hi = _SPANS[self.stage]
        frac = min(max(float(fraction or 0.0), 0.0), 1.0)
        if not self.store.progress(self.job_id, self.stage, lo + frac * (hi - lo)):
            raise JobCancelled(self.job_id)

    def _close_stage(self) -> None:
        self.timings[self.stage] = self.timings.get(self.stage, 0.0) + (
            time.perf_counter() - self.stage_t0
        )

    def done(self) -> None:
        self._close_stage()
        for stage, seconds in self.timings.items():
            self.store.observe_stage(stage, seconds)


@worker_process_init.connect
def _child_started(**_: Any) -> None:
    """Load the model in each prefork child as it starts, so the first job is not slow and
    /readyz can tell when the model is loaded."""
    rt = get_runtime()
    rt.start_heartbeat()
    if rt.settings.preload:
        try:
            rt.bundle()
        except Exception as e:  # reported by the heartbeat and /readyz; jobs fail clearly
            log.error("cannot load the model bundle: %s", e)
    rt.beat()


@worker_ready.connect
def _worker_ready(**_: Any) -> None:
    """solo/threads pools run tasks in the main process, which has no worker_process_init."""
    if os.environ.get("HAMNET_IN_PROCESS_POOL") == "1":
        _child_started()


@worker_process_shutdown.connect
def _child_stopping(**_: Any) -> None:
    get_runtime().stop()


@task_failure.connect
def _hard_time_limit(sender: Any = None, task_id: str | None = None, exception: Any = None,
                     args: Any = None, **_: Any) -> None:
    """The hard time limit kills the child; Celery then reports the failure here, in the
    *parent* process (so no model, and no runtime: it is built from scratch). The message is
    acknowledged as failed, so nothing would ever finish the job: fail it now."""
    if getattr(sender, "name", None) != TASK_NAME or not isinstance(exception, TimeLimitExceeded):
        return
    from hamnet_worker.jobs import JobStore, connect
    from hamnet_worker.settings import get_settings
    from hamnet_worker.storage import make_storage

    job_id = (args or [task_id])[0]
    s = get_settings()
    store = JobStore(connect(s.redis_url), ttl=s.job_ttl_s)
    try:
        store.fail(job_id, "time_limit_exceeded",
                   f"processing was killed at the {s.time_limit:.0f} s hard time limit")
        make_storage(s).remove(job_id)
    finally:
        store.r.close()


@shared_task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
def process_job(self: Any, job_id: str) -> str:
    rt = get_runtime()
    rt.start_heartbeat()  # no-op in prefork children; needed for the solo/threads pools
    store, storage, s = rt.store, rt.storage, rt.settings
    # Say "busy with this job" before claiming it, so that a duplicate delivery elsewhere
    # that sees our claim also sees our heartbeat naming the job (store.begin, "busy").
    rt.busy_job = job_id
    rt.beat()
    job, action = store.begin(job_id, s.max_attempts, worker=rt.name)
    if action != "run":
        rt.busy_job = None
    if action == "busy":
        # Another live worker is running it (the broker redelivered after a reconnect): look
        # again later, when it has finished (then "skip") or died (then run it).
        log.info("job %s is running on another worker; deferring this delivery", job_id)
        raise self.retry(countdown=max(2.0, 3 * s.heartbeat_s), max_retries=None)
    if action != "run":
        if job is None or job["status"] in ("failed", "cancelled", "succeeded"):
            storage.remove(job_id)
        if action == "poison":
            log.error("job %s failed after %s attempts", job_id, s.max_attempts)
            _callback(rt, job)
        return action
    progress = Progress(store, job_id)
    outcome = "failed"
    # Set once the job has a terminal status. A BaseException that is not an outcome (the
    # child stopped by a cold/soft shutdown, SystemExit, KeyboardInterrupt) leaves the job
    # unacknowledged for redelivery, so its upload must stay on disk for the next attempt.
    terminal = False
    try:
        from hamnet.errors import HamnetError

        from hamnet_worker.storage import StorageUnavailable

        try:
            bundle = rt.bundle()
            params = job.get("params") or {}
            # local storage: the shared file; S3: a download into this job's scratch dir
            video = storage.fetch(job_id)
            result = _predict(bundle, video, progress, params)
            progress.done()
            result.setdefault("model", {})
            if rt.provider:
                result["model"].setdefault("provider", rt.provider)
            elif result["model"].get("provider"):
                rt.provider = result["model"]["provider"]
            outcome = "succeeded" if store.finish(job_id, result) else "cancelled"
        except JobCancelled:
            outcome = "cancelled"
        except SoftTimeLimitExceeded:
            store.fail(job_id, "time_limit_exceeded",
                       f"processing took longer than the {s.soft_time_limit:.0f} s limit")
        except HamnetError as e:
            store.fail(job_id, e.code, _client_message(str(e), job, storage.upload_path(job_id)))
        except FileNotFoundError:
            store.fail(job_id, "upload_missing", "the uploaded video is no longer stored")
        except StorageUnavailable:
            store.fail(job_id, "storage_unavailable", "the upload store could not be reached")
        except MemoryError:
            store.fail(job_id, "out_of_memory", "the worker ran out of memory on this video")
        except Exception as e:
            log.exception("job %s crashed", job_id)
            store.fail(job_id, "internal_error", f"processing failed ({type(e).__name__})")
        terminal = True
    finally:
        rt.busy_job = None
        if terminal:
            storage.remove(job_id)
        else:  # keep the upload for the redelivery, drop this attempt's local copies
            storage.release(job_id)
    _callback(rt, store.get(job_id))
    return outcome


def _client_message(message: str, job: dict[str, Any], upload: Any) -> str:
    """Error messages of the video pipeline name the file they read, which here is the
    service's own ``uploads/<id>.video``: say the client's filename instead, so a job's error
    never reveals where or how the service stores uploads."""
    name = job.get("filename") or "the video"
    for internal in (str(upload), upload.name):
        message = message.replace(internal, name)
    return message


def _predict(bundle: Any, video: Any, progress: Progress, params: dict[str, Any]) -> dict:
    from hamnet.pipeline import predict_video

    if not video.exists():
        raise FileNotFoundError(video)
    options = {k: params[k] for k in ("min_score", "include", "exclude") if params.get(k)}
    if params.get("min_score") == 0:
        options["min_score"] = 0.0
    progress("decode", 0.0)
    return predict_video(bundle, str(video), progress=progress, **options)


def _callback(rt: Any, job: dict | None) -> None:
    if not job or not job.get("callback_url"):
        return
    from hamnet_worker.callbacks import post_callback
    from hamnet_worker.jobs import public_view

    try:
        post_callback(job["callback_url"], public_view(job), rt.settings.callback_allow_private)
    except Exception as e:  # the job's outcome does not depend on the client's endpoint
        log.warning("callback for job %s failed: %s", job["id"], e)
