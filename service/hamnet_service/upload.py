"""Streaming multipart upload: the request body goes straight from the socket into
``incoming/<id>.part`` with a running byte count and SHA-256, so a 2 GB upload costs a few
hundred kilobytes of gateway memory and an oversized one is cut off at the limit instead of
after it has been received. Any failure (limit, malformed body, client gone, disk full)
removes the partial file before the error leaves this module.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import re
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request
from python_multipart.exceptions import ParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect

from hamnet_service.errors import ApiError

FILE_FIELD = "file"


@dataclass
class Upload:
    path: Path
    size: int = 0
    sha256: str = ""
    filename: str = ""
    fields: dict[str, str] = field(default_factory=dict)


def safe_filename(name: str) -> str:
    """For display only (never a path): last path component, printable, at most 200 chars."""
    name = unicodedata.normalize("NFC", name).replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable())
    name = re.sub(r"^\.+", "", name).strip()
    return name[:200] or "video"


def _display_name(name: str) -> str:
    """A client-supplied field name, safe to echo in a message: printable, at most 64 chars."""
    name = "".join(ch for ch in name if ch.isprintable() and ch != "`")
    return name[:64] + ("..." if len(name) > 64 else "")


class _Receiver:
    """python-multipart callbacks writing the file part to disk and keeping small fields."""

    def __init__(self, path: Path, max_bytes: int, max_field: int, max_fields: int) -> None:
        self.up = Upload(path=path)
        self.max_bytes, self.max_field, self.max_fields = max_bytes, max_field, max_fields
        self._hash = hashlib.sha256()
        self._fh = None
        self._header_field = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._name: str | None = None
        self._value = bytearray()
        self._is_file = False
        self.files = 0
        self.parts = 0
        self.ended = False

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._acc("_header_field", d[s:e]),
            "on_header_value": lambda d, s, e: self._acc("_header_value", d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _acc(self, attr: str, data: bytes) -> None:
        setattr(self, attr, getattr(self, attr) + data)

    def _part_begin(self) -> None:
        self.parts += 1
        if self.parts > self.max_fields:
            raise ApiError(413, "too_many_fields", f"more than {self.max_fields} form fields")
        self._headers, self._name, self._value, self._is_file = {}, None, bytearray(), False

    def _header_end(self) -> None:
        self._headers[self._header_field.strip().lower()] = self._header_value.strip()
        self._header_field = self._header_value = b""

    def _headers_finished(self) -> None:
        disp, opts = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = opts.get(b"name")
        if disp != b"form-data" or name is None:
            raise ApiError(400, "malformed_multipart", "a part lacks Content-Disposition name")
        self._name = name.decode("utf-8", "replace")
        if self._name != FILE_FIELD and b"filename" in opts:
            # A file under another name (``-F video=@clip.mp4``): say so now, before its data
            # is buffered as a text field (which a real video overflows: field_too_large).
            raise ApiError(
                422, "missing_file",
                f"the video must be sent in the `{FILE_FIELD}` form field "
                f"(got it in `{_display_name(self._name)}`)",
            )
        if self._name == FILE_FIELD:
            self.files += 1
            if self.files > 1:
                raise ApiError(422, "too_many_files", "upload exactly one `file` per job")
            self._is_file = True
            raw = opts.get(b"filename", b"")
            self.up.filename = safe_filename(raw.decode("utf-8", "replace"))
            self._fh = open(self.up.path, "wb", buffering=1 << 20)  # noqa: SIM115

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._is_file:
            self.up.size += len(chunk)
            if self.up.size > self.max_bytes:
                raise ApiError(
                    413, "file_too_large", f"the video is larger than {self.max_bytes} bytes"
                )
            self._hash.update(chunk)
            self._fh.write(chunk)
        else:
            self._value += chunk
            if len(self._value) > self.max_field:
                raise ApiError(
                    413, "field_too_large",
                    f"form field {self._name!r} is longer than {self.max_field} bytes",
                )

    def _part_end(self) -> None:
        if self._is_file:
            fh, self._fh = self._fh, None
            fh.close()  # may raise ENOSPC (flushing the buffer): handled as 507 by receive()
        elif self._name is not None:
            try:
                self.up.fields[self._name] = self._value.decode("utf-8")
            except UnicodeDecodeError:
                raise ApiError(422, "invalid_parameter", f"{self._name}: not UTF-8") from None

    def _end(self) -> None:
        self.ended = True

    def touch(self) -> None:
        """Flush and bump the partial file's mtime: the sweeper judges liveness by mtime, and
        a slow client may take longer than the idle threshold to fill the write buffer."""
        if self._fh is not None:
            self._fh.flush()
            os.utime(self.up.path)

    def close(self) -> None:
        """Error path: release the file whatever happens (a full disk fails the flush again)."""
        fh, self._fh = self._fh, None
        if fh is not None:
            try:
                fh.close()
            except OSError:
                pass


class _IdleWatchdog:
    """Cancels the request's own task when no body bytes arrived for ``seconds``.

    Why not ``asyncio.wait_for(stream.__anext__(), ...)``: that reads in a second task, and a
    cancellation of the request task - which is how uvicorn ends requests still running when
    its shutdown grace period is over - was lost between the two, so the handler never
    cleaned up and its partial file stayed behind (tests/reliability/test_faults.py,
    ``test_gateway_dies_mid_upload[sigterm]``). A timer on the same task keeps one
    cancellation path, and ``fired`` tells our own timeout from anyone else's cancel."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        self._task = asyncio.current_task()
        self._loop = asyncio.get_running_loop()
        self._handle: asyncio.TimerHandle | None = None
        self.kick()

    def kick(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._handle = self._loop.call_later(self.seconds, self._fire)

    def _fire(self) -> None:
        self.fired = True
        if self._task is not None:
            self._task.cancel()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def _uncancel() -> None:
    """Python >= 3.11 counts cancellations; one we turn into a response must be taken back."""
    task = asyncio.current_task()
    if task is not None and hasattr(task, "uncancel"):
        task.uncancel()


async def receive(
    request: Request, path: Path, max_bytes: int, max_field: int, max_fields: int,
    idle_s: float = 60.0, require_file: bool = True,
) -> Upload:
    """Stream the multipart body into ``path``. ``idle_s`` is the sweeper's threshold for
    orphaned partial files: a live upload touches its file at least every ``idle_s / 4``,
    and a client that sends nothing for ``idle_s / 2`` gets 408 (its file would be swept).
    Without ``require_file`` a form with no ``file`` part is returned with ``size`` 0 (a
    ``source_url`` job, docs/SOURCES.md)."""
    ctype, opts = parse_options_header(request.headers.get("content-type"))
    if ctype != b"multipart/form-data" or not opts.get(b"boundary"):
        raise ApiError(
            415, "unsupported_media_type",
            "send the video as multipart/form-data with a `file` part",
        )
    declared = request.headers.get("content-length")
    slack = max_fields * (max_field + 1024)
    if declared and declared.isdigit() and int(declared) > max_bytes + slack:
        raise ApiError(413, "file_too_large", f"the upload is larger than {max_bytes} bytes")
    rx = _Receiver(path, max_bytes, max_field, max_fields)
    ok = False
    dog = _IdleWatchdog(idle_s / 2)
    try:
        try:
            parser = MultipartParser(opts[b"boundary"], rx.callbacks())
        except Exception:
            raise ApiError(400, "malformed_multipart", "invalid multipart boundary") from None
        last_touch = time.monotonic()
        try:
            async for chunk in request.stream():
                dog.kick()
                if chunk:
                    parser.write(chunk)
                if time.monotonic() - last_touch > idle_s / 4:
                    rx.touch()
                    last_touch = time.monotonic()
        except asyncio.CancelledError:
            _uncancel()
            if dog.fired:
                raise ApiError(408, "upload_stalled",
                               f"no upload data for {idle_s / 2:.0f} s") from None
            # the server is stopping (grace period over): tell the client to come back
            raise ApiError(503, "shutting_down", "the gateway is restarting; retry the upload",
                           headers={"Retry-After": "5"}) from None
        finally:
            dog.stop()
        parser.finalize()
        if not rx.ended:
            raise ApiError(400, "malformed_multipart", "the multipart body is incomplete")
        if rx.files == 0 and require_file:
            raise ApiError(422, "missing_file", "the form has no `file` part")
        if rx.files and rx.up.size == 0:
            raise ApiError(422, "empty_file", "the uploaded file is empty")
        rx.up.sha256 = rx._hash.hexdigest()
        ok = True
        return rx.up
    except ParseError as e:
        raise ApiError(400, "malformed_multipart", f"malformed multipart body: {e}") from None
    except ClientDisconnect:
        raise
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise ApiError(507, "insufficient_storage", "the upload store is full") from None
        raise
    finally:
        rx.close()
        if not ok:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
