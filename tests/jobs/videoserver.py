"""A real loopback HTTP server for the remote-source tests: serves byte strings by path with
``Range``/``If-Range`` support, and misbehaves on request (drops the connection mid-body,
lies about ``Content-Length``, ignores ``Range``, changes the file, redirects, stalls, answers
an error status). Listens on 127.0.0.x only; records every request."""

from __future__ import annotations

import http.server
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Item:
    """What one path serves. ``drop_after``: bytes of body sent before the connection is cut,
    for the first ``drops`` responses; ``lie_length``: the Content-Length announced instead of
    the real one (the body sent is the real one, cut to the lie when shorter);
    ``no_length``: close-delimited body; ``ranges``: honour Range; ``status``/``headers``:
    answer this instead (a redirect, an error); ``stall_s``: sleep before the body (on the
    first ``stall_gets`` GETs);
    ``change_after``: after this many GETs, serve ``changed`` (a new ETag)."""

    body: bytes = b""
    ctype: str = "video/mp4"
    ranges: bool = True
    drop_after: int | None = None
    drops: int = 0
    lie_length: int | None = None
    no_length: bool = False
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stall_s: float = 0.0
    stall_gets: int | None = None  # stall only the first N GETs (None: every one)
    change_after: int | None = None
    changed: bytes = b""
    etag: bool = True
    gets: int = 0


class VideoServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        assert host.startswith("127."), "tests only ever listen (and send) on loopback"
        self.items: dict[str, Item] = {}
        self.requests: list[dict[str, Any]] = []
        self.bytes_sent = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                outer.requests.append({"path": self.path, "headers": dict(self.headers)})
                item = outer.items.get(self.path.split("?")[0])
                if item is None:
                    return self._send(404, {"Content-Type": "text/plain"}, b"no such file")
                item.gets += 1
                if item.status is not None:
                    return self._send(item.status, item.headers, b"")
                body = item.body
                version = 1
                if item.change_after is not None and item.gets > item.change_after:
                    body, version = item.changed, 2
                etag = f'"v{version}-{len(body)}"'
                start = 0
                rng = self.headers.get("Range")
                status = 200
                if rng and item.ranges:
                    m = re.match(r"bytes=(\d+)-$", rng)
                    if_range = self.headers.get("If-Range")
                    if m and (if_range is None or if_range == etag):
                        start = int(m.group(1))
                        if start >= len(body):
                            return self._send(416, {"Content-Range": f"bytes */{len(body)}"},
                                              b"")
                        status = 206
                part = memoryview(body)[start:]  # no copies: large bodies stay cheap
                hdrs = {"Content-Type": item.ctype, **item.headers}
                if item.etag:
                    hdrs["ETag"] = etag
                if status == 206:
                    hdrs["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
                if item.ranges:
                    hdrs["Accept-Ranges"] = "bytes"
                length = len(part) if item.lie_length is None else item.lie_length
                if not item.no_length:
                    hdrs["Content-Length"] = str(length)
                self.send_response(status)
                for k, v in hdrs.items():
                    self.send_header(k, v)
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.flush()
                if item.stall_s and (item.stall_gets is None or item.gets <= item.stall_gets):
                    time.sleep(item.stall_s)
                send = part[:length] if item.lie_length is not None else part
                if item.drop_after is not None and item.drops > 0:
                    item.drops -= 1
                    send = send[:item.drop_after]
                    self._write(send)
                    self._cut()
                    return None
                self._write(send)
                self.close_connection = True
                return None

            def _write(self, data: bytes | memoryview) -> None:
                try:
                    for i in range(0, len(data), 64 << 10):
                        chunk = data[i:i + (64 << 10)]
                        self.wfile.write(chunk)
                        outer.bytes_sent += len(chunk)
                    self.wfile.flush()
                except OSError:
                    pass

            def _cut(self) -> None:
                """Close the TCP connection at once (as a dropped link would)."""
                self.close_connection = True
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def log_message(self, *a: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

        self.srv = Server((host, port), Handler)
        self.host, self.port = self.srv.server_address[:2]
        self._thread = threading.Thread(target=self.srv.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str) -> str:
        return f"http://{self.host}:{self.port}{path}"

    def add(self, path: str, **kw: Any) -> str:
        self.items[path] = Item(**kw)
        return self.url(path)

    def start(self) -> VideoServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.srv.shutdown()
        self.srv.server_close()

    def __enter__(self) -> VideoServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
