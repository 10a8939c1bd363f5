"""Per-process state of a worker child: the job store, the storage, the loaded model, and the
heartbeat that tells the gateway this child is alive and which execution provider it uses.

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

from hamnet_worker.jobs import JobStore, connect, utcnow
from hamnet_worker.settings import WorkerSettings, get_settings
from hamnet_worker.storage import make_storage

log = logging.getLogger("hamnet.worker")


def resolve_bundle_path(configured: Path | None) -> Path:
    """``HAMNET_BUNDLE`` or the default bundle (built on first use by ``hamnet demo``)."""
    if configured is not None:
        return Path(configured)
    from hamnet.demo import default_bundle_dir

    return Path(default_bundle_dir())


class Runtime:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings
        self.store = JobStore(connect(settings.redis_url), ttl=settings.job_ttl_s)
        self.storage = make_storage(settings).ensure()
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self._bundle: Any = None
        self._lock = threading.Lock()
        self.provider: str | None = None
        self.backbone_provider: str | None = None
        self.load_error: str | None = None
        self.busy_job: str | None = None
        self.started_at = utcnow()
        self._hb: threading.Thread | None = None
        self._stop = threading.Event()

    # ---- model -----------------------------------------------------------------------------
    def bundle(self) -> Any:
        """Load the bundle and create its ONNX sessions once per process (the pipeline caches
        them by bundle checksum, so ``predict_video`` reuses these)."""
        with self._lock:
            if self._bundle is None:
                from hamnet import pipeline

                path = resolve_bundle_path(self.settings.bundle)
                providers = [p.strip() for p in self.settings.providers.split(",")
                             if p.strip()] or None
                t0 = time.perf_counter()
                try:
                    bundle = pipeline.get_bundle(path)
                    backbone = pipeline.get_backbone(bundle, providers)
                    head = pipeline.get_head(bundle, providers)
                except Exception as e:
                    self.load_error = f"{type(e).__name__}: {e}"
                    raise
                self.provider = getattr(head, "provider", None)
                self.backbone_provider = getattr(backbone, "provider", None)
                self.load_error = None
                self._bundle = bundle
                log.info(
                    "loaded bundle %s in %.1f s (execution provider: head %s, backbone %s)",
                    path, time.perf_counter() - t0, self.provider, self.backbone_provider,
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
        }

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
        }
        self.store.heartbeat(self.name, info, ttl_s=3 * s.heartbeat_s)

    def start_heartbeat(self) -> None:
        if self._hb is not None:
            return

        def loop() -> None:
            last_reap = 0.0
            while not self._stop.is_set():
                try:
                    self.beat()
                    if time.monotonic() - last_reap > 30:
                        last_reap = time.monotonic()
                        for job_id in self.store.reap_stale(self.reap_after_s()):
                            self.storage.remove(job_id)
                except Exception as e:  # Redis restarting: keep beating when it is back
                    log.debug("heartbeat failed: %s", e)
                self._stop.wait(self.settings.heartbeat_s)

        self._hb = threading.Thread(target=loop, name="hamnet-heartbeat", daemon=True)
        self._hb.start()

    def reap_after_s(self) -> float:
        """A running job nobody has touched for this long is failed. Not merely the hard time
        limit: a whole worker killed mid-job leaves its message unacknowledged, and Redis hands
        it to another worker only after the visibility timeout (plus one restore scan), which
        must win over the reaper. A child killed by the hard limit is failed at once by the
        ``task_failure`` handler, so this is only the backstop."""
        s = self.settings
        return s.visibility_timeout + s.restore_interval + 30

    def stop(self) -> None:
        self._stop.set()
        try:
            self.store.r.delete(f"hamnet:worker:{self.name}")
        except Exception:
            pass


@lru_cache(maxsize=1)
def get_runtime() -> Runtime:
    return Runtime(get_settings())
