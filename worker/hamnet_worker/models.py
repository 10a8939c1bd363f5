"""The worker's registry models: loaded lazily when a job names one, kept in a bounded
least-recently-used cache keyed by bundle checksum.

Why by checksum: a registry version is immutable and its checksum identifies its files, so a
newly published model is served by a running worker on its first job (no restart), and two
names for the same bundle share one set of ONNX sessions. Why bounded: every loaded bundle
holds ONNX Runtime sessions (and GPU memory); ``HAMNET_MODEL_CACHE_SIZE`` caps how many
registry bundles a child keeps besides the default one, which stays loaded (most jobs use it,
and readiness reports it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hamnet_jobs.registry import ModelNotFound, ModelRegistry, ModelVersion

log = logging.getLogger("hamnet.worker")

Loader = Callable[[Path], Any]


class ModelCache:
    """checksum -> loaded bundle (its sessions live in ``hamnet.pipeline``'s caches, which
    :meth:`get` fills through ``load`` and eviction empties through ``hamnet.pipeline.evict``)."""

    def __init__(self, registry: ModelRegistry, fetch_root: Path, size: int,
                 load: Loader, evict: Callable[[Any], None]) -> None:
        self.registry = registry
        self.fetch_root = Path(fetch_root)
        self.size = max(1, int(size))
        self._load, self._evict = load, evict
        self._entries: OrderedDict[str, tuple[ModelVersion, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0
        self.evictions = 0

    def get(self, owner: str | None, ref: dict[str, Any]) -> Any:
        """The bundle a job's model reference names (``{"ref": "NAME@V", "checksum"}``),
        loaded once; :class:`ModelNotFound` when the version was deleted since the job was
        submitted, or its checksum is not the one the job was resolved to."""
        name, checksum = str(ref.get("ref") or ""), str(ref.get("checksum") or "")
        with self._lock:
            hit = self._entries.get(checksum)
            if hit is not None:
                self._entries.move_to_end(checksum)
                return hit[1]
        mv = self.registry.resolve(owner, name)
        if checksum and mv.checksum != checksum:
            raise ModelNotFound(f"model {name} is not the version this job was submitted "
                                "with any more")
        t0 = time.perf_counter()
        path = self.registry.fetch(mv, self.fetch_root)
        bundle = self._load(path)
        dropped = []
        with self._lock:
            self._entries[mv.checksum] = (mv, bundle)
            self._entries.move_to_end(mv.checksum)
            self.loads += 1
            while len(self._entries) > self.size:
                dropped.append(self._entries.popitem(last=False))
                self.evictions += 1
        for old_checksum, (old_mv, old_bundle) in dropped:
            self._evict(old_bundle)
            log.info("model cache: dropped %s (%s)", old_mv.ref, old_checksum[:12])
        log.info("loaded model %s (%s) in %.1f s", mv.ref, mv.checksum[:12],
                 time.perf_counter() - t0)
        return bundle

    def loaded(self) -> list[dict[str, Any]]:
        """What the heartbeat reports: the registry models this child holds, most recent
        last."""
        with self._lock:
            return [{"ref": mv.ref, "checksum": c} for c, (mv, _) in self._entries.items()]
