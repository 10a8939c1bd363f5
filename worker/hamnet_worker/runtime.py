"""Per-process state of a worker child: the job store, the storage, the loaded model, and the
heartbeat thread that tells the gateway this child is alive, renews the lease of the job it
runs, and puts back the jobs of workers that died.

Everything here is created lazily inside the child (``worker_process_init`` or first use),
never in the prefork parent: ONNX Runtime sessions and CUDA contexts do not survive ``fork``,
and a parent holding them would copy gigabytes into every child.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from hamnet_jobs import keys
from hamnet_jobs.queue import send_job
from hamnet_jobs.record import utcnow
from hamnet_jobs.registry import ModelRegistry
from hamnet_jobs.storage import make_storage
from hamnet_jobs.store import JobStore, connect
from hamnet_jobs.telemetry import Telemetry

from hamnet_worker.models import ModelCache
from hamnet_worker.settings import WorkerSettings, get_settings

log = logging.getLogger("hamnet.worker")


def resolve_bundle_path(configured: Path | None) -> Path:
    """``HAMNET_BUNDLE`` or the default bundle (built on first use by ``hamnet demo``)."""
    if configured is not None:
        return Path(configured)
    from hamnet.paths import default_bundle_dir

    return Path(default_bundle_dir())


def threads_per_child(concurrency: int, cpus: int | None = None) -> int:
    """Cores divided among the children: N children each using every core would run
    N x cores threads and thrash (and on a GPU worker the CPU stages would fight)."""
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cpus = os.cpu_count() or 1
    return max(1, int(cpus) // max(1, int(concurrency)))


def limit_threads(n: int) -> None:
    """Cap the native thread pools of this process (OpenCV, OpenMP/BLAS) at ``n``; ONNX Runtime
    sessions get ``n`` through :meth:`Runtime.bundle`."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        import cv2

        cv2.setNumThreads(n)
    except ImportError:  # pragma: no cover - cv2 is a dependency of the worker extra
        pass


