"""ONNX Runtime runner of the exported HAM-Net head (features -> element logits, attention).

Why a separate runner: the worker and the service-side pipeline must localize actions without
torch. The graph contract (``hamnet.nn.export``) is: input ``features`` [B, T, D] float32 with
dynamic B and T, outputs ``cas`` [B, T, C+1] (element logits, background last) and
``attention`` [B, T, 1]. The session is created lazily on first use, so constructing a
:class:`HeadSession` (e.g. while loading a bundle) is free and ``onnxruntime`` is imported only
when a prediction actually runs. CUDA is preferred when available, CPU is the fallback, and
``.provider`` reports what was really used.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hamnet.errors import CheckpointError, DataError, MissingDependencyError

INPUT_NAME = "features"
OUTPUT_NAMES = ("cas", "attention")
_PREFERRED = ("CUDAExecutionProvider", "CPUExecutionProvider")


def _import_ort() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError(
            "running the HAM-Net head needs onnxruntime (pip install 'hamnet[video]')"
        ) from None
    return ort


class HeadSession:
    """Lazily created ONNX Runtime session of the HAM-Net head.

    ``providers`` overrides the provider preference (e.g. ``["CPUExecutionProvider"]``);
    ``threads`` caps intra-op threads (``None`` = ONNX Runtime's default).
    """

    def __init__(
        self,
        onnx_path: str | Path,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
    ) -> None:
        self.path = Path(onnx_path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: ONNX head model not found")
        self._providers = list(providers) if providers is not None else None
        self._threads = threads
        self._session: Any = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ session
    def _create(self) -> Any:
        ort = _import_ort()
        available = ort.get_available_providers()
        wanted = self._providers or [p for p in _PREFERRED if p in available]
        if not wanted:
            wanted = ["CPUExecutionProvider"]
        opts = ort.SessionOptions()
        if self._threads is not None:
            opts.intra_op_num_threads = int(self._threads)
        try:
            sess = ort.InferenceSession(str(self.path), sess_options=opts, providers=wanted)
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
            if "CPUExecutionProvider" in wanted and len(wanted) > 1:
                # A GPU provider that is listed but cannot start (driver/libs): fall back.
                try:
                    sess = ort.InferenceSession(
                        str(self.path), sess_options=opts, providers=["CPUExecutionProvider"]
                    )
                except Exception as e2:  # noqa: BLE001
                    raise CheckpointError(f"{self.path}: not a loadable ONNX model ({e2})") from None
            else:
                raise CheckpointError(f"{self.path}: not a loadable ONNX model ({e})") from None
        names_in = [i.name for i in sess.get_inputs()]
        names_out = [o.name for o in sess.get_outputs()]
        if names_in != [INPUT_NAME] or not set(OUTPUT_NAMES) <= set(names_out):
            raise CheckpointError(
                f"{self.path}: not a HAM-Net head graph (inputs {names_in}, outputs {names_out}; "
                f"expected input {INPUT_NAME!r} and outputs {list(OUTPUT_NAMES)})"
            )
        return sess

    @property
    def session(self) -> Any:
        if self._session is None:
            with self._lock:
                if self._session is None:
                    self._session = self._create()
        return self._session

    @property
    def provider(self) -> str:
        """The execution provider actually in use (creates the session if needed)."""
        return str(self.session.get_providers()[0])

    @property
    def feature_dim(self) -> int | None:
        """D of the ``features`` input when the graph fixes it (``None`` if dynamic)."""
        shape = self.session.get_inputs()[0].shape
        return shape[2] if len(shape) == 3 and isinstance(shape[2], int) else None

    @property
    def num_classes(self) -> int | None:
        """C (without background) when the graph fixes the ``cas`` width."""
        out = {o.name: o.shape for o in self.session.get_outputs()}["cas"]
        return out[2] - 1 if len(out) == 3 and isinstance(out[2], int) else None

    @property
    def metadata(self) -> dict[str, str]:
        """ONNX ``metadata_props`` (``hamnet.export`` stores feature size, classes, ...)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    @property
    def classes(self) -> list[str] | None:
        """Class names stored at export time (``hamnet.classes``, a JSON list), if any."""
        raw = self.metadata.get("hamnet.classes")
        if not raw:
            return None
        try:
            names = json.loads(raw)
        except json.JSONDecodeError:
            return None
        return [str(n) for n in names] if isinstance(names, list) else None

    # ------------------------------------------------------------------ run
    def run(self, features: Any, name: str = "features") -> tuple[np.ndarray, np.ndarray]:
        """Element logits and attention for ``features`` [T, D] or [B, T, D].

        Returns ``(elem, atn)`` as float32 arrays with the batch axis only if the input had one.
        ``name`` (e.g. the features file) is used in error messages.
        """
        x = np.asarray(features)
        if x.dtype.kind not in "fiu":
            raise DataError(f"{name}: features must be real numbers, got dtype {x.dtype}")
        squeeze = x.ndim == 2
        if squeeze:
            x = x[None]
        if x.ndim != 3 or x.shape[0] < 1 or x.shape[1] < 1:
            raise DataError(
                f"{name}: features must be [T, D] or [B, T, D] with T >= 1, got {np.shape(features)}"
            )
        d = self.feature_dim
        if d is not None and x.shape[2] != d:
            raise DataError(
                f"{name}: feature dimension {x.shape[2]} does not match the model ({d})"
            )
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not np.isfinite(x).all():
            raise DataError(f"{name}: features contain NaN or inf")
        elem, atn = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: x})
        elem = np.asarray(elem, dtype=np.float32)
        atn = np.asarray(atn, dtype=np.float32)
        return (elem[0], atn[0]) if squeeze else (elem, atn)
