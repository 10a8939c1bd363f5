"""Process harness of the reliability tests: a whole stack (redis-server, workers, gateway) per
test module, plus a loopback TCP proxy in front of Redis that can freeze one worker request.

Why a proxy: the interesting races (cancel while a job is in a given stage, kill -9 "mid-job",
Redis going away with a job half done) depend on where the worker is, and sleeping until it is
probably there is flaky on two shared cores. The worker talks to Redis through the proxy; a test
arms a *hold* on a byte pattern that only one write contains (e.g. the job record with
``"stage": "localize"``), and the proxy stops forwarding that connection when the pattern goes
by. The worker is then provably blocked at that point, and the test does its thing (DELETE,
kill -9, restart Redis) before releasing it. Nothing is mocked: the worker, Redis, Celery and
the gateway are the real processes.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import redis

sys.path.append(str(Path(__file__).resolve().parents[1] / "service"))

from hamnet_procs import (  # noqa: E402
    Proc,
    RedisServer,
    free_port,
    hamnet_argv,
    start_gateway,
    start_worker,
    wait_for,
)

TERMINAL = ("succeeded", "failed", "cancelled")


def ensure_test_bundle(cache: Path) -> Path:
    """An *untrained* HAM-Net head on the weight-free motion backbone, built once under
    ``cache`` (keyed by the bundle and backbone sources): the reliability tests and the load
    bench are about what the service does with jobs, not about accuracy, and this builds in
    seconds. Needs torch (to export the head) the first time only."""
    import hashlib

    import hamnet.bundle
    import hamnet.video.motion

    key = hashlib.sha256(Path(hamnet.bundle.__file__).read_bytes()
                         + Path(hamnet.video.motion.__file__).read_bytes()).hexdigest()[:12]
    out = cache / f"reliability-bundle-{key}"
    try:
        hamnet.bundle.load_bundle(out)
        return out
    except Exception:
        import shutil

        shutil.rmtree(out, ignore_errors=True)
    from hamnet.config import ModelConfig
    from hamnet.nn.export import export_onnx
    from hamnet.nn.model import HAMNet
    from hamnet.video.backbone import load_backbone

    cache.mkdir(parents=True, exist_ok=True)
    spec = load_backbone("motion").spec
    classes = ["wave", "jump", "spin"]
    model = HAMNet(ModelConfig(feature_size=spec.feature_dim, num_class=len(classes)))
    onnx = cache / f"head-{key}.onnx"
    export_onnx(model, onnx)
    return hamnet.bundle.write_bundle(out, onnx, classes, spec, name="reliability",
                                      version="0")


class Hold:
    """One armed hold: ``hit`` is set when the pattern went by (the connection is then frozen
    until ``release``)."""

    def __init__(self, pattern: bytes) -> None:
        self.pattern = pattern
        self.hit = threading.Event()
        self.released = threading.Event()
        self.dropped = False

    def release(self) -> None:
        self.released.set()

    def drop(self) -> None:
        """Close the held connection instead of forwarding: the bytes never reach Redis, as
        when the sender is killed before its write leaves the machine."""
        self.dropped = True
        self.released.set()

    def wait_hit(self, timeout: float = 60.0) -> None:
        if not self.hit.wait(timeout):
            raise TimeoutError(f"nothing sent {self.pattern!r} within {timeout} s")


class HoldProxy:
    """Threaded loopback TCP proxy to ``127.0.0.1:upstream_port`` (see the module docstring).
    Holds are one-shot and apply to client-to-server bytes only."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self._lsock = socket.socket()
        self._lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._lsock.bind(("127.0.0.1", self.port))
        self._lsock.listen(64)
        self._holds: list[Hold] = []
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        self._closed = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def hold(self, pattern: bytes) -> Hold:
        h = Hold(pattern)
        with self._lock:
            self._holds.append(h)
        return h

    def release_all(self) -> None:
        with self._lock:
            holds, self._holds = self._holds, []
        for h in holds:
            h.release()

    def close(self) -> None:
        self._closed = True
        self.release_all()
        try:
            self._lsock.close()
        except OSError:
            pass
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass

    # ---- plumbing ----------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._lsock.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), 5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks.update((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False),
                             daemon=True).start()

    def _match(self, window: bytes) -> Hold | None:
        with self._lock:
            for h in self._holds:
                if h.pattern in window:
                    self._holds.remove(h)
                    return h
        return None

    def _pump(self, src: socket.socket, dst: socket.socket, outgoing: bool) -> None:
        tail = b""
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if outgoing:
                    hold = self._match(tail + data)
                    if hold is not None:
                        hold.hit.set()
                        hold.released.wait(120)
                        if hold.dropped:
                            break
                    tail = (tail + data)[-256:]
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                try:
                    s.close()
                except OSError:
                    pass


