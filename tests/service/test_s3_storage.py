"""``HAMNET_STORAGE=s3`` against a real S3-compatible server process (moto's, on loopback):
``S3Storage`` on its own, then gateway + Celery worker + Redis handing uploads over through the
bucket only (the gateway's and the worker's data directories are different)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import boto3
import httpx
import pytest
from hamnet_jobs.storage import S3Storage, Storage, StorageUnavailable, make_storage
from hamnet_procs import (
    Proc,
    RedisServer,
    free_port,
    start_gateway,
    start_worker,
    wait_for,
    wait_worker_ready,
)

pytestmark = [pytest.mark.service]

SECRET = "hamnet-test-secret-4f1c9e"  # any credentials work with moto; it must not be logged
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "hamnet-test-key",
    "AWS_SECRET_ACCESS_KEY": SECRET,
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
BUCKET = "hamnet-test"
PREFIX = "videos/"


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory) -> str:
    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    argv = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
    env = {**os.environ, **AWS_ENV}
    proc = Proc("moto", [*argv, "-H", "127.0.0.1", "-p", str(port)], env,
                tmp_path_factory.mktemp("logs") / "moto.log").start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(url, timeout=2).status_code < 500, 30, "moto_server", proc)
    yield url
    proc.stop()


@pytest.fixture(scope="module")
def aws_env():
    """Credentials for this process's boto3 clients (moto accepts any)."""
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    yield
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def s3(s3_server: str, aws_env):
    client = boto3.session.Session().client("s3", endpoint_url=s3_server,
                                            region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return client


def objects(s3, prefix: str = "") -> list[str]:
    listing = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


# ---- S3Storage on its own ----------------------------------------------------------------------

def test_s3_storage_roundtrip(s3, s3_server: str, tmp_path: Path) -> None:
    st = S3Storage(tmp_path / "a", BUCKET, prefix="unit/", endpoint_url=s3_server).ensure()
    assert not (tmp_path / "a" / "uploads").exists()  # nothing but incoming/ and scratch/
    jid = "unitjob0123456789"
    payload = os.urandom(20 << 20)  # above the multipart threshold
    st.partial_path(jid).write_bytes(payload)
    assert st.commit(jid) == "unit/unitjob0123456789.video"
    assert not st.partial_path(jid).exists() and st.exists(jid)
    assert objects(s3, "unit/") == ["unit/unitjob0123456789.video"]

    # another host: its own data directory, only the bucket in common
    other = make_storage(type("S", (), {
        "storage": "s3", "data_dir": tmp_path / "b", "s3_bucket": BUCKET, "s3_prefix": "unit/",
        "s3_endpoint_url": s3_server, "s3_region": None})()).ensure()
    assert isinstance(other, S3Storage)
    local = other.fetch(jid)
    assert local.parent == other.scratch_dir(jid) and local.read_bytes() == payload
    other.release(jid)  # an interrupted attempt: local copy gone, object kept
    assert not other.scratch_dir(jid).exists() and other.exists(jid)

    other.fetch(jid)
    other.remove(jid)
    other.remove(jid)  # twice is fine
    assert not other.scratch_dir(jid).exists() and not other.exists(jid)
    with pytest.raises(FileNotFoundError):
        other.fetch(jid)
    assert not other.upload_path(jid).exists()
    with pytest.raises(ValueError):
        other.key("../../etc/passwd")


def test_s3_storage_unavailable(s3, s3_server: str, tmp_path: Path) -> None:
    st = S3Storage(tmp_path, "no-such-bucket", endpoint_url=s3_server).ensure()
    jid = "unitjob9876543210"
    st.partial_path(jid).write_bytes(b"video")
    with pytest.raises(StorageUnavailable):
        st.commit(jid)
    assert st.partial_path(jid).exists()  # the caller decides; create_job deletes it
    st.remove(jid)  # best effort: never raises
    assert not st.partial_path(jid).exists()


def test_s3_storage_unreachable(aws_env, tmp_path: Path) -> None:
    st = S3Storage(tmp_path, BUCKET, endpoint_url=f"http://127.0.0.1:{free_port()}").ensure()
    jid = "unitjob5555555555"
    st.partial_path(jid).write_bytes(b"video")
    t0 = time.monotonic()
    for call in (st.commit, st.fetch, st.exists):
        with pytest.raises(StorageUnavailable):
            call(jid)
    st.remove(jid)
    assert not st.partial_path(jid).exists() and not st.upload_path(jid).exists()
    assert time.monotonic() - t0 < 30  # retried, not hung


def test_storage_settings(tmp_path: Path, monkeypatch) -> None:
    from hamnet_service.settings import ServiceSettings
    from hamnet_worker.settings import WorkerSettings

    for cls in (ServiceSettings, WorkerSettings):
        monkeypatch.setenv("HAMNET_DATA_DIR", str(tmp_path))
        monkeypatch.delenv("HAMNET_STORAGE", raising=False)
        assert type(make_storage(cls())) is Storage
        monkeypatch.setenv("HAMNET_STORAGE", "s3")
        with pytest.raises(ValueError, match="HAMNET_S3_BUCKET"):
            cls()
        monkeypatch.setenv("HAMNET_S3_BUCKET", "b")
        monkeypatch.setenv("HAMNET_S3_ENDPOINT_URL", "http://127.0.0.1:9")
        st = make_storage(cls())
        assert isinstance(st, S3Storage)
        assert (st.bucket, st.prefix, st.endpoint_url) == ("b", "uploads/", "http://127.0.0.1:9")
        monkeypatch.setenv("HAMNET_STORAGE", "ftp")
        with pytest.raises(ValueError):
            cls()
        for k in ("HAMNET_STORAGE", "HAMNET_S3_BUCKET", "HAMNET_S3_ENDPOINT_URL"):
            monkeypatch.delenv(k)


def test_local_storage_does_not_import_boto3(tmp_path: Path) -> None:
    code = ("import sys; from hamnet_jobs.storage import make_storage; "
            "from hamnet_service.settings import ServiceSettings; "
            "make_storage(ServiceSettings()).ensure(); "
            "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules")
    env = {**os.environ, "HAMNET_DATA_DIR": str(tmp_path)}
    env.pop("HAMNET_STORAGE", None)
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ---- gateway + worker through the bucket -------------------------------------------------------

@pytest.fixture(scope="module")
def s3_stack(s3, s3_server: str, bundle_dir: Path, tmp_path_factory):
    """Own Redis (the session worker must not take these jobs), a gateway; the worker starts
    later (``start_worker``) so that jobs can be inspected while queued."""
    tmp = tmp_path_factory.mktemp("s3stack")
    redis_srv = RedisServer(tmp / "redis").start()
    base = {**os.environ, **AWS_ENV}
    base.pop("HAMNET_API_KEYS", None)
    base.update(
        HAMNET_REDIS_URL=redis_srv.url, HAMNET_BUNDLE=str(bundle_dir),
        HAMNET_STORAGE="s3", HAMNET_S3_BUCKET=BUCKET, HAMNET_S3_ENDPOINT_URL=s3_server,
        HAMNET_S3_PREFIX=PREFIX, HAMNET_S3_REGION="us-east-1",
        HAMNET_RATE_LIMIT_PER_MINUTE="0", HAMNET_HEARTBEAT_S="1",
        HAMNET_SOFT_TIME_LIMIT="240", HAMNET_TIME_LIMIT="270", HAMNET_VISIBILITY_TIMEOUT="300",
        OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1",
    )
    gw_env = {**base, "HAMNET_DATA_DIR": str(tmp / "gateway-data")}
    wk_env = {**base, "HAMNET_DATA_DIR": str(tmp / "worker-data")}
    gw, url = start_gateway(gw_env, tmp / "gateway.log")
    stack = {"url": url, "redis": redis_srv, "tmp": tmp, "wk_env": wk_env, "procs": [gw]}
    yield stack
    for p in reversed(stack["procs"]):
        p.stop()
    redis_srv.stop()


def _post(api: httpx.Client, video: bytes) -> httpx.Response:
    return api.post("/v1/jobs", files={"file": ("clip.mp4", video, "video/mp4")})


def _wait_terminal(api: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = api.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)
    raise TimeoutError(f"job {job_id} is still {job['status']}")


def test_jobs_through_the_bucket(s3_stack, s3, small_video: Path) -> None:
    video = small_video.read_bytes()
    gw_data = s3_stack["tmp"] / "gateway-data"
    with httpx.Client(base_url=s3_stack["url"], timeout=60) as api:
        # queued (no worker yet): the upload is an object, nothing stays on the gateway
        r = _post(api, video)
        assert r.status_code == 202, r.text
        cancelled = r.json()["id"]
        assert objects(s3, PREFIX) == [f"{PREFIX}{cancelled}.video"]
        assert s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}{cancelled}.video")["Body"].read() \
            == video
        assert not list(gw_data.rglob("*.part")) and not (gw_data / "uploads").exists()

        # DELETE of a queued job removes the object
        assert api.delete(f"/v1/jobs/{cancelled}").status_code == 204
        assert api.get(f"/v1/jobs/{cancelled}").json()["status"] == "cancelled"
        assert objects(s3, PREFIX) == []

        # the object store unavailable: 503 storage_unavailable, nothing left behind
        s3.delete_bucket(Bucket=BUCKET)
        try:
            r = _post(api, video)
        finally:
            s3.create_bucket(Bucket=BUCKET)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "storage_unavailable"
        assert r.headers["Retry-After"] == "5"
        assert not list(gw_data.rglob("*.part")) and objects(s3, PREFIX) == []

        # a job whose object vanished fails upload_missing; a normal one succeeds
        gone = _post(api, video).json()["id"]
        s3.delete_object(Bucket=BUCKET, Key=f"{PREFIX}{gone}.video")
        ok = _post(api, video)
        assert ok.status_code == 202, ok.text
        ok = ok.json()["id"]
        assert objects(s3, PREFIX) == [f"{PREFIX}{ok}.video"]

        log = s3_stack["tmp"] / "worker.log"
        wk = start_worker(s3_stack["wk_env"], log)
        s3_stack["procs"].append(wk)
        wait_worker_ready(s3_stack["redis"].client(), wk)

        job = _wait_terminal(api, gone)
        assert job["status"] == "failed" and job["error"]["code"] == "upload_missing", job
        job = _wait_terminal(api, ok)
        assert job["status"] == "succeeded", (job, wk.tail())
        result = api.get(f"/v1/jobs/{ok}/result")
        assert result.status_code == 200 and result.json()["video"]["duration"] > 2
        # terminal: the object and the worker's scratch copy are gone
        wait_for(lambda: objects(s3, PREFIX) == [], 10, "object removal")
        scratch = s3_stack["tmp"] / "worker-data" / "scratch"
        assert not any(scratch.iterdir())
        assert not (s3_stack["tmp"] / "worker-data" / "uploads").exists()
    for p in s3_stack["procs"]:
        assert SECRET not in p.log.read_text(errors="replace"), f"{p.name} logged the secret"
