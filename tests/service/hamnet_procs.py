"""Real processes for the service tests: redis-server, a Celery worker, uvicorn — each on a
free loopback port, logging to a file that a failing test can print. No fakes: the point of
these tests is the wiring between the processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A child process with its output in ``log``; ``stop`` escalates TERM → KILL."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path,
                 preexec=None) -> None:  # noqa: ANN001
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.preexec = preexec
        self.p: subprocess.Popen | None = None

    def start(self) -> Proc:
        fh = open(self.log, "ab")  # noqa: SIM115 (owned by the child)
        self.p = subprocess.Popen(
            self.argv, env=self.env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
            start_new_session=True, preexec_fn=self.preexec,
        )
        fh.close()
        return self

    @property
    def pid(self) -> int:
        assert self.p is not None
        return self.p.pid

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM) -> None:
        if not self.alive():
            return
        assert self.p is not None
        try:
            os.killpg(self.p.pid, sig)
            self.p.wait(timeout)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait(10)

    def kill9(self) -> None:
        """SIGKILL the whole process group (the parent and its prefork children)."""
        if self.alive():
            assert self.p is not None
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(10)

    def tail(self, n: int = 60) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


class RedisServer(Proc):
    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        argv = [
            "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(workdir), "--appendonly", "yes", "--appendfsync", "always",
            "--save", "", "--protected-mode", "yes",
        ]
        super().__init__("redis", argv, dict(os.environ), workdir / "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        super().start()
        wait_for(lambda: redis.Redis(port=self.port).ping(), 20, "redis-server", self)
        return self

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, decode_responses=True)


def wait_for(pred, timeout: float, what: str, proc: Proc | None = None) -> object:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise RuntimeError(f"{what} exited early:\n{proc.tail()}")
        try:
            out = pred()
            if out:
                return out
        except Exception as e:  # not up yet
            last = e
        time.sleep(0.2)
    tail = proc.tail() if proc else ""
    raise TimeoutError(f"{what} not ready after {timeout} s (last error: {last})\n{tail}")


def hamnet_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "hamnet", *args]


def start_worker(env: dict[str, str], log: Path, concurrency: int = 1) -> Proc:
    proc = Proc("worker", hamnet_argv("worker", "--concurrency", str(concurrency),
                                      "--loglevel", "INFO"), env, log).start()
    return proc


def wait_worker_ready(r: redis.Redis, proc: Proc, timeout: float = 180.0,
                      exclude: set[str] | None = None) -> dict:
    def ready() -> dict | None:
        for key in r.scan_iter(match="hamnet:worker:*"):
            raw = r.get(key)
            if not raw:
                continue
            info = json.loads(raw)
            if info.get("model_loaded") and info["name"] not in (exclude or set()):
                return info
        return None

    return wait_for(ready, timeout, "worker", proc)


def start_gateway(env: dict[str, str], log: Path, port: int | None = None,
                  preexec=None) -> tuple[Proc, str]:  # noqa: ANN001
    port = port or free_port()
    proc = Proc("gateway", hamnet_argv("serve", "--port", str(port), "--log-level", "warning"),
                env, log, preexec=preexec).start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(f"{url}/livez", timeout=2).status_code == 200, 60, "gateway",
             proc)
    return proc, url