class Runtime:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        client = connect(settings.redis_url)
        self.store = JobStore(client, ttl=settings.job_ttl_s)
        self.telemetry = Telemetry(client)
        self.storage = make_storage(settings).ensure()
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.threads = threads_per_child(settings.concurrency)
        self._bundle: Any = None
        self._lock = threading.Lock()
        self.provider: str | None = None
        self.backbone_provider: str | None = None
        self.load_error: str | None = None
        self.busy_job: str | None = None
        self.busy_lease: str | None = None
        self.started_at = utcnow()
        self._hb: threading.Thread | None = None
        self._stop = threading.Event()
        self._publisher: Any = None
        self._failing = False
        self.registry = ModelRegistry(
            client, self.storage, default_bundle=lambda: resolve_bundle_path(settings.bundle))
        self.models = ModelCache(self.registry, Path(settings.data_dir) / "models-cache",
                                 settings.model_cache_size, load=self._load_sessions,
                                 evict=self._evict_sessions)

    # ---- model -----------------------------------------------------------------------------
    def _providers(self) -> list[str] | None:
        return [p.strip() for p in self.settings.providers.split(",") if p.strip()] or None

    def _load_sessions(self, path: Path) -> Any:
        """Load a bundle and create its ONNX sessions (cached by ``hamnet.pipeline``, so
        ``predict_video`` reuses them)."""
        from hamnet import pipeline

        bundle = pipeline.get_bundle(path)
        pipeline.get_backbone(bundle, self._providers(), threads=self.threads)
        pipeline.get_head(bundle, self._providers(), threads=self.threads)
        return bundle

    def _evict_sessions(self, bundle: Any) -> None:
        from hamnet import pipeline

        if bundle is self._bundle:
            return  # the default model stays loaded
        pipeline.evict(bundle)

    def bundle_for(self, model: dict[str, Any] | None, owner: str | None) -> Any:
        """The bundle a job's model reference names: the default one (no reference, or
        ``default``) or a registry version, loaded on first use (:mod:`hamnet_worker.models`),
        so a model published after this worker started is served without a restart."""
        ref = (model or {}).get("ref")
        if not ref or ref == "default":
            return self.bundle()
        return self.models.get(owner, model or {})

    def bundle(self) -> Any:
        """Load the default bundle and create its ONNX sessions once per process (the
        pipeline caches them by bundle checksum, so ``predict_video`` reuses these)."""
        with self._lock:
            if self._bundle is None:
                from hamnet import pipeline

                path = resolve_bundle_path(self.settings.bundle)
                providers = self._providers()
                t0 = time.perf_counter()
                try:
                    bundle = pipeline.get_bundle(path)
                    backbone = pipeline.get_backbone(bundle, providers, threads=self.threads)
                    head = pipeline.get_head(bundle, providers, threads=self.threads)
                except Exception as e:
                    self.load_error = f"{type(e).__name__}: {e}"
                    raise
                self.provider = getattr(head, "provider", None)
                self.backbone_provider = getattr(backbone, "provider", None)
                self.load_error = None
                self._bundle = bundle
                log.info(
                    "loaded bundle %s in %.1f s (execution provider: head %s, backbone %s; "
                    "%d threads)", path, time.perf_counter() - t0, self.provider,
                    self.backbone_provider, self.threads,
                )
                if self.provider and "CUDA" not in self.provider:
                    log.warning("running on %s: the CUDA provider is not available",
                                self.provider)
            return self._bundle

    def model_info(self) -> dict[str, Any]:
        b = self._bundle
        return {
            "name": getattr(b, "name", None),
            "version": getattr(b, "version", None),
            "checksum": getattr(b, "checksum", None),
            "provider": self.provider,
            "backbone_provider": self.backbone_provider,
            "registry_models": self.models.loaded(),
        }

    # ---- jobs ------------------------------------------------------------------------------
    def publisher(self) -> Any:
        if self._publisher is None:
            from hamnet_worker.celery_app import get_app

            self._publisher = get_app()
        return self._publisher

    def hold(self, job_id: str | None, lease: str | None = None) -> None:
        """Say which job this process runs (heartbeat ``busy_job``) and its lease token."""
        self.busy_job, self.busy_lease = job_id, lease

    # ---- heartbeat -------------------------------------------------------------------------
    def beat(self) -> None:
        s = self.settings
        info = {
            "name": self.name,
            "pid": os.getpid(),
            "queue": s.queue,
            "started_at": self.started_at,
            "seen_at": utcnow(),
            "model_loaded": self._bundle is not None,
            "model": self.model_info(),
            "provider": self.provider,
            "load_error": self.load_error,
            "busy_job": self.busy_job,
            "threads": self.threads,
        }
        self.telemetry.heartbeat(self.name, info, ttl_s=3 * s.heartbeat_s)

    def maintain(self, reap: bool) -> None:
        """One heartbeat's housekeeping: renew our lease, requeue the jobs of dead workers
        (a new message each: the old one stays unacknowledged until the broker's visibility
        timeout, and its late delivery is skipped), and now and then fail jobs past every time
        limit."""
        s = self.settings
        job_id, lease = self.busy_job, self.busy_lease
        if job_id and lease:
            self.store.renew(job_id, lease, s.lease_s)
        for requeued in self.store.requeue_expired(lease_s=s.lease_s):
            log.warning("job %s: its worker stopped renewing the lease; queued again", requeued)
            send_job(self.publisher(), requeued, s.queue)
        if reap:
            for failed in self.store.reap_stale(self.reap_after_s()):
                log.warning("job %s failed: running past every time limit", failed)
                self.storage.remove(failed)

    def start_heartbeat(self) -> None:
        if self._hb is not None:
            return

        def loop() -> None:
            last_reap = 0.0
            while not self._stop.is_set():
                try:
                    self.beat()
                    reap = time.monotonic() - last_reap > 30
                    if reap:
                        last_reap = time.monotonic()
                    self.maintain(reap)
                    if self._failing:
                        log.info("heartbeat and job maintenance work again")
                    self._failing = False
                except Exception:  # Redis restarting: keep beating when it is back
                    if not self._failing:  # once per outage, with the traceback
                        log.warning("heartbeat or job maintenance failed", exc_info=True)
                    self._failing = True
                self._stop.wait(self.settings.heartbeat_s)

        self._hb = threading.Thread(target=loop, name="hamnet-heartbeat", daemon=True)
        self._hb.start()

    def reap_after_s(self) -> float:
        """A running job older than this has outlived every time limit (the hard limit kills
        a child before, and the ``task_failure`` handler fails its job at once): the
        backstop. A job whose worker died is not reaped but requeued (its lease expires)."""
        s = self.settings
        return s.visibility_timeout + s.restore_interval + 30

    def stop(self) -> None:
        self._stop.set()
        try:
            self.store.r.delete(keys.worker(self.name))
        except Exception:
            pass


@lru_cache(maxsize=1)
def get_runtime() -> Runtime:
    return Runtime(get_settings())
