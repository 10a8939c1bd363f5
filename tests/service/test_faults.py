"""Faults (issue 7): a killed worker child or whole worker, a Redis restart, a job over its time
limit, a gateway killed mid-upload, a full upload store. Nothing accepted may be lost or done
twice, and nothing half-written may stay behind.

Each test runs its own worker/gateway on its own Redis database (of one module Redis, which
one test restarts), with time limits small enough to observe redelivery in seconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
from hamnet_procs import RedisServer, start_gateway, start_worker, wait_for, wait_worker_ready

pytestmark = [pytest.mark.service, pytest.mark.slow]


@pytest.fixture(scope="module")
def fredis(tmp_path_factory):
    srv = RedisServer(tmp_path_factory.mktemp("redis-faults")).start()
    yield srv
    srv.stop()


def _video(out: Path, seconds: int) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                    f"testsrc2=size=320x240:rate=25:duration={seconds}", "-pix_fmt", "yuv420p",
                    "-c:v", "libx264", "-preset", "ultrafast", "-y", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[int, Path]:
    d = tmp_path_factory.mktemp("fault-videos")
    return {s: _video(d / f"v{s}.mp4", s) for s in (20, 60)}


_db = iter(range(3, 16))


class Stack:
    def __init__(self, fredis: RedisServer, service_env: dict, tmp: Path, **env: str) -> None:
        self.db = next(_db)
        self.tmp = tmp
        self.data = tmp / "data"
        self.env = dict(service_env)
        self.env.update(HAMNET_REDIS_URL=f"redis://127.0.0.1:{fredis.port}/{self.db}",
                        HAMNET_DATA_DIR=str(self.data), HAMNET_RESTORE_INTERVAL="1", **env)
        self.r = fredis.client()
        self.r.execute_command("SELECT", self.db)
        import redis

        self.r = redis.Redis(port=fredis.port, db=self.db, decode_responses=True)
        self.workers: list = []
        self.gateways: list = []
        self.url = ""

    def start_worker(self) -> None:
        names = {json.loads(v)["name"] for v in self.r.mget(list(self.r.scan_iter(
            "hamnet:worker:*"))) if v} if list(self.r.scan_iter("hamnet:worker:*")) else set()
        w = start_worker(self.env, self.tmp / f"worker{len(self.workers)}.log")
        self.workers.append(w)
        wait_worker_ready(self.r, w, exclude=names)

    def start_gateway(self, preexec=None) -> None:  # noqa: ANN001
        gw, self.url = start_gateway(self.env, self.tmp / f"gw{len(self.gateways)}.log",
                                     preexec=preexec)
        self.gateways.append(gw)

    def stop(self) -> None:
        for p in self.gateways + self.workers:
            p.stop(timeout=10)

    def submit(self, video: Path) -> str:
        r = httpx.post(f"{self.url}/v1/jobs", timeout=60,
                       files={"file": (video.name, video.read_bytes(), "video/mp4")})
        assert r.status_code == 202, r.text
        return r.json()["id"]

    def job(self, job_id: str) -> dict:
        return json.loads(self.r.get(f"hamnet:job:{job_id}"))

    def wait(self, job_id: str, pred, timeout: float, what: str) -> dict:  # noqa: ANN001
        return wait_for(lambda: (j := self.job(job_id)) and pred(j) and j, timeout, what)

    def busy_pid(self, job_id: str) -> int:
        def find() -> int | None:
            for v in self.r.mget(list(self.r.scan_iter("hamnet:worker:*"))):
                if v and json.loads(v).get("busy_job") == job_id:
                    return json.loads(v)["pid"]
            return None

        return wait_for(find, 30, "busy worker child")

    def no_files_left(self, job_id: str) -> bool:
        return not [p for p in self.data.rglob(f"*{job_id}*")]


@contextlib.contextmanager
def stack(fredis, service_env, tmp_path, **env):  # noqa: ANN001, ANN201
    s = Stack(fredis, service_env, tmp_path, **env)
    try:
        yield s
    finally:
        s.stop()


def terminal(j: dict) -> bool:
    return j["status"] in ("succeeded", "failed", "cancelled")


def test_child_killed_mid_job_completes_once(fredis, service_env, tmp_path, videos) -> None:
    with stack(fredis, service_env, tmp_path) as s:
        s.start_worker()
        s.start_gateway()
        job_id = s.submit(videos[60])
        s.wait(job_id, lambda j: j["status"] == "running", 60, "running")
        os.kill(s.busy_pid(job_id), signal.SIGKILL)
        job = s.wait(job_id, terminal, 180, "job finished after the kill")
        assert job["status"] == "succeeded" and job["attempts"] == 2, job
        assert s.r.hget("hamnet:stats:jobs", "succeeded") == "1"  # exactly one outcome
        assert s.r.exists(f"hamnet:result:{job_id}")
        assert s.no_files_left(job_id)


def test_whole_worker_killed_job_goes_to_a_new_worker(fredis, service_env, tmp_path,
                                                      videos) -> None:
    with stack(fredis, service_env, tmp_path, HAMNET_SOFT_TIME_LIMIT="20",
               HAMNET_TIME_LIMIT="24", HAMNET_VISIBILITY_TIMEOUT="26") as s:
        s.start_worker()
        s.start_gateway()
        job_id = s.submit(videos[60])
        s.wait(job_id, lambda j: j["status"] == "running", 60, "running")
        s.busy_pid(job_id)
        s.workers[0].kill9()  # parent and child: nobody is left to requeue the message
        s.start_worker()
        job = s.wait(job_id, terminal, 180, "redelivered after the visibility timeout")
        assert job["status"] == "succeeded" and job["attempts"] == 2, job
        assert s.r.hget("hamnet:stats:jobs", "succeeded") == "1"


def test_poison_job_fails_instead_of_looping(fredis, service_env, tmp_path, videos) -> None:
    with stack(fredis, service_env, tmp_path, HAMNET_MAX_ATTEMPTS="2") as s:
        s.start_worker()
        s.start_gateway()
        job_id = s.submit(videos[60])
        for attempt in (1, 2):
            s.wait(job_id, lambda j, a=attempt: j["status"] == "running" and j["attempts"] == a,
                   120, f"attempt {attempt}")
            os.kill(s.busy_pid(job_id), signal.SIGKILL)
        job = s.wait(job_id, terminal, 120, "poison job failed")
        assert job["status"] == "failed" and job["error"]["code"] == "too_many_attempts"
        assert s.no_files_left(job_id)
        # The worker is still healthy: the next job runs.
        ok = s.submit(videos[20])
        assert s.wait(ok, terminal, 120, "next job")["status"] == "succeeded"


def test_time_limit_fails_job_clearly(fredis, service_env, tmp_path, videos) -> None:
    with stack(fredis, service_env, tmp_path, HAMNET_SOFT_TIME_LIMIT="1",
               HAMNET_TIME_LIMIT="5", HAMNET_VISIBILITY_TIMEOUT="8") as s:
        s.start_worker()
        s.start_gateway()
        job_id = s.submit(videos[60])
        job = s.wait(job_id, terminal, 60, "time limit")
        assert job["status"] == "failed" and job["error"]["code"] == "time_limit_exceeded"
        assert s.no_files_left(job_id)


def test_redis_restart_loses_no_job(fredis, service_env, tmp_path, videos) -> None:
    with stack(fredis, service_env, tmp_path) as s:
        s.start_worker()
        s.start_gateway()
        ids = [s.submit(videos[20]) for _ in range(3)]
        s.wait(ids[0], lambda j: j["status"] == "running", 60, "first running")
        fredis.stop()  # SIGTERM: append-only file flushed (appendfsync always)
        time.sleep(1.0)
        fredis.start()
        for job_id in ids:
            job = s.wait(job_id, terminal, 240, f"job {job_id} after the restart")
            assert job["status"] == "succeeded", job
        assert s.r.hget("hamnet:stats:jobs", "succeeded") == "3"


def test_gateway_killed_mid_upload(fredis, service_env, tmp_path) -> None:
    with stack(fredis, service_env, tmp_path, HAMNET_PARTIAL_IDLE_S="2") as s:
        s.start_gateway()
        outcome: dict = {}

        def upload() -> None:
            def body():
                yield (b"--bb\r\nContent-Disposition: form-data; name=\"file\"; "
                       b"filename=\"x.mp4\"\r\n\r\n")
                for _ in range(2000):
                    yield b"\x00" * 16384
                    time.sleep(0.01)

            t0 = time.monotonic()
            try:
                httpx.post(f"{s.url}/v1/jobs", content=body(), timeout=30,
                           headers={"Content-Type": "multipart/form-data; boundary=bb"})
                outcome["error"] = None
            except httpx.HTTPError as e:
                outcome["error"] = type(e).__name__
            outcome["seconds"] = time.monotonic() - t0

        t = threading.Thread(target=upload)
        t.start()
        incoming = s.data / "incoming"
        wait_for(lambda: list(incoming.glob("*.part")), 20, "partial upload")
        s.gateways[0].kill9()
        t.join(30)
        assert not t.is_alive(), "the client hung"
        assert outcome["error"], "the client must see an error"
        s.start_gateway()  # a restarted gateway sweeps the orphan
        wait_for(lambda: not list(incoming.glob("*.part")), 20, "orphan partial removed")


def test_full_upload_store_gives_507(fredis, service_env, tmp_path, videos) -> None:
    def small_disk() -> None:  # every file the gateway writes is capped at 256 kB
        resource.setrlimit(resource.RLIMIT_FSIZE, (256_000, 256_000))

    with stack(fredis, service_env, tmp_path) as s:
        s.start_gateway(preexec=small_disk)
        big = videos[60].read_bytes()
        assert len(big) > 256_000
        r = httpx.post(f"{s.url}/v1/jobs", files={"file": ("v.mp4", big, "video/mp4")},
                       timeout=60)
        assert r.status_code == 507 and r.json()["error"]["code"] == "insufficient_storage"
        assert not list((s.data / "incoming").glob("*")) and not list(
            (s.data / "uploads").glob("*"))
