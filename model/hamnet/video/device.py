"""Running ONNX Runtime sessions with inputs and outputs on the provider's device.

Why I/O binding: ``InferenceSession.run`` takes numpy arrays, copies them to the device, runs,
and copies every output back, on every call. With ``io_binding`` an input that is already an
``OrtValue`` on the device (the TV-L1 flow of :class:`hamnet.video.tvl1.TVL1Flow`) is used in
place, and the output is allocated on the device and copied back once, as the small
``[N, 1024]`` feature matrix. On the CPU provider the same code runs with device ``"cpu"``
(binding a numpy array there wraps its memory, no copy), so the GPU path is the one the tests
exercise.

Batches are sized to the device (:func:`snippet_batch`): a setting when given, else from the
free device memory on CUDA (a 16x224x224 snippet needs about :data:`SNIPPET_BYTES` of
activations), and a small number on CPU, where a bigger batch only adds latency and memory.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: Peak activation memory per 16x224x224 snippet through one I3D stream, with head room for
#: cuDNN workspaces (the largest activation, Conv3d_1a's 64x8x112x112 output, is 25 MB in
#: fp32; ORT's planner keeps a few of that size alive).
SNIPPET_BYTES = {"fp32": 192 << 20, "fp16": 96 << 20}
CPU_BATCH = 4
MAX_DEVICE_BATCH = 32  # also bounds the TV-L1 batch (15 pairs per snippet) and host RAM
DEVICE_MEMORY_SHARE = 0.5  # of the free memory: the other stream, flow and other jobs need some


def device_of(provider: str) -> tuple[str, int]:
    """ORT device ``(type, id)`` whose memory a provider's kernels read and write."""
    return ("cuda", 0) if provider == "CUDAExecutionProvider" else ("cpu", 0)


def free_device_memory(device: str = "cuda") -> int | None:
    """Free bytes on GPU 0, or None when unknown (no GPU, no driver tools).

    Asks the CUDA runtime (``cudaMemGetInfo``: what this process could allocate) and falls
    back to ``nvidia-smi``; ONNX Runtime has no API for it."""
    if device != "cuda":
        return None
    for name in ("libcudart.so", "libcudart.so.12", "libcudart.so.11.0"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        if lib.cudaMemGetInfo(ctypes.byref(free), ctypes.byref(total)) == 0:
            return int(free.value)
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            out = subprocess.run(
                [smi, "--query-gpu=memory.free", "--format=csv,noheader,nounits", "-i", "0"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout.strip()
            return int(float(out.splitlines()[0])) << 20
        except (OSError, subprocess.SubprocessError, ValueError, IndexError):
            return None
    return None


def snippet_batch(device: str, precision: str, setting: int | None = None) -> int:
    """Snippets per device call: ``setting`` (or ``$HAMNET_I3D_BATCH``) when given; on CUDA
    the share :data:`DEVICE_MEMORY_SHARE` of the free memory divided by
    :data:`SNIPPET_BYTES` (1..:data:`MAX_DEVICE_BATCH`); on CPU :data:`CPU_BATCH`."""
    if setting is None and os.environ.get("HAMNET_I3D_BATCH"):
        setting = int(os.environ["HAMNET_I3D_BATCH"])
    if setting is not None:
        if int(setting) < 1:
            raise ValueError(f"snippet batch must be >= 1, got {setting}")
        return int(setting)
    if device != "cuda":
        return CPU_BATCH
    free = free_device_memory(device)
    if free is None:
        return 8
    n = int(free * DEVICE_MEMORY_SHARE) // SNIPPET_BYTES.get(precision, SNIPPET_BYTES["fp32"])
    return max(1, min(MAX_DEVICE_BATCH, n))


def _ort() -> Any:
    import onnxruntime as ort

    return ort


def is_ortvalue(x: Any) -> bool:
    try:
        return isinstance(x, _ort().OrtValue)
    except ModuleNotFoundError:  # pragma: no cover
        return False


def to_device(x: np.ndarray | Any, device: tuple[str, int]) -> Any:
    """An ``OrtValue`` on ``device`` (an OrtValue is passed through: it already lives there)."""
    if is_ortvalue(x):
        return x
    return _ort().OrtValue.ortvalue_from_numpy(np.ascontiguousarray(x), device[0], device[1])


def run_bound(
    sess: Any, inputs: Mapping[str, np.ndarray | Any], output: str, device: tuple[str, int]
) -> np.ndarray:
    """Run ``sess`` with every input bound on ``device`` and ``output`` allocated there;
    returns the output copied to the host."""
    binding = sess.io_binding()
    for name, x in inputs.items():
        binding.bind_ortvalue_input(name, to_device(x, device))
    binding.bind_output(output, device[0], device[1])
    sess.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()[0]


def ortvalue_shape(x: np.ndarray | Any) -> tuple[int, ...]:
    return tuple(x.shape()) if is_ortvalue(x) else tuple(np.shape(x))


__all__ = [
    "CPU_BATCH",
    "SNIPPET_BYTES",
    "device_of",
    "free_device_memory",
    "is_ortvalue",
    "ortvalue_shape",
    "run_bound",
    "snippet_batch",
    "to_device",
]
