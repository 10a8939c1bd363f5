"""Worker pieces that need no broker: settings validation, Celery configuration, storage
layout and clean-up, callback URL restrictions, progress mapping, import hygiene."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hamnet_jobs.storage import Storage
from hamnet_jobs.urls import CallbackURLError, check_callback_url
from hamnet_worker.celery_app import make_app
from hamnet_worker.runtime import threads_per_child
from hamnet_worker.settings import WorkerSettings


def test_time_limits_must_be_ordered() -> None:
    WorkerSettings(soft_time_limit=10, time_limit=20, visibility_timeout=30)
    with pytest.raises(ValueError, match="SOFT_TIME_LIMIT"):
        WorkerSettings(soft_time_limit=20, time_limit=20, visibility_timeout=30)
    with pytest.raises(ValueError):
        WorkerSettings(soft_time_limit=10, time_limit=40, visibility_timeout=30)


def test_celery_reliability_settings() -> None:
    app = make_app("redis://127.0.0.1:1/0", soft_time_limit=10, time_limit=20,
                   visibility_timeout=30)
    c = app.conf
    assert c.task_acks_late and c.task_reject_on_worker_lost
    assert c.worker_prefetch_multiplier == 1
    assert c.task_soft_time_limit < c.task_time_limit < c.broker_transport_options[
        "visibility_timeout"]
    assert c.task_default_queue == "gpu"


def test_storage_layout_and_cleanup(tmp_path: Path) -> None:
    st = Storage(tmp_path).ensure()
    jid = "abcdefghijklmnop"
    st.partial_path(jid).write_bytes(b"x")
    st.commit(jid)
    assert st.upload_path(jid).read_bytes() == b"x" and not st.partial_path(jid).exists()
    st.scratch_dir(jid).mkdir()
    (st.scratch_dir(jid) / "tmp.npy").write_bytes(b"y")
    st.remove(jid)
    st.remove(jid)  # idempotent
    assert not any(p.is_file() for p in tmp_path.rglob("*"))
    for bad in ("../../etc/passwd", "a/b", "..", "x" * 100, ""):
        with pytest.raises(ValueError):
            st.upload_path(bad)


def test_sweep_partials_only_idle(tmp_path: Path) -> None:
    st = Storage(tmp_path).ensure()
    old, new = st.partial_path("oldoldoldold"), st.partial_path("newnewnewnew")
    old.write_bytes(b"1")
    new.write_bytes(b"2")
    past = time.time() - 600
    os.utime(old, (past, past))
    assert st.sweep_partials(idle_s=60) == [old]
    assert new.exists()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/cb", "http://localhost:8000/", "http://10.1.2.3/", "http://192.168.0.1",
    "http://169.254.169.254/latest/meta-data", "http://[::1]/", "http://0.0.0.0/",
    "ftp://93.184.216.34/", "http://user:pw@93.184.216.34/", "not a url", "http://172.16.0.1",
])
def test_callback_url_rejected(url: str) -> None:
    with pytest.raises(CallbackURLError):
        check_callback_url(url)


def test_callback_url_allowed() -> None:
    assert check_callback_url("https://93.184.216.34/hook")
    assert check_callback_url("http://127.0.0.1:9/cb", allow_private=True)


def test_progress_maps_pipeline_stages() -> None:
    from hamnet_worker.tasks import _stage_of

    assert _stage_of("decode") == "decode"
    assert _stage_of("features") == "features"
    assert _stage_of("backbone") == "features"
    assert _stage_of("localize") == "localize"


def test_worker_package_imports_stay_light() -> None:
    """The gateway imports jobs/celery_app; nothing in the package may pull torch at import,
    and onnxruntime/PyAV only inside a task."""
    code = (
        "import sys, hamnet_jobs.store, hamnet_jobs.storage, hamnet_jobs.urls, "
        "hamnet_jobs.queue, hamnet_worker.celery_app, hamnet_worker.tasks, "
        "hamnet_worker.runtime, hamnet_worker.cli, hamnet_worker.callbacks;"
        "print(sorted(m for m in ('torch','onnxruntime','av','cv2') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_lease_must_outlive_missed_heartbeats() -> None:
    WorkerSettings(heartbeat_s=5, lease_s=15)
    with pytest.raises(ValueError, match="LEASE_S"):
        WorkerSettings(heartbeat_s=5, lease_s=10)


def test_threads_are_divided_among_children() -> None:
    assert threads_per_child(1, cpus=8) == 8
    assert threads_per_child(4, cpus=8) == 2
    assert threads_per_child(16, cpus=8) == 1


@pytest.mark.parametrize("pool", ["threads", "solo", "gevent"])
def test_unsafe_pools_are_refused(pool: str, tmp_path: Path) -> None:
    """One job per child process is what leases, heartbeats and hard time limits rely on."""
    env = {**os.environ, "HAMNET_REDIS_URL": "redis://127.0.0.1:1/0",
           "HAMNET_DATA_DIR": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "hamnet", "worker", "--pool", pool],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2, r.stderr
    assert f"--pool {pool} is not supported" in r.stderr
