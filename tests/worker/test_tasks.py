"""The task body run in-process (no broker) against a real Redis: every way a job can end
leaves a terminal status with a precise code and no files behind."""

from __future__ import annotations

from pathlib import Path

import pytest
from hamnet_jobs.record import new_job_id
from hamnet_worker import runtime, settings


@pytest.fixture()
def rt(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HAMNET_REDIS_URL", redis_url)
    monkeypatch.setenv("HAMNET_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HAMNET_BUNDLE", str(tmp_path / "no-such-bundle"))
    monkeypatch.setenv("HAMNET_MAX_ATTEMPTS", "2")
    settings.get_settings.cache_clear()
    runtime.get_runtime.cache_clear()
    rt = runtime.get_runtime()
    rt.store.r.flushdb()
    yield rt
    rt.stop()
    settings.get_settings.cache_clear()
    runtime.get_runtime.cache_clear()


def _job(rt, content: bytes | None = b"not a video") -> str:  # noqa: ANN001
    job_id = new_job_id()
    rt.store.create({"id": job_id, "owner": "o"})
    if content is not None:
        rt.storage.upload_path(job_id).write_bytes(content)
    return job_id


def _run(job_id: str) -> str:
    from hamnet_worker.tasks import process_job

    return process_job.run(job_id)


def test_unloadable_bundle_fails_job_with_its_code(rt) -> None:  # noqa: ANN001
    job_id = _job(rt)
    assert _run(job_id) == "failed"
    job = rt.store.get(job_id)
    assert job.status == "failed" and job.error.code == "invalid_bundle"
    assert not rt.storage.upload_path(job_id).exists()
    assert rt.load_error


def test_cancelled_before_start_is_skipped_and_cleaned(rt) -> None:  # noqa: ANN001
    job_id = _job(rt)
    rt.store.cancel(job_id)
    assert _run(job_id) == "skip"
    assert rt.store.get(job_id).status == "cancelled"
    assert not rt.storage.upload_path(job_id).exists()


def test_poison_delivery(rt) -> None:  # noqa: ANN001
    job_id = _job(rt)
    for _ in range(2):  # two deliveries whose worker died mid-job
        rt.store.begin(job_id, 2)
    assert _run(job_id) == "poison"
    job = rt.store.get(job_id)
    assert job.error.code == "too_many_attempts"
    assert not rt.storage.upload_path(job_id).exists()


def test_vanished_job_is_skipped(rt) -> None:  # noqa: ANN001
    job_id = _job(rt)
    rt.store.r.delete(rt.store.job_key(job_id))
    assert _run(job_id) == "skip"
    assert not rt.storage.upload_path(job_id).exists()
