"""The Celery tasks: like web views, they only wire the stages together.

``process_job``: ``begin`` (attempt counter, lease, duplicate-delivery guard) ->
``predict_video`` (decode -> features -> localize, reporting progress, which doubles as the
cancellation and lease check) -> ``finish``/``fail`` -> clean-up of the upload and scratch
files -> the completion callback, delivered by ``deliver_callback`` with its own retries.
The heavy imports happen inside the task, in the worker child.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded
from celery.signals import task_failure, worker_process_init, worker_process_shutdown
from hamnet_jobs import TASK_NAME

from hamnet_worker.runtime import get_runtime, limit_threads

log = logging.getLogger("hamnet.worker")

CALLBACK_TASK = "hamnet.deliver_callback"

# Share of the 0-100 progress bar given to each stage (features dominate the run time).
_SPANS = {"decode": (0.0, 10.0), "features": (10.0, 90.0), "localize": (90.0, 99.0)}


class JobCancelled(Exception):
    """Raised from the progress callback when the job was cancelled (DELETE)."""


class LeaseLost(Exception):
    """Raised when this attempt no longer holds the job: its lease expired (this worker
    stalled) and the job was queued again. The attempt stops without touching the job."""


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

    def __init__(self, store: Any, telemetry: Any, job_id: str, lease: str | None = None,
                 min_interval: float = 0.5) -> None:
        self.store, self.telemetry, self.job_id = store, telemetry, job_id
        self.lease, self.min_interval = lease, min_interval
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
        if not self.store.progress(self.job_id, self.stage, lo + frac * (hi - lo), self.lease):
            raise _stopped(self.store, self.job_id)

    def _close_stage(self) -> None:
        self.timings[self.stage] = self.timings.get(self.stage, 0.0) + (
            time.perf_counter() - self.stage_t0
        )

    def done(self) -> None:
        self._close_stage()
        for stage, seconds in self.timings.items():
            self.telemetry.observe_stage(stage, seconds)


def _stopped(store: Any, job_id: str) -> Exception:
    """Why this attempt may not go on: the job was cancelled or deleted, or it was requeued."""
    job = store.get(job_id)
    if job is None or job.status in ("cancelled", "failed", "succeeded"):
        return JobCancelled(job_id)
    return LeaseLost(job_id)


@worker_process_init.connect
def _child_started(**_: Any) -> None:
    """Load the model in each prefork child as it starts, so the first job is not slow and
    /readyz can tell when the model is loaded."""
    rt = get_runtime()
    limit_threads(rt.threads)
    rt.start_heartbeat()
    if rt.settings.preload:
        try:
            rt.bundle()
        except Exception as e:  # reported by the heartbeat and /readyz; jobs fail clearly
            log.error("cannot load the model bundle: %s", e)
    rt.beat()


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
    from hamnet_jobs.storage import make_storage
    from hamnet_jobs.store import JobStore, connect

    from hamnet_worker.settings import get_settings

    job_id = (args or [task_id])[0]
    s = get_settings()
    store = JobStore(connect(s.redis_url), ttl=s.job_ttl_s)
    try:
        if store.fail(job_id, "time_limit_exceeded",
                      f"processing was killed at the {s.time_limit:.0f} s hard time limit"):
            make_storage(s).remove(job_id)
    finally:
        store.r.close()


@shared_task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
def process_job(self: Any, job_id: str) -> str:
    rt = get_runtime()
    store, storage, s = rt.store, rt.storage, rt.settings
    # Say "busy with this job" before claiming it, so that a duplicate delivery elsewhere
    # that sees our claim also sees our heartbeat naming the job (store.begin, "busy").
    rt.hold(job_id)
    rt.beat()
    job, action = store.begin(job_id, s.max_attempts, worker=rt.name, lease_s=s.lease_s)
    if action != "run":
        rt.hold(None)
    if action == "busy":
        # Another live worker is running it (the broker redelivered after a reconnect): look
        # again later, when it has finished (then "skip") or died (then run it).
        log.info("job %s is running on another worker; deferring this delivery", job_id)
        raise self.retry(countdown=max(2.0, 3 * s.heartbeat_s), max_retries=None)
    if action != "run":
        if job is None or job.terminal:
            storage.remove(job_id)
        if action == "poison":
            log.error("job %s failed after %s attempts", job_id, s.max_attempts)
            schedule_callback(job)
        return action
    lease = job.lease
    rt.hold(job_id, lease)
    progress = Progress(store, rt.telemetry, job_id, lease)
    outcome = "failed"
    # Set once the job has a terminal status. A BaseException that is not an outcome (the
    # child stopped by a cold/soft shutdown, SystemExit, KeyboardInterrupt) or a lost lease
    # leaves the job to another attempt, so its upload must stay for it.
    terminal = False
    try:
        from hamnet.errors import HamnetError
        from hamnet_jobs.registry import RegistryError
        from hamnet_jobs.sources import SourceError
        from hamnet_jobs.storage import StorageUnavailable

        from hamnet_worker.output import fetch_input, input_path, source_code, write_output

        def fail(code: str, message: str) -> None:
            store.fail(job_id, code, message, token=lease)

        try:
            # the job's model, resolved at submission (registry version or the default)
            bundle = rt.bundle_for(job.model, job.owner)
            params = job.params or {}
            # local storage: the shared file; S3: a download into this job's scratch dir;
            # a remote source_url: downloaded into the scratch dir (docs/SOURCES.md)
            video = fetch_input(job, storage, s, progress)
            result = _predict(bundle, video, progress, params, s)
            progress.done()
            result.setdefault("model", {})
            result["model"]["ref"] = (job.model or {}).get("ref") or "default"
            if rt.provider:
                result["model"].setdefault("provider", rt.provider)
            elif result["model"].get("provider"):
                rt.provider = result["model"]["provider"]
            output = write_output(job, result, s)  # before finish: a rerun rewrites it
            if output is not None and not store.set_output(job_id, output, token=lease):
                raise _stopped(store, job_id)
            if store.finish(job_id, result, token=lease):
                outcome = "succeeded"
            else:
                raise _stopped(store, job_id)
        except JobCancelled:
            outcome = "cancelled"
        except SoftTimeLimitExceeded:
            fail("time_limit_exceeded",
                 f"processing took longer than the {s.soft_time_limit:.0f} s limit")
        except HamnetError as e:
            fail(source_code(job, getattr(e, "code", "invalid_video")),
                 _client_message(str(e), job.filename, input_path(job, storage)))
        except SourceError as e:
            fail(e.code, e.message)
        except RegistryError as e:  # the model version was deleted, or its files are bad
            fail(e.code, str(e))
        except FileNotFoundError:
            fail("upload_missing", "the uploaded video is no longer stored")
        except StorageUnavailable:
            fail("storage_unavailable", "the upload store could not be reached")
        except MemoryError:
            fail("out_of_memory", "the worker ran out of memory on this video")
        except LeaseLost:
            raise
        except Exception as e:
            log.exception("job %s crashed", job_id)
            fail("internal_error", f"processing failed ({type(e).__name__})")
        terminal = True
    except LeaseLost:
        log.warning("job %s: this attempt lost its lease (the job was queued again); "
                    "stopping without a result", job_id)
        outcome = "requeued"
    finally:
        rt.hold(None)
        if terminal:
            storage.remove(job_id)
        else:  # keep the upload for the next attempt, drop this attempt's local copies
            storage.release(job_id)
    if terminal:
        schedule_callback(store.get(job_id))
    return outcome


def _client_message(message: str, filename: str | None, upload: Any) -> str:
    """Error messages of the video pipeline name the file they read, which here is the
    service's own ``uploads/<id>.video``: say the client's filename instead, so a job's error
    never reveals where or how the service stores uploads."""
    name = filename or "the video"
    for internal in (str(upload), upload.name):
        message = message.replace(internal, name)
    return message


def _predict(bundle: Any, video: Any, progress: Progress, params: dict[str, Any],
             s: Any) -> dict:
    from hamnet.pipeline import predict_video

    if not video.exists():
        raise FileNotFoundError(video)
    # min_score filters on the calibrated confidence, min_raw_score on HAM-Net's OIC score
    options = {k: params[k] for k in ("min_score", "min_raw_score", "include", "exclude")
               if params.get(k) is not None}
    progress("decode", 0.0)
    # The limits are enforced on decoded time and decoded frame size, not on what the
    # container claims (the gateway's probe already checked the claims).
    return predict_video(bundle, str(video), progress=progress,
                         max_duration_s=s.max_duration_s, max_dimension=s.max_dimension,
                         max_pixels=s.max_pixels, **options)


# ------------------------------------------------------------------------------ callbacks


def schedule_callback(job: Any) -> None:
    """Hand the completion callback to its own task, so that a slow or failing client
    endpoint never holds this worker slot, and retries wait without blocking."""
    if job is None or not job.callback_url:
        return
    rt = get_runtime()
    rt.store.set_callback(job.id, {"status": "pending"})
    try:
        deliver_callback.apply_async(args=[job.id, 1], queue=rt.settings.queue)
    except Exception:
        log.warning("job %s: the callback could not be scheduled", job.id, exc_info=True)


@shared_task(name=CALLBACK_TASK, bind=True, acks_late=True, ignore_result=True)
def deliver_callback(self: Any, job_id: str, attempt: int = 1) -> str:
    """One delivery attempt of a job's completion callback; schedules the next on a
    retryable failure (bounded, with backoff). The outcome is recorded on the job."""
    from hamnet_jobs.record import public_view, utcnow
    from hamnet_jobs.webhooks import master_key, signing_secret

    from hamnet_worker.callbacks import MAX_ATTEMPTS, backoff_s, deliver_once

    rt = get_runtime()
    store, s = rt.store, rt.settings
    job = store.get(job_id)
    if job is None or not job.callback_url:
        return "gone"
    if job.callback is not None and job.callback.status == "delivered":
        return "delivered"  # a duplicate message
    secret = signing_secret(master_key(store.r, s.callback_secret), job.owner)
    payload = public_view(job)
    payload.pop("callback", None)
    # One delivery id for all attempts, so a receiver can drop duplicates of a retry.
    outcome = deliver_once(job.callback_url, payload, secret=secret,
                           allow_private=s.callback_allow_private, delivery_id=f"job-{job_id}")
    retry = not outcome.ok and outcome.retryable and attempt < MAX_ATTEMPTS
    delivery = {
        "status": "delivered" if outcome.ok else ("pending" if retry else "failed"),
        "attempts": attempt,
        "http_status": outcome.http_status,
        "last_error": outcome.error,
        "last_attempt_at": outcome.at,
        "delivered_at": utcnow() if outcome.ok else None,
    }
    store.set_callback(job_id, delivery)
    if retry:
        deliver_callback.apply_async(args=[job_id, attempt + 1], queue=s.queue,
                                     countdown=backoff_s(attempt + 1))
    elif not outcome.ok:
        log.warning("job %s: callback failed after %d attempt(s): %s", job_id, attempt,
                    outcome.error)
    return delivery["status"]
