"""Probe an upload in a child process, so that untrusted bytes are never decoded in the gateway.

:func:`probe_upload` runs ``python -m hamnet_service._probe_child`` with CPU-time, address-space,
open-file, output-size and wall-clock limits; a hostile file can hang, exhaust or crash only
that child. The gateway itself never imports PyAV for it.

What the caller gets:

* the video's ``{"duration", "fps", "width", "height", "rotation", "codec"}``;
* :class:`~hamnet_service.errors.ApiError` 415/422 when the input is unusable (the mapping the
  jobs route always had, plus ``video_too_long``/``resolution_too_large``/``duration_unknown``
  from the decoder and ``probe_timeout``/``probe_resource_limit``/``probe_crashed`` for a child
  that ran out of time, hit a resource limit or died on a signal);
* :class:`ProbeCrashed` (an unexpected error: the 500 handler answers it with a request id) when
  the child failed for a reason that is not the input's fault, e.g. a programming error or a
  broken PyAV installation. The child's traceback is logged at ERROR here.

Messages name the client's ``filename`` only, never the server-side path.

Cost: one interpreter start plus the NumPy/PyAV imports per upload, about 0.17 s on a small
MP4 (2-core x86 box; in-process probing took 2-4 ms). Without bytecode caches (an image built
with ``--no-compile`` whose site-packages the service user cannot write) it is about 0.45 s:
precompile the virtual environment (``python -m compileall``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import select
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hamnet_service.errors import ApiError

log = logging.getLogger(__name__)

# Decoders that PyAV happily opens as a one-frame "video" (image2 demuxer).
STILL_CODECS = frozenset({
    "png", "mjpeg", "bmp", "tiff", "webp", "jpeg2000", "jpegls", "ppm", "pgm", "pbm", "pam",
    "qoi", "sgi", "targa", "dpx", "exr", "jpegxl",
})
_MIN_SIDE = 16  # px; below this nothing useful can be detected
_MAX_FPS = 1000.0
# How C libraries that exit (not raise) on a failed allocation say so on stderr.
_ENOMEM_TEXT = ("memory allocation", "cannot allocate memory", "out of memory")
_READ_CAP = 1 << 20  # bytes of the child's stdout/stderr read back
_LOG_TAIL = 4000  # characters of the child's stderr put in a log line
# Environment passed to the child: what finds the interpreter's packages and nothing else
# (no credentials, no HAMNET_* settings).
_ENV_KEEP = ("PATH", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH", "LANG", "LC_ALL", "TMPDIR")
_CHILD_ENV = {
    # OpenBLAS (imported with NumPy) reserves address space per thread: one thread keeps the
    # child's footprint independent of the machine's core count.
    "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
    "PYTHONIOENCODING": "utf-8",
}


class ProbeCrashed(RuntimeError):
    """The probe child failed for a reason that is not the upload's fault (a bug, a broken
    installation). Not an :class:`ApiError`: the gateway's handler turns it into a 500."""


@dataclass(frozen=True)
class ProbeLimits:
    """Limits of one probe. Process limits apply to the child; content limits are checked by
    the decoder (when it supports them) and again on the probed values.

    ``timeout_s``: wall clock, child start included (422 ``probe_timeout``).
    ``cpu_s``: ``RLIMIT_CPU`` of the child, all threads (422 ``probe_resource_limit``).
    ``memory_mb``: ``RLIMIT_AS`` (address space) of the child (422 ``probe_resource_limit``).
    The child's peak is about 250 MiB of address space (NumPy + PyAV, a small MP4) and about
    330 MiB for an 8K H.264 frame on 2 cores; 1 GiB leaves room for ffmpeg's per-thread stacks
    and buffers on many-core machines.
    Content limits (passed to :func:`hamnet.video.decode.probe`, which checks them before
    decoding a picture and measures a duration the container does not declare):
    ``max_duration_s``/``min_duration_s``/``max_dimension``: ``HAMNET_MAX_DURATION_S``,
    ``HAMNET_MIN_DURATION_S`` and ``HAMNET_MAX_DIMENSION``'s defaults (build from the settings
    with :meth:`from_settings`).
    ``max_pixels``: width x height; the default 8192 x 8192 rejects nothing that
    ``max_dimension`` accepts (``None``: no pixel-count limit).
    """

    timeout_s: float = 20.0
    cpu_s: float = 10.0
    memory_mb: int = 1024
    max_duration_s: float = 4 * 3600.0
    min_duration_s: float = 0.5
    max_dimension: int = 8192
    max_pixels: int | None = 8192 * 8192

    @classmethod
    def from_settings(cls, settings: Any, **overrides: Any) -> ProbeLimits:
        """All limits from a :class:`~hamnet_service.settings.ServiceSettings`
        (``HAMNET_PROBE_*`` for the child process, the content limits shared with workers)."""
        return cls(**{"timeout_s": settings.probe_timeout_s, "cpu_s": settings.probe_cpu_s,
                      "memory_mb": settings.probe_memory_mb,
                      "max_duration_s": settings.max_duration_s,
                      "min_duration_s": settings.min_duration_s,
                      "max_dimension": settings.max_dimension,
                      "max_pixels": settings.max_pixels, **overrides})