class AuthRedisServer(RedisServer):
    """redis-server with ``requirepass``: the password is then part of ``HAMNET_REDIS_URL``,
    a secret the processes must never print."""

    def __init__(self, workdir: Path, password: str) -> None:
        super().__init__(workdir)
        self.password = password
        self.argv += ["--requirepass", password]

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> AuthRedisServer:
        Proc.start(self)
        wait_for(lambda: redis.Redis(port=self.port, password=self.password).ping(), 20,
                 "redis-server", self)
        return self


class Stack:
    """redis-server + ``workers`` Celery workers (through a HoldProxy) + one gateway, all real
    processes with their own data directory. ``env`` overrides the ``HAMNET_*`` settings."""

    def __init__(self, root: Path, bundle: Path, workers: int = 1, proxy: bool = True,
                 gateway: bool = True, data_dir: Path | None = None,
                 redis_password: str | None = None, **env: str) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir or root / "data"
        self.redis = (AuthRedisServer(root / "redis", redis_password) if redis_password
                      else RedisServer(root / "redis")).start()
        self.proxy = HoldProxy(self.redis.port) if proxy else None
        base = dict(os.environ)
        for k in list(base):
            if k.startswith("HAMNET_"):
                base.pop(k)
        base.update(
            HAMNET_REDIS_URL=self.redis.url,
            HAMNET_BUNDLE=str(bundle),
            HAMNET_DATA_DIR=str(self.data_dir),
            HAMNET_MAX_UPLOAD_BYTES=str(20 * 1024 * 1024),
            HAMNET_MAX_DURATION_S="900",
            HAMNET_RATE_LIMIT_PER_MINUTE="0",
            HAMNET_SOFT_TIME_LIMIT="60",
            HAMNET_TIME_LIMIT="70",
            HAMNET_VISIBILITY_TIMEOUT="90",
            HAMNET_HEARTBEAT_S="1",
            OMP_NUM_THREADS="1",
            PYTHONUNBUFFERED="1",
        )
        base.update(env)
        self.env = base
        self.worker_env = dict(base)
        if self.proxy is not None:
            self.worker_env["HAMNET_REDIS_URL"] = self.redis.url.replace(
                f"127.0.0.1:{self.redis.port}", f"127.0.0.1:{self.proxy.port}")
        self.workers: list[Proc] = []
        self.gateway: Proc | None = None
        self.url = ""
        self._n = 0
        try:
            for _ in range(workers):
                self.start_worker()
            if gateway:
                self.start_gateway()
            if workers:
                self.wait_workers(workers)
        except BaseException:
            self.stop()  # never leave half a stack running
            raise

    # ---- processes -----------------------------------------------------------------------------
    def start_worker(self, concurrency: int = 1) -> Proc:
        self._n += 1
        proc = start_worker(self.worker_env, self.root / f"worker{self._n}.log", concurrency)
        self.workers.append(proc)
        return proc

    def start_gateway(self, log_level: str = "warning", **env: str) -> str:
        """(Re)start the gateway; ``env`` overrides the stack's settings for it alone (e.g. a
        gateway configured differently from the workers)."""
        if log_level == "warning":
            self.gateway, self.url = start_gateway(dict(self.env, **env),
                                                   self.root / "gateway.log")
            return self.url
        port = free_port()
        self.gateway = Proc("gateway", hamnet_argv("serve", "--port", str(port), "--log-level",
                                                   log_level),
                            dict(self.env, **env), self.root / "gateway.log").start()
        self.url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(f"{self.url}/livez", timeout=2).status_code == 200, 60,
                 "gateway", self.gateway)
        return self.url

    def r(self) -> redis.Redis:
        return self.redis.client()

    def worker_infos(self) -> list[dict[str, Any]]:
        r = self.r()
        out = []
        for key in r.scan_iter(match="hamnet:worker:*"):
            raw = r.get(key)
            if raw:
                out.append(json.loads(raw))
        return out

    def wait_workers(self, n: int, timeout: float = 180.0, exclude_pids: set[int] = frozenset()
                     ) -> list[dict[str, Any]]:
        """Until ``n`` worker children (not in ``exclude_pids``) beat with the model loaded."""
        def ready() -> list[dict[str, Any]] | None:
            infos = [i for i in self.worker_infos()
                     if i.get("model_loaded") and i["pid"] not in exclude_pids]
            return infos if len(infos) >= n else None

        return wait_for(ready, timeout, f"{n} worker(s)", None)

    def child_pid_running(self, job_id: str, timeout: float = 60.0) -> int:
        """Pid of the worker child whose heartbeat says it is busy with ``job_id``."""
        def busy() -> int | None:
            for i in self.worker_infos():
                if i.get("busy_job") == job_id:
                    return int(i["pid"])
            return None

        return wait_for(busy, timeout, f"a worker busy with {job_id}")

    def restart_redis(self, kill: bool = True) -> None:
        """Crash (SIGKILL) or stop redis-server and start it again on the same port and
        append-only file."""
        if kill:
            self.redis.kill9()
        else:
            self.redis.stop()
        self.redis.start()

    def logs(self) -> str:
        parts = []
        for p in [*self.workers, self.gateway]:
            if p is not None:
                parts.append(f"--- {p.log.name}\n{p.tail(80)}")
        return "\n".join(parts)

    def stop(self) -> None:
        for p in [self.gateway, *self.workers]:
            if p is not None:
                p.stop(timeout=10)
        if self.proxy is not None:
            self.proxy.close()
        self.redis.stop()

    # ---- HTTP --------------------------------------------------------------------------------
    def client(self, **kw: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=kw.pop("timeout", 60), **kw)

    def submit(self, data: bytes, name: str = "v.mp4", headers: dict | None = None,
               **fields: str) -> dict[str, Any]:
        with self.client() as c:
            r = c.post("/v1/jobs", files={"file": (name, data, "video/mp4")}, data=fields,
                       headers=headers or {})
        assert r.status_code == 202, r.text
        return r.json()

    def job(self, job_id: str, headers: dict | None = None) -> dict[str, Any]:
        """The job as stored in Redis (the gateway's view is checked separately)."""
        raw = self.r().get(f"hamnet:job:{job_id}")
        assert raw is not None, f"job {job_id} is not in Redis"
        return json.loads(raw)

    def wait_job(self, job_id: str, timeout: float = 120.0,
                 statuses: tuple[str, ...] = TERMINAL) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            job = self.job(job_id)
            return job if job["status"] in statuses else None

        try:
            return wait_for(done, timeout, f"job {job_id} in {statuses}")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.job(job_id)}\n{self.logs()}") from None

    def files_left(self) -> list[str]:
        """Everything under the data directory that is not a directory."""
        return sorted(str(p.relative_to(self.data_dir)) for p in self.data_dir.rglob("*")
                      if not p.is_dir())


def sigstop(pid: int) -> None:
    os.kill(pid, signal.SIGSTOP)


def sigcont(pid: int) -> None:
    os.kill(pid, signal.SIGCONT)


def wait_until(pred, timeout: float, what: str) -> Any:  # noqa: ANN001
    """Poll ``pred`` every 0.1 s; bounded, so a broken service fails the test instead of
    hanging the suite."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = pred()
        if out:
            return out
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not true after {timeout} s")
