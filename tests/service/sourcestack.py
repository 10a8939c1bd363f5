"""The real stack for the remote-source tests: moto's S3 server, redis-server, a gateway and a
Celery worker that may read loopback sources (``HAMNET_SOURCE_ALLOW_PRIVATE=true``), plus a
loopback HTTP file server (tests/jobs/videoserver.py). Each test module starts its own (own
Redis: the session worker must not take these jobs). Nothing listens or connects outside
127.0.0.x."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parents[1] / "jobs"))

from hamnet_procs import (  # noqa: E402
    Proc,
    RedisServer,
    free_port,
    start_gateway,
    start_worker,
    wait_for,
    wait_worker_ready,
)
from videoserver import VideoServer  # noqa: E402

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "hamnet-test-key",
    "AWS_SECRET_ACCESS_KEY": "hamnet-test-secret-sources",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
TERMINAL = ("succeeded", "failed", "cancelled")


class Stack:
    def __init__(self, tmp: Path, bundle_dir: Path, extra: dict[str, str]) -> None:
        self.tmp = tmp
        self.procs: list[Proc] = []
        port = free_port()
        moto = Path(sys.executable).with_name("moto_server")
        argv = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
        self.moto = Proc("moto", [*argv, "-H", "127.0.0.1", "-p", str(port)],
                         {**os.environ, **AWS_ENV}, tmp / "moto.log").start()
        self.procs.append(self.moto)
        self.s3_url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(self.s3_url, timeout=2).status_code < 500, 30, "moto",
                 self.moto)
        self.redis = RedisServer(tmp / "redis").start()
        self.files = VideoServer().start()
        base = {**os.environ, **AWS_ENV}
        base.pop("HAMNET_API_KEYS", None)
        base.update(
            HAMNET_REDIS_URL=self.redis.url, HAMNET_BUNDLE=str(bundle_dir),
            HAMNET_DATA_DIR=str(tmp / "data"), HAMNET_RATE_LIMIT_PER_MINUTE="0",
            HAMNET_HEARTBEAT_S="1", HAMNET_SOFT_TIME_LIMIT="240", HAMNET_TIME_LIMIT="270",
            HAMNET_VISIBILITY_TIMEOUT="300", HAMNET_MAX_DURATION_S="600",
            HAMNET_S3_ENDPOINT_URL=self.s3_url, HAMNET_S3_REGION="us-east-1",
            HAMNET_SOURCE_ALLOW_PRIVATE="true", HAMNET_SOURCE_TIMEOUT_S="5",
            HAMNET_SOURCE_RETRIES="2",
            OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
        )
        base.update(extra)
        self.env = base
        gw, self.url = start_gateway(base, tmp / "gateway.log")
        self.procs.append(gw)
        self.worker = start_worker(base, tmp / "worker.log")
        self.procs.append(self.worker)
        wait_worker_ready(self.redis.client(), self.worker)

    def s3(self) -> Any:
        import boto3

        return boto3.session.Session(
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1").client("s3", endpoint_url=self.s3_url)

    def gateway(self, env: dict[str, str], name: str) -> tuple[Proc, str]:
        """Another gateway on the same Redis with other settings."""
        proc, url = start_gateway({**self.env, **env}, self.tmp / f"{name}.log")
        self.procs.append(proc)
        return proc, url

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.tail(40)}" for p in self.procs)

    def stop(self) -> None:
        self.files.stop()
        for p in reversed(self.procs):
            p.stop()
        self.redis.stop()


def wait_terminal(api: httpx.Client, job_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    job: dict = {}
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in TERMINAL:
            return job
        time.sleep(0.25)
    raise TimeoutError(f"job {job_id} is still {job.get('status')}")