def probe_upload(path: Path, filename: str, limits: ProbeLimits) -> dict[str, Any]:
    """Probe ``path`` (an upload, named ``filename`` by the client) in a child process.

    Synchronous (call it from a thread pool); returns the video's
    ``{"duration", "fps", "width", "height", "rotation", "codec"}``; raises :class:`ApiError`
    (the input's fault) or :class:`ProbeCrashed` (ours).
    """
    result = _run_child(Path(path), filename, limits)
    if "ok" in result:
        return _check(result["ok"], filename, limits)
    err = result.get("error") or {}
    kind = err.get("kind")
    if kind == "video":
        raise _video_error(err.get("code", "invalid_video"), filename, limits)
    if kind == "decoder":  # an FFmpeg surprise on hostile input is still the input's fault
        raise ApiError(422, "invalid_video", f"{filename}: the video cannot be read")
    if kind == "resource":
        reason = (str(err.get("message") or "").strip().splitlines() or [""])[-1]
        log.warning("probe of %r hit a resource limit: %s", filename, reason[:_LOG_TAIL])
        raise _resource_error(filename)
    tb = err.get("traceback") or json.dumps(result)[:_LOG_TAIL]
    log.error("probe child failed with a programming error (upload %r):\n%s", filename, tb)
    raise ProbeCrashed(f"probe child: {err.get('class', 'unknown error')} "
                       f"(see the log for the traceback)\n{tb}")


# ------------------------------------------------------------------------------- the child


def _child_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in _ENV_KEEP if k in os.environ}
    env.update(_CHILD_ENV)
    return env


def _command(path: Path, limits: ProbeLimits) -> list[str]:
    # -P (3.11+): the working directory is not put on sys.path, so nothing in it can shadow a
    # module the child imports.
    flags = ["-P"] if sys.version_info >= (3, 11) else []
    return [sys.executable, *flags, "-m", "hamnet_service._probe_child", str(path.absolute()),
            json.dumps(asdict(limits))]


def _read(fh: Any) -> str:
    fh.seek(0)
    return fh.read(_READ_CAP).decode("utf-8", "replace")


def _run_child(path: Path, filename: str, limits: ProbeLimits) -> dict[str, Any]:
    """Run the child; its one-line JSON answer, or raise for a child that did not give one."""
    # Output goes to files, not pipes: nothing to drain while waiting, and the child's
    # RLIMIT_FSIZE bounds how much a noisy decoder can write.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            _command(path, limits), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            close_fds=True, env=_child_env(), start_new_session=True,
        )
        try:
            rc = _wait(proc, limits.timeout_s)
        except subprocess.TimeoutExpired:
            _kill(proc)
            log.warning("probe of %r killed after %.3g s (wall-clock limit)", filename,
                        limits.timeout_s)
            raise ApiError(422, "probe_timeout", f"{filename}: the video took too long to "
                           "inspect") from None
        except BaseException:  # e.g. KeyboardInterrupt: never leave a child behind
            _kill(proc)
            raise
        stdout, stderr = _read(out), _read(err)
    if rc < 0:
        raise _signal_error(-rc, filename, stderr)
    line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    try:
        result = json.loads(line)
        if not isinstance(result, dict) or not ({"ok", "error"} & set(result)):
            raise ValueError("not a probe answer")
    except ValueError:
        if any(m in stderr.lower() for m in _ENOMEM_TEXT):
            # a C library that exits on a failed allocation (OpenBLAS does, while NumPy is
            # imported under a tight RLIMIT_AS)
            log.warning("probe of %r ran out of memory: %s", filename, stderr[-_LOG_TAIL:])
            raise _resource_error(filename) from None
        log.error("probe child exited with status %s and no answer (upload %r); stderr:\n%s",
                  rc, filename, stderr[-_LOG_TAIL:])
        raise ProbeCrashed(f"probe child exited with status {rc} and no answer\n"
                           f"{stderr[-_LOG_TAIL:]}") from None
    return result


def _wait(proc: subprocess.Popen, timeout: float) -> int:
    """``proc.wait(timeout)`` without its polling (which sleeps up to 50 ms between checks, a
    quarter of a probe): wait on a pidfd where the platform has them."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # not Linux >= 5.3
        return proc.wait(timeout=timeout)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        if not poller.poll(max(0, math.ceil(timeout * 1000))):
            raise subprocess.TimeoutExpired(proc.args, timeout)
    finally:
        os.close(fd)
    return proc.wait()


def _kill(proc: subprocess.Popen) -> None:
    """SIGKILL the child's whole process group (its own session), then reap it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.kill()  # in case it left its process group
    proc.wait()


