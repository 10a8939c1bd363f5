"""The job store against a real Redis: state transitions, the attempt counter, cancellation
races, idempotency, TTLs and the metrics it keeps."""

from __future__ import annotations

import time

import pytest
from hamnet_jobs.record import new_job_id, public_view
from hamnet_jobs.store import IdempotencyConflict, JobStore, connect
from hamnet_jobs.telemetry import STAGE_BUCKETS, Telemetry


@pytest.fixture()
def store(redis_url: str) -> JobStore:
    s = JobStore(connect(redis_url), ttl=3600)
    s.r.flushdb()
    return s


def _new(store: JobStore, owner: str = "alice", **kw) -> dict:
    job, created = store.create({"id": new_job_id(), "owner": owner, "sha256": "x", **kw})
    assert created
    return job


def test_ids_are_unguessable() -> None:
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) >= 22 for i in ids)


def test_lifecycle_and_ttl(store: JobStore) -> None:
    job = _new(store)
    assert store.get(job.id).status == "queued"
    assert 0 < store.r.ttl(store.job_key(job.id)) <= 3600
    assert store.counts() == {"queued": 1, "running": 0}
    got, action = store.begin(job.id, max_attempts=3)
    assert action == "run" and got.status == "running" and got.attempts == 1
    assert store.counts() == {"queued": 0, "running": 1}
    assert store.progress(job.id, "features", 50.0)
    assert store.get(job.id).progress == 50
    result = {"video": {"duration": 12.5}, "segments": []}
    assert store.finish(job.id, result)
    done = store.get(job.id)
    assert done.status == "succeeded" and done.progress == 100
    assert store.get_result(job.id) == result
    assert 0 < store.r.ttl(store.result_key(job.id)) <= 3600
    assert store.counts() == {"queued": 0, "running": 0}
    stats = Telemetry(store.r).stats()
    assert stats["jobs"]["succeeded"] == 1 and stats["video_seconds"] == 12.5


def test_duplicate_delivery_runs_once(store: JobStore) -> None:
    job = _new(store)
    store.begin(job.id, 3)
    store.finish(job.id, {"video": {}})
    again, action = store.begin(job.id, 3)
    assert action == "skip" and again.status == "succeeded"
    assert not store.finish(job.id, {"video": {"duration": 1}})  # no second result


def test_attempt_counter_fails_poison_job(store: JobStore) -> None:
    job = _new(store)
    for _ in range(3):  # the worker died three times mid-job
        assert store.begin(job.id, 3)[1] == "run"
    failed, action = store.begin(job.id, 3)
    assert action == "poison"
    assert failed.status == "failed" and failed.error.code == "too_many_attempts"
    assert store.begin(job.id, 3)[1] == "skip"


def test_cancel_while_running_wins_over_finish(store: JobStore) -> None:
    job = _new(store)
    store.begin(job.id, 3)
    cancelled, prev = store.cancel(job.id)
    assert prev == "running" and cancelled.status == "cancelled"
    assert not store.progress(job.id, "features", 10)  # the worker's stop signal
    assert not store.finish(job.id, {"video": {}})
    assert store.get_result(job.id) is None
    assert store.get(job.id).status == "cancelled"


def test_cancel_queued_then_forget(store: JobStore) -> None:
    job = _new(store)
    store.cancel(job.id)
    assert store.begin(job.id, 3)[1] == "skip"
    assert store.counts()["queued"] == 0
    store.cancel(job.id)  # a second DELETE forgets the finished job
    assert store.get(job.id) is None
    assert store.list("alice")[1] == 0


def test_fail_is_terminal(store: JobStore) -> None:
    job = _new(store)
    store.begin(job.id, 3)
    store.fail(job.id, "corrupt_video", "bad")
    assert store.fail(job.id, "other", "x").error.code == "corrupt_video"
    assert store.get(job.id).status == "failed"


def test_idempotency(store: JobStore) -> None:
    first, created = store.create({"id": new_job_id(), "owner": "a", "sha256": "s1"}, "k1")
    again, created2 = store.create({"id": new_job_id(), "owner": "a", "sha256": "s1"}, "k1")
    assert created and not created2 and again.id == first.id
    with pytest.raises(IdempotencyConflict):
        store.create({"id": new_job_id(), "owner": "a", "sha256": "s2"}, "k1")
    other, created3 = store.create({"id": new_job_id(), "owner": "b", "sha256": "s1"}, "k1")
    assert created3 and other.id != first.id  # keys are per owner


def test_list_is_per_owner_and_paginated(store: JobStore) -> None:
    ids = [_new(store, "alice").id for _ in range(5)]
    _new(store, "bob")
    page, total = store.list("alice", limit=2, offset=0)
    assert total == 5 and [j.id for j in page] == ids[::-1][:2]
    page2, _ = store.list("alice", limit=2, offset=4)
    assert [j.id for j in page2] == [ids[0]]
    store.r.delete(store.job_key(ids[0]))  # expired record: pruned from the index
    assert store.list("alice")[1] == 4


def test_reap_stale_running(store: JobStore) -> None:
    job = _new(store)
    store.begin(job.id, 3)
    store.r.zadd("hamnet:running", {job.id: time.time() - 1000})
    assert store.reap_stale(max_runtime_s=100) == [job.id]
    assert store.get(job.id).error.code == "time_limit_exceeded"


def test_rate_limit(store: JobStore) -> None:
    t = Telemetry(store.r)
    assert t.rate_hit("x", 2) == 0 and t.rate_hit("x", 2) == 0
    assert 1 <= t.rate_hit("x", 2) <= 60
    assert t.rate_hit("y", 0) == 0


