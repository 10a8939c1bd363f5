"""A live video source on loopback for the stream tests and the stream benchmark: ffmpeg
plays a file in real time (``-re``, or ``-readrate R`` for R times real time) into an HLS
playlist that grows segment by segment, and a threaded HTTP server serves that directory.

Either part can be stopped on its own: stopping the server makes the source "go away" (the
playlist and segments become unreachable), which is what a dropped camera looks like to a
reader.
"""

from __future__ import annotations

import functools
import http.server
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # noqa: D102
        pass


class DirServer:
    """Serve ``root`` on ``127.0.0.1:port`` (threaded; stop and start again on the same port)."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.root, self.port = Path(root), port or free_port()
        self._srv: http.server.ThreadingHTTPServer | None = None

    def start(self) -> DirServer:
        handler = functools.partial(_Quiet, directory=str(self.root))
        http.server.ThreadingHTTPServer.allow_reuse_address = True
        self._srv = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self._srv.daemon_threads = True
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._srv is not None:
            self._srv.shutdown()
            self._srv.server_close()
            self._srv = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


class HLSWriter:
    """``ffmpeg`` re-encodes ``video`` with a 0.5 s GOP and writes ``out/index.m3u8`` with
    ``segment_s`` segments, at ``rate`` x real time (1.0: ``-re``). The playlist keeps every
    segment (``hls_list_size 0``) and gets ``#EXT-X-ENDLIST`` when the file has played."""

    def __init__(self, video: Path, out: Path, rate: float = 1.0, segment_s: float = 1.0,
                 loops: int = 0) -> None:
        self.video, self.out, self.rate, self.segment_s = Path(video), Path(out), rate, segment_s
        self.loops = loops
        self.proc: subprocess.Popen | None = None
        self.started_at: float | None = None

    def start(self) -> HLSWriter:
        shutil.rmtree(self.out, ignore_errors=True)
        self.out.mkdir(parents=True)
        pace = ["-re"] if self.rate == 1.0 else ["-readrate", str(self.rate)]
        loop = ["-stream_loop", str(self.loops)] if self.loops else []
        argv = ["ffmpeg", "-v", "error", "-nostdin", *pace, *loop, "-i", str(self.video),
                "-an", "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-crf", "15",
                "-g", "12", "-keyint_min", "12", "-sc_threshold", "0", "-threads", "1",
                "-f", "hls", "-hls_time", str(self.segment_s), "-hls_list_size", "0",
                "-hls_flags", "independent_segments+temp_file",
                str(self.out / "index.m3u8")]
        self.started_at = time.time()
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        return self

    def wait_playlist(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not (self.out / "index.m3u8").exists():
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"ffmpeg exited: {self.proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("no HLS playlist")
            time.sleep(0.1)

    def done(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
