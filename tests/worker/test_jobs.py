"""The job store against a real Redis: state transitions, the attempt counter, cancellation
races, idempotency, TTLs and the metrics it keeps."""

from __future__ import annotations

import time

import pytest
from hamnet_worker.jobs import (
    STAGE_BUCKETS,
    IdempotencyConflict,
    JobStore,
    connect,
    new_job_id,
    public_view,
)


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
    assert store.get(job["id"])["status"] == "queued"
    assert 0 < store.r.ttl(store.job_key(job["id"])) <= 3600
    assert store.counts() == {"queued": 1, "running": 0}
    got, action = store.begin(job["id"], max_attempts=3)
    assert action == "run" and got["status"] == "running" and got["attempts"] == 1
    assert store.counts() == {"queued": 0, "running": 1}
    assert store.progress(job["id"], "features", 50.0)
    assert store.get(job["id"])["progress"] == 50
    result = {"video": {"duration": 12.5}, "segments": []}
    assert store.finish(job["id"], result)
    done = store.get(job["id"])
    assert done["status"] == "succeeded" and done["progress"] == 100
    assert store.get_result(job["id"]) == result
    assert 0 < store.r.ttl(store.result_key(job["id"])) <= 3600
    assert store.counts() == {"queued": 0, "running": 0}
    stats = store.stats()
    assert stats["jobs"]["succeeded"] == 1 and stats["video_seconds"] == 12.5


def test_duplicate_delivery_runs_once(store: JobStore) -> None:
    job = _new(store)
    store.begin(job["id"], 3)
    store.finish(job["id"], {"video": {}})
    again, action = store.begin(job["id"], 3)
    assert action == "skip" and again["status"] == "succeeded"
    assert not store.finish(job["id"], {"video": {"duration": 1}})  # no second result


def test_attempt_counter_fails_poison_job(store: JobStore) -> None:
    job = _new(store)
    for _ in range(3):  # the worker died three times mid-job
        assert store.begin(job["id"], 3)[1] == "run"
    failed, action = store.begin(job["id"], 3)
    assert action == "poison"
    assert failed["status"] == "failed" and failed["error"]["code"] == "too_many_attempts"
    assert store.begin(job["id"], 3)[1] == "skip"


def test_cancel_while_running_wins_over_finish(store: JobStore) -> None:
    job = _new(store)
    store.begin(job["id"], 3)
    cancelled, prev = store.cancel(job["id"])
    assert prev == "running" and cancelled["status"] == "cancelled"
    assert not store.progress(job["id"], "features", 10)  # the worker's stop signal
    assert not store.finish(job["id"], {"video": {}})
    assert store.get_result(job["id"]) is None
    assert store.get(job["id"])["status"] == "cancelled"


def test_cancel_queued_then_forget(store: JobStore) -> None:
    job = _new(store)
    store.cancel(job["id"])
    assert store.begin(job["id"], 3)[1] == "skip"
    assert store.counts()["queued"] == 0
    store.cancel(job["id"])  # a second DELETE forgets the finished job
    assert store.get(job["id"]) is None
    assert store.list("alice")[1] == 0


def test_fail_is_terminal(store: JobStore) -> None:
    job = _new(store)
    store.begin(job["id"], 3)
    store.fail(job["id"], "corrupt_video", "bad")
    assert store.fail(job["id"], "other", "x")["error"]["code"] == "corrupt_video"
    assert store.get(job["id"])["status"] == "failed"


def test_idempotency(store: JobStore) -> None:
    first, created = store.create({"id": new_job_id(), "owner": "a", "sha256": "s1"}, "k1")
    again, created2 = store.create({"id": new_job_id(), "owner": "a", "sha256": "s1"}, "k1")
    assert created and not created2 and again["id"] == first["id"]
    with pytest.raises(IdempotencyConflict):
        store.create({"id": new_job_id(), "owner": "a", "sha256": "s2"}, "k1")
    other, created3 = store.create({"id": new_job_id(), "owner": "b", "sha256": "s1"}, "k1")
    assert created3 and other["id"] != first["id"]  # keys are per owner


def test_list_is_per_owner_and_paginated(store: JobStore) -> None:
    ids = [_new(store, "alice")["id"] for _ in range(5)]
    _new(store, "bob")
    page, total = store.list("alice", limit=2, offset=0)
    assert total == 5 and [j["id"] for j in page] == ids[::-1][:2]
    page2, _ = store.list("alice", limit=2, offset=4)
    assert [j["id"] for j in page2] == [ids[0]]
    store.r.delete(store.job_key(ids[0]))  # expired record: pruned from the index
    assert store.list("alice")[1] == 4


def test_reap_stale_running(store: JobStore) -> None:
    job = _new(store)
    store.begin(job["id"], 3)
    store.r.zadd("hamnet:running", {job["id"]: time.time() - 1000})
    assert store.reap_stale(max_runtime_s=100) == [job["id"]]
    assert store.get(job["id"])["error"]["code"] == "time_limit_exceeded"


def test_rate_limit(store: JobStore) -> None:
    assert store.rate_hit("x", 2) == 0 and store.rate_hit("x", 2) == 0
    assert 1 <= store.rate_hit("x", 2) <= 60
    assert store.rate_hit("y", 0) == 0


def test_stage_histogram_is_cumulative(store: JobStore) -> None:
    store.observe_stage("features", 3.0)
    store.observe_stage("features", 0.05)
    raw = store.stats()["stages"]["features"]
    assert int(raw["count"]) == 2 and float(raw["sum"]) == pytest.approx(3.05)
    assert int(raw[f"le:{STAGE_BUCKETS[0]}"]) == 1 and int(raw[f"le:{STAGE_BUCKETS[-1]}"]) == 2


def test_heartbeats(store: JobStore) -> None:
    store.heartbeat("w1", {"name": "w1", "model_loaded": True}, ttl_s=0.5)
    assert [w["name"] for w in store.workers()] == ["w1"]
    time.sleep(0.7)
    assert store.workers() == []


def test_public_view_hides_internals() -> None:
    view = public_view({"id": "a", "owner": "k123", "sha256": "s", "status": "queued"})
    assert view == {"id": "a", "status": "queued"}