def test_stage_histogram_is_cumulative(store: JobStore) -> None:
    t = Telemetry(store.r)
    t.observe_stage("features", 3.0)
    t.observe_stage("features", 0.05)
    raw = t.stats()["stages"]["features"]
    assert int(raw["count"]) == 2 and float(raw["sum"]) == pytest.approx(3.05)
    assert int(raw[f"le:{STAGE_BUCKETS[0]}"]) == 1 and int(raw[f"le:{STAGE_BUCKETS[-1]}"]) == 2


def test_heartbeats(store: JobStore) -> None:
    t = Telemetry(store.r)
    t.heartbeat("w1", {"name": "w1", "model_loaded": True}, ttl_s=0.5)
    assert [w["name"] for w in t.workers()] == ["w1"]
    time.sleep(0.7)
    assert t.workers() == []


def test_public_view_hides_internals() -> None:
    view = public_view({"id": "a", "owner": "k123", "sha256": "s", "status": "queued"})
    assert view == {"id": "a", "status": "queued"}


# ------------------------------------------------------------------------- leases (hardening)


def test_expired_lease_requeues_and_the_old_attempt_cannot_write(store: JobStore) -> None:
    """A worker that died holding a job: its lease expires, the job is queued again, the
    next attempt runs it; the old attempt (if it was only stalled) can no longer report
    progress, fail or finish it, so exactly one result is stored."""
    job = _new(store)
    first, action = store.begin(job.id, 3, worker="w-dead", lease_s=0.2)
    assert action == "run" and first.lease
    assert store.requeue_expired(lease_s=0.2) == []  # not expired yet
    time.sleep(0.3)
    assert store.requeue_expired(lease_s=0.2) == [job.id]
    queued = store.get(job.id)
    assert queued.status == "queued" and queued.requeues == 1 and queued.lease is None
    assert store.counts() == {"queued": 1, "running": 0}
    second, action = store.begin(job.id, 3, worker="w-live", lease_s=30)
    assert action == "run" and second.attempts == 2 and second.lease != first.lease
    # the first attempt wakes up: every write is refused
    assert not store.renew(job.id, first.lease)
    assert not store.progress(job.id, "features", 50, first.lease)
    assert store.fail(job.id, "x", "y", token=first.lease).status == "running"
    assert not store.finish(job.id, {"video": {"duration": 1}}, token=first.lease)
    assert store.finish(job.id, {"video": {"duration": 2}}, token=second.lease)
    assert store.get_result(job.id) == {"video": {"duration": 2}}
    assert Telemetry(store.r).stats()["jobs"]["succeeded"] == 1


def test_renewed_lease_is_not_requeued(store: JobStore) -> None:
    job = _new(store)
    got, _ = store.begin(job.id, 3, worker="w", lease_s=0.3)
    for _ in range(4):
        time.sleep(0.15)
        assert store.renew(job.id, got.lease, lease_s=0.3)
        assert store.requeue_expired(lease_s=0.3) == []
    assert store.get(job.id).status == "running"


def test_live_heartbeat_naming_the_job_extends_an_expired_lease(store: JobStore) -> None:
    job = _new(store)
    store.begin(job.id, 3, worker="w1", lease_s=0.1)
    Telemetry(store.r).heartbeat("w1", {"name": "w1", "busy_job": job.id}, ttl_s=5)
    time.sleep(0.2)
    assert store.requeue_expired(lease_s=5) == []
    assert store.get(job.id).status == "running"


def test_terminal_status_drops_the_lease(store: JobStore) -> None:
    job = _new(store)
    got, _ = store.begin(job.id, 3, worker="w", lease_s=0.1)
    store.cancel(job.id)
    time.sleep(0.2)
    assert store.requeue_expired() == [] and store.r.zcard("hamnet:leases") == 0
    assert not store.renew(job.id, got.lease)


def test_idempotency_claim_and_record_are_one_step(store: JobStore) -> None:
    """Many concurrent creates with one key: exactly one job exists afterwards."""
    from concurrent.futures import ThreadPoolExecutor

    def create(_: int) -> tuple[str, bool]:
        job, created = store.create({"id": new_job_id(), "owner": "a", "sha256": "s"}, "k")
        return job.id, created

    with ThreadPoolExecutor(8) as pool:
        out = list(pool.map(create, range(32)))
    assert sum(created for _, created in out) == 1
    assert len({job_id for job_id, _ in out}) == 1
    assert store.counts()["queued"] == 1 and store.list("a")[1] == 1


def test_orphans_are_unpublished_queued_jobs(store: JobStore) -> None:
    sent, lost = _new(store), _new(store)
    store.mark_enqueued(sent.id)
    assert store.orphans(older_than_s=0) == [lost.id]
    assert store.orphans(older_than_s=3600) == []
    store.discard(lost.id)
    assert store.get(lost.id) is None and store.counts()["queued"] == 1
    assert store.list("alice")[1] == 1


def test_state_machine_refuses_impossible_transitions() -> None:
    from hamnet_jobs.record import InvalidTransition, JobRecord

    job = JobRecord(id="j" * 22, owner="o")
    job.move("running")
    job.move("succeeded")
    with pytest.raises(InvalidTransition):
        job.move("running")
    with pytest.raises(InvalidTransition):
        JobRecord(id="k" * 22, owner="o").move("succeeded")  # queued -> succeeded
