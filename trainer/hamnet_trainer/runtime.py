"""Per-child state of a training worker: stores, and the heartbeat thread that renews the
lease of the training this child runs and requeues the trainings of trainers that died.

Why a thread: an epoch can take longer than a lease; the lease must be renewed while the
main thread is inside torch. Created in the child (``worker_process_init``), never in the
prefork parent.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from functools import lru_cache
from typing import Any

from hamnet_jobs.blobs import BlobStore, make_blobs
from hamnet_jobs.datasets import DatasetStore
from hamnet_jobs.record import utcnow
from hamnet_jobs.storage import Storage, make_storage
from hamnet_jobs.store import connect
from hamnet_jobs.trainings import TrainingStore, send_training

from hamnet_trainer.settings import TrainerSettings, get_settings

log = logging.getLogger("hamnet.trainer")


class TrainerRuntime:
    def __init__(self, settings: TrainerSettings) -> None:
        self.settings = settings
        self.client = connect(settings.redis_url)
        ttl = max(settings.job_ttl_s, 30 * 24 * 3600)
        self.trainings = TrainingStore(self.client, ttl=ttl)
        self.datasets = DatasetStore(self.client, ttl=ttl)
        self.storage: Storage = make_storage(settings).ensure()
        self.blobs: BlobStore = make_blobs(self.storage)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.current: tuple[str, str] | None = None  # (training id, lease token)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_heartbeat(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="trainer-heartbeat",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def beat(self) -> None:
        s = self.settings
        cur = self.current
        if cur is not None:
            self.trainings.renew(cur[0], cur[1], s.lease_s)
        self.trainings.heartbeat(self.name, {"name": self.name, "at": utcnow(),
                                             "busy_training": cur[0] if cur else None},
                                 3 * s.heartbeat_s)
        for tid in self.trainings.requeue_expired():
            log.warning("training %s lost its worker: queued again (resumes from its last "
                        "checkpoint)", tid)
            send_training(_app(), tid)

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_s):
            try:
                self.beat()
            except Exception:
                log.warning("trainer heartbeat failed", exc_info=True)


def _app() -> Any:
    from hamnet_worker.celery_app import get_app

    return get_app()


@lru_cache(maxsize=1)
def get_runtime() -> TrainerRuntime:
    return TrainerRuntime(get_settings())
