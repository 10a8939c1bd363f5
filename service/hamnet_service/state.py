"""Process-wide clients of the gateway, created on first use (not at import, so that
``import hamnet_service.app`` needs neither Redis nor a bundle). Routes never call these
directly: they receive them through the dependencies in :mod:`hamnet_service.deps`, which
tests can override."""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from hamnet_jobs.queue import publisher as make_publisher
from hamnet_jobs.registry import ModelRegistry
from hamnet_jobs.storage import Storage, make_storage
from hamnet_jobs.store import JobStore, connect
from hamnet_jobs.telemetry import Telemetry

from hamnet_service.settings import get_settings


@lru_cache(maxsize=1)
def store() -> JobStore:
    s = get_settings()
    return JobStore(connect(s.redis_url), ttl=s.job_ttl_s)


@lru_cache(maxsize=1)
def telemetry() -> Telemetry:
    return Telemetry(store().r)


@lru_cache(maxsize=1)
def storage() -> Storage:
    return make_storage(get_settings()).ensure()


@lru_cache(maxsize=1)
def publisher() -> Any:
    s = get_settings()
    return make_publisher(s.redis_url, queue=s.queue)


class ModelState:
    """The bundle's manifest, loaded once (numpy-only ``hamnet.bundle``: no ONNX Runtime).
    A failure is remembered and retried on the next call, so a bundle that appears after
    the gateway started (``hamnet demo`` still running) is picked up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bundle: Any = None
        self.error: str | None = None

    def path(self) -> Path:
        configured = get_settings().bundle
        if configured is not None:
            return Path(configured)
        from hamnet.paths import default_bundle_dir

        return Path(default_bundle_dir())

    def get(self) -> Any | None:
        with self._lock:
            if self._bundle is None:
                try:
                    from hamnet.bundle import load_bundle

                    self._bundle = load_bundle(self.path(), verify=False)
                    self.error = None
                except Exception as e:
                    self.error = f"{type(e).__name__}: {e}"
            return self._bundle

    def ref(self) -> dict[str, Any] | None:
        b = self.get()
        if b is None:
            return None
        return {"name": b.name, "version": b.version, "checksum": b.checksum}


model_state = ModelState()


def get_model_state() -> ModelState:
    return model_state


@lru_cache(maxsize=1)
def registry() -> ModelRegistry:
    """The model registry (named, versioned bundles; ``default`` is :data:`model_state`'s
    bundle, the one the deployment is configured with)."""
    return ModelRegistry(store().r, storage(), default_bundle=model_state.path)
