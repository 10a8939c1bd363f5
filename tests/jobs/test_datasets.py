"""Dataset and training records against a real Redis, and the blob store: status changes,
no resurrection of a deleted dataset by a late validator write, the stale-validation sweep,
training leases (begin / busy / requeue after expiry / fenced writes), cancel."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hamnet_jobs.blobs import BlobStore, check_key
from hamnet_jobs.datasets import DatasetRecord, DatasetStore, ItemError
from hamnet_jobs.store import connect
from hamnet_jobs.trainings import TrainingRecord, TrainingStore


@pytest.fixture()
def client(redis_url: str):
    c = connect(redis_url)
    c.flushdb()
    return c


def test_dataset_lifecycle_and_listing(client) -> None:
    store = DatasetStore(client, ttl=3600)
    rec = store.create(DatasetRecord(owner="alice", name="set", videos=3,
                                     classes={"spin": 2, "slide": 1}))
    assert rec.prefix == f"datasets/{rec.id}" and rec.status == "validating"
    assert "owner" not in rec.public() and "prefix" not in rec.public()
    store.update(rec.id, progress=50)
    ready = store.mark_ready(rec.id, 3, {"spin": 2, "slide": 1})
    assert ready.status == "ready" and ready.finished_at and ready.progress == 100
    # a finished dataset is not changed by a late write of its validator
    assert store.mark_failed(rec.id, ItemError(code="x", message="late")).status == "ready"
    other = store.create(DatasetRecord(owner="bob", name="b"))
    listed, total = store.list("alice")
    assert [d.id for d in listed] == [rec.id] and total == 1
    store.delete(other)
    assert store.get(other.id) is None
    # a validator writing after the delete does not bring it back
    assert store.update(other.id, progress=10) is None
    assert store.get(other.id) is None


def test_failed_dataset_keeps_its_error_list(client) -> None:
    store = DatasetStore(client, ttl=3600)
    rec = store.create(DatasetRecord(owner="alice", name="set"))
    errs = [ItemError(code="not_a_video", message="bad", member=f"v{i}.mp4", line=i + 2)
            for i in range(300)]
    out = store.mark_failed(rec.id, ItemError(code="not_a_video", message="300 bad"), errs)
    assert out.status == "failed" and out.error.code == "not_a_video"
    assert len(out.errors) == 200 and out.errors[0].member == "v0.mp4"
    assert out.errors[0].line == 2


def test_stale_validation_is_found(client) -> None:
    store = DatasetStore(client, ttl=3600)
    rec = store.create(DatasetRecord(owner="alice", name="set"))
    assert store.stale(60) == []
    time.sleep(1.2)
    assert [d.id for d in store.stale(1.0)] == [rec.id]
    store.mark_ready(rec.id, 1, {"a": 1})
    assert store.stale(0.0) == []


def test_training_lease_requeue_and_fencing(client) -> None:
    store = TrainingStore(client, ttl=3600)
    rec = store.create(TrainingRecord(owner="alice", name="m", dataset="d" * 22, epochs=3))
    got, action = store.begin(rec.id, max_attempts=3, worker="w1", lease_s=0.5)
    assert action == "run" and got.status == "running" and got.attempts == 1
    token = got.lease
    # a second delivery while the lease is live is "busy", not a second run
    assert store.begin(rec.id, 3, "w2", 0.5)[1] == "busy"
    assert store.report(rec.id, token, epoch=1, history=[{"epoch": 1, "loss": 1.0}])
    time.sleep(0.7)
    assert store.requeue_expired() == [rec.id]
    again = store.get(rec.id)
    assert again.status == "queued" and again.requeues == 1 and again.epoch == 1
    # the attempt that lost its lease can no longer write
    assert not store.report(rec.id, token, epoch=2)
    assert not store.finish(rec.id, token, None, {})
    got2, action2 = store.begin(rec.id, 3, "w2", 30)
    assert action2 == "run" and got2.attempts == 2
    assert store.finish(rec.id, got2.lease, {"ref": "m@1"}, {"x": 1})
    done = store.get(rec.id)
    assert done.status == "succeeded" and done.model == {"ref": "m@1"}
    assert store.begin(rec.id, 3, "w3", 30)[1] == "skip"


def test_training_cancel_and_poison(client) -> None:
    store = TrainingStore(client, ttl=3600)
    rec = store.create(TrainingRecord(owner="alice", name="m", dataset="d" * 22))
    got, _ = store.begin(rec.id, 1, "w1", 30)
    store.cancel(rec.id)
    assert store.get(rec.id).status == "cancelled"
    assert not store.alive(rec.id, got.lease)
    store.cancel(rec.id)  # a finished one is forgotten
    assert store.get(rec.id) is None
    rec2 = store.create(TrainingRecord(owner="alice", name="m", dataset="d" * 22))
    client.zadd("hamnet:train-leases", {rec2.id: time.time() - 1})
    store.begin(rec2.id, 1, "w1", 0.01)
    time.sleep(0.05)
    store.requeue_expired()
    assert store.begin(rec2.id, 1, "w1", 30)[1] == "poison"
    assert store.get(rec2.id).error.code == "too_many_attempts"


def test_blob_keys_are_checked_and_prefixes_deleted(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    for bad in ("../x", "/abs", "a/../b", "a//b", ".hidden", ""):
        with pytest.raises(ValueError):
            check_key(bad)
    blobs.put_bytes("datasets/abc/labels.json", b"{}")
    blobs.put_bytes("datasets/abc/videos/v0.mp4", b"x")
    assert blobs.list("datasets/abc") == ["datasets/abc/labels.json",
                                          "datasets/abc/videos/v0.mp4"]
    assert blobs.get_bytes("datasets/abc/labels.json") == b"{}"
    blobs.delete_prefix("datasets/abc")
    assert blobs.list("datasets/abc") == [] and not blobs.exists("datasets/abc/labels.json")
