"""Gateway use cases called directly against a real Redis (no HTTP): the parts of the job
lifecycle that no request can trigger on demand."""

from __future__ import annotations

from pathlib import Path

from hamnet_jobs.record import new_job_id
from hamnet_jobs.storage import Storage
from hamnet_jobs.store import JobStore, connect
from hamnet_service.services.jobs import _abandon, sweep_orphans


def _store(redis_server) -> JobStore:  # noqa: ANN001
    """A database of its own on the session's redis-server (the service tests use db 0)."""
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    store = JobStore(connect(url), ttl=3600)
    store.r.flushdb()
    return store


def test_orphan_recorded_but_never_queued_is_failed_and_its_upload_removed(
    redis_server, tmp_path: Path  # noqa: ANN001
) -> None:
    """A gateway killed between writing the record and publishing the task leaves a job that
    no worker will ever see: the sweeper fails it (not silently counted in the queue)."""
    store, storage = _store(redis_server), Storage(tmp_path).ensure()
    orphan, sent = new_job_id(), new_job_id()
    for job_id in (orphan, sent):
        store.create({"id": job_id, "owner": "o"})
        storage.upload_path(job_id).write_bytes(b"video")
    store.mark_enqueued(sent)
    assert sweep_orphans(store, storage, older_than_s=0) == [orphan]
    failed = store.get(orphan)
    assert failed.status == "failed" and failed.error.code == "enqueue_failed"
    assert not storage.upload_path(orphan).exists()
    assert store.get(sent).status == "queued" and storage.upload_path(sent).exists()
    assert store.counts()["queued"] == 1


def test_abandoned_request_leaves_no_queued_job(redis_server) -> None:  # noqa: ANN001
    """The client went away after its record was written: an unpublished job disappears, a
    published one is cancelled (its message will be skipped) - neither counts as queued."""
    store = _store(redis_server)
    unpublished, published = new_job_id(), new_job_id()
    for job_id in (unpublished, published):
        store.create({"id": job_id, "owner": "o"})
    store.mark_enqueued(published)
    _abandon(store, unpublished)
    _abandon(store, published)
    assert store.get(unpublished) is None
    assert store.get(published).status == "cancelled"
    assert store.counts() == {"queued": 0, "running": 0}