# Signals the child's limits deliver: RLIMIT_CPU soft/hard (SIGXCPU, then SIGKILL; SIGKILL is
# also the kernel's OOM killer), RLIMIT_FSIZE (SIGXFSZ).
_RESOURCE_SIGNALS = {signal.SIGXCPU, signal.SIGKILL, signal.SIGXFSZ}


def _signal_error(signum: int, filename: str, stderr: str) -> ApiError:
    name = _signal_name(signum)
    if signum == signal.SIGALRM:  # the child's own wall-clock backstop
        log.warning("probe of %r ended by its wall-clock backstop", filename)
        return ApiError(422, "probe_timeout", f"{filename}: the video took too long to inspect")
    if signum in _RESOURCE_SIGNALS:
        log.warning("probe of %r killed by %s (resource limit)", filename, name)
        return _resource_error(filename)
    # SIGSEGV/SIGABRT/...: the decoder crashed on these bytes (or an allocation failed under
    # the address-space limit in C code). Logged loudly: if every upload did this, the
    # installation would be at fault, not the uploads.
    log.warning("probe of %r crashed with %s; stderr:\n%s", filename, name, stderr[-_LOG_TAIL:])
    return ApiError(422, "probe_crashed", f"{filename}: the video crashed the decoder")


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _resource_error(filename: str) -> ApiError:
    return ApiError(422, "probe_resource_limit",
                    f"{filename}: inspecting the video needs more CPU time or memory than "
                    "allowed")


# ------------------------------------------------------------------------------ the mapping


def _video_error(code: str, filename: str, limits: ProbeLimits) -> ApiError:
    """A :class:`hamnet.errors.VideoError` raised in the child, by its ``code``."""
    if code == "not_a_video":
        return ApiError(415, "not_a_video", f"{filename}: not a video file")
    if code == "no_video_stream":
        return ApiError(415, "no_video_stream", f"{filename}: the file has no video stream")
    if code == "corrupt_video":
        return ApiError(422, "corrupt_video", f"{filename}: the video cannot be decoded")
    if code == "video_too_short":
        return ApiError(422, "video_too_short", f"{filename}: the video is too short")
    if code == "video_too_long":
        return ApiError(422, "video_too_long",
                        f"{filename}: longer than {limits.max_duration_s:g} s")
    if code == "resolution_too_large":
        return ApiError(422, "resolution_too_large", f"{filename}: exceeds "
                        f"{_size_limit(limits)}")
    if code == "duration_unknown":
        return ApiError(422, "duration_unknown",
                        f"{filename}: the video does not declare its duration")
    return ApiError(422, code or "invalid_video", f"{filename}: unusable video")


def _size_limit(limits: ProbeLimits) -> str:
    text = f"{limits.max_dimension} px per side"
    if limits.max_pixels is not None:
        text += f" or {limits.max_pixels} pixels"
    return text


def _check(info: dict[str, Any], filename: str, limits: ProbeLimits) -> dict[str, Any]:
    """The checks on probed values (the jobs route's, in the same order and wording)."""
    duration, fps = float(info["duration"]), float(info["fps"])
    width, height = int(info["width"]), int(info["height"])
    frames = int(info.get("num_frames_est", 0))
    # One picture in an image codec. (The route also required "no declared duration"; the
    # limited probe now measures undeclared durations, so a PNG reports one frame's worth.)
    if info["codec"] in STILL_CODECS and frames <= 1:
        raise ApiError(415, "not_a_video", f"{filename}: a still image, not a video")
    if width < _MIN_SIDE or height < _MIN_SIDE:
        raise ApiError(422, "resolution_too_small",
                       f"{filename}: {width}x{height} is below {_MIN_SIDE}x{_MIN_SIDE} pixels")
    if width > limits.max_dimension or height > limits.max_dimension:
        raise ApiError(422, "resolution_too_large",
                       f"{filename}: {width}x{height} exceeds {limits.max_dimension} px")
    if limits.max_pixels is not None and width * height > limits.max_pixels:
        raise ApiError(422, "resolution_too_large",
                       f"{filename}: {width}x{height} exceeds {limits.max_pixels} pixels")
    if not (0 < fps <= _MAX_FPS) or not math.isfinite(duration) or duration < 0:
        raise ApiError(422, "invalid_timing", f"{filename}: implausible frame rate or duration")
    if (0 < duration < limits.min_duration_s) or frames == 1:
        raise ApiError(422, "video_too_short",
                       f"{filename}: shorter than {limits.min_duration_s:g} s")
    if duration > limits.max_duration_s:
        raise ApiError(422, "video_too_long",
                       f"{filename}: {duration:.0f} s exceeds {limits.max_duration_s:.0f} s")
    return {"duration": duration, "fps": fps, "width": width, "height": height,
            "rotation": int(info["rotation"]), "codec": str(info["codec"])}
