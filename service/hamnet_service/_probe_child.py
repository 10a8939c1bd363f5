"""Child process of :mod:`hamnet_service.probing`: probe ONE untrusted upload under resource
limits and print ONE JSON line on stdout.

    python -P -m hamnet_service._probe_child <path> <limits json>

The limits are applied to this process first, before PyAV/NumPy are imported (so a hostile file
cannot use more than they allow, and neither can the imports). Output, always a single line:

* ``{"ok": {duration, fps, width, height, rotation, num_frames_est, codec}}``
* ``{"error": {"kind": "video", "code", "message", "class"}}``: the input's fault, a
  :class:`hamnet.errors.VideoError` (``code`` says why)
* ``{"error": {"kind": "decoder", "message", "class"}}``: the input's fault too, an FFmpeg
  error or undecodable metadata that ``hamnet`` did not map
* ``{"error": {"kind": "resource", "message"}}``: an allocation failed under ``RLIMIT_AS``
* ``{"error": {"kind": "bug", "class", "traceback"}}``: anything else (a programming error or a
  broken installation), which the gateway logs and answers with a 500

Signals end the process for the other limits: ``SIGXCPU``/``SIGKILL`` (CPU time),
``SIGXFSZ`` (output size), ``SIGALRM`` (a wall-clock backstop in case the gateway died).

Deliberately light: imports only the standard library, then ``hamnet.video.decode`` and
``hamnet.errors`` (never FastAPI, the service or ONNX Runtime).
"""

from __future__ import annotations

import json
import math
import resource
import signal
import sys
import traceback
from typing import Any

_NOFILE = 64  # the interpreter, PyAV's libraries and one input file need far fewer
_FSIZE = 4 * 1024 * 1024  # stdout/stderr are files in the gateway: cap what a decoder may log
# What the dynamic loader says when it cannot map a library under RLIMIT_AS.
_ENOMEM_IMPORT = ("cannot allocate memory", "failed to map segment")


def _set_limits(limits: dict[str, Any]) -> None:
    cpu = max(1, math.ceil(float(limits["cpu_s"])))
    mem = int(float(limits["memory_mb"]) * 1024 * 1024)
    # soft limit: SIGXCPU; hard limit one second later: SIGKILL (if SIGXCPU were ignored)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (_FSIZE, _FSIZE))
    _, nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    nofile = _NOFILE if nofile_hard == resource.RLIM_INFINITY else min(_NOFILE, nofile_hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    # Backstop for a child whose gateway died before it could kill it: SIGALRM's default
    # action ends the process even while it is blocked inside a C library.
    signal.alarm(max(1, math.ceil(float(limits["timeout_s"]))) + 2)


def _probe(path: str, limits: dict[str, Any]) -> dict[str, Any]:
    from hamnet.video.decode import probe

    info = probe(path, max_duration_s=limits["max_duration_s"],
                 max_dimension=limits["max_dimension"], max_pixels=limits["max_pixels"])
    return info.to_dict()


def _input_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "this file is unusable": raised on hostile bytes, not on our bugs."""
    import av.error
    from hamnet.errors import VideoError

    # UnicodeDecodeError: PyAV decodes container metadata strictly, and the bytes are the
    # uploader's.
    return (VideoError, av.error.FFmpegError, UnicodeDecodeError)


def run(argv: list[str]) -> dict[str, Any]:
    try:
        path, raw = argv
        limits = json.loads(raw)
        _set_limits(limits)
        return {"ok": _probe(path, limits)}
    except MemoryError as e:  # before the input errors: av.error.MemoryError is both
        return {"error": {"kind": "resource", "message": f"{type(e).__name__}: {e}"}}
    except ImportError as e:
        if any(s in str(e).lower() for s in _ENOMEM_IMPORT):
            return {"error": {"kind": "resource", "message": f"{type(e).__name__}: {e}"}}
        return _bug(e)
    except Exception as e:
        try:
            input_errors = _input_errors()
        except Exception:  # a broken installation: report the original error as the bug
            input_errors = ()
        if not isinstance(e, input_errors):
            return _bug(e)
        if isinstance(e, input_errors[0]):  # hamnet's VideoError: its code says why
            return {"error": {"kind": "video", "code": e.code, "message": str(e),
                              "class": type(e).__name__}}
        return {"error": {"kind": "decoder", "message": str(e), "class": type(e).__name__}}


def _bug(e: BaseException) -> dict[str, Any]:
    return {"error": {"kind": "bug", "class": type(e).__name__,
                      "traceback": "".join(traceback.format_exception(e))}}


def main() -> int:
    out = run(sys.argv[1:])
    try:
        line = json.dumps(out, allow_nan=True)
    except (TypeError, ValueError) as e:  # a non-serialisable field is our bug too
        line = json.dumps(_bug(e))
    sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
