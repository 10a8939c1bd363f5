"""The model registry against a real Redis, local storage and a real S3-compatible server
(moto's, on loopback): versions are immutable and never reused, concurrent publishes get
different versions, a failed copy leaves nothing behind, ownership hides other keys' models,
a version in use cannot be deleted, fetched files are checksum-verified."""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from pathlib import Path

import pytest
from hamnet_jobs.record import new_job_id
from hamnet_jobs.registry import (
    ChecksumMismatch,
    InvalidBundle,
    InvalidModelName,
    InvalidModelRef,
    ModelInUse,
    ModelNotFound,
    ModelProtected,
    ModelRegistry,
    manifest_checksum,
    parse_ref,
)
from hamnet_jobs.storage import S3Storage, Storage
from hamnet_jobs.store import JobStore, connect

ALICE, BOB = "kalice0000000000000000000", "kbob00000000000000000000000"


def make_bundle(root: Path, name: str = "toy", version: str = "1", classes=("a", "b"),
                head: bytes = b"onnx-head-bytes", extra: dict | None = None) -> Path:
    """A bundle directory as hamnet.bundle writes it (the registry reads only JSON and bytes,
    so the head need not be a real ONNX graph here)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "head.onnx").write_bytes(head)
    (root / "notes.txt").write_text("plots and notes travel with the bundle\n")
    manifest = {
        "format": "hamnet-bundle/1", "name": name, "version": version,
        "created": "2026-01-01T00:00:00Z", "classes": list(classes),
        "backbone": {"name": "motion"}, "postprocess": {},
        "files": {"head": {"path": "head.onnx", "sha256": hashlib.sha256(head).hexdigest()}},
        "card": {"title": f"{name} card", "synthetic": False, "summary": "s",
                 "limitations": ["x"]},
        **(extra or {}),
    }
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


@pytest.fixture()
def redis_client(redis_url: str):
    r = connect(redis_url)
    r.flushdb()
    return r


@pytest.fixture()
def local(redis_client, tmp_path: Path) -> ModelRegistry:
    default = make_bundle(tmp_path / "default-bundle", name="demo", version="synth-s0")
    return ModelRegistry(redis_client, Storage(tmp_path / "data").ensure(),
                         default_bundle=lambda: default)


def test_refs_parse_and_bad_syntax_is_rejected() -> None:
    assert parse_ref("mymodel") == ("mymodel", None)
    assert parse_ref("my-model.v2@12") == ("my-model.v2", 12)
    for bad in ("", "My", "a b", "x@", "x@v1", "x@-1", "../x", "a" * 65, "@3"):
        with pytest.raises(InvalidModelRef):
            parse_ref(bad)


def test_publish_copies_and_versions_are_immutable(local: ModelRegistry, tmp_path: Path) -> None:
    src = make_bundle(tmp_path / "b1")
    v1 = local.publish(ALICE, "mymodel", src, source={"training": "t1", "dataset": "d1"})
    assert (v1.name, v1.version, v1.owner) == ("mymodel", 1, ALICE)
    assert v1.checksum == manifest_checksum(json.loads((src / "manifest.json").read_text()))
    assert v1.classes == ["a", "b"] and v1.card["title"] == "toy card"
    assert v1.source == {"training": "t1", "dataset": "d1"}
    assert sorted(v1.files) == ["head.onnx", "manifest.json", "notes.txt"]
    stored = local.storage.root / "models" / ALICE / "mymodel" / "1"
    assert (stored / "head.onnx").read_bytes() == b"onnx-head-bytes"
    # the source may change or go: the published version does not
    v2 = local.publish(ALICE, "mymodel", make_bundle(tmp_path / "b2", head=b"other head"))
    assert v2.version == 2 and v2.checksum != v1.checksum
    assert (stored / "head.onnx").read_bytes() == b"onnx-head-bytes"
    assert local.resolve(ALICE, "mymodel").version == 2  # latest
    assert local.resolve(ALICE, "mymodel@1").checksum == v1.checksum
    assert [v.version for v in local.get(ALICE, "mymodel")] == [1, 2]
    assert v1.job_ref() == {"name": "toy", "version": "1", "checksum": v1.checksum,
                            "ref": "mymodel@1"}


def test_version_numbers_are_never_reused(local: ModelRegistry, tmp_path: Path) -> None:
    src = make_bundle(tmp_path / "b")
    local.publish(ALICE, "m", src)
    local.publish(ALICE, "m", src)
    local.delete(ALICE, "m", 2)
    assert local.publish(ALICE, "m", src).version == 3
    local.delete(ALICE, "m", 1)
    local.delete(ALICE, "m", 3)
    with pytest.raises(ModelNotFound):
        local.resolve(ALICE, "m")
    assert [m.name for m in local.list(ALICE)] == ["default"]
    assert local.publish(ALICE, "m", src).version == 4


def test_concurrent_publishes_get_different_versions(local: ModelRegistry,
                                                     tmp_path: Path) -> None:
    src = make_bundle(tmp_path / "b")
    out, errors = [], []

    def go() -> None:
        try:
            out.append(local.publish(ALICE, "race", src).version)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(out) == [1, 2, 3, 4, 5, 6]
    assert [v.version for v in local.get(ALICE, "race")] == [1, 2, 3, 4, 5, 6]
    for v in range(1, 7):
        assert (local.storage.root / "models" / ALICE / "race" / str(v) / "head.onnx").is_file()


def test_failed_copy_leaves_nothing(local: ModelRegistry, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import hamnet_jobs.registry as reg

    src = make_bundle(tmp_path / "b")
    real = reg.shutil.copyfile
    calls = []

    def failing_copy(a, b, *args, **kw):
        calls.append(a)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(a, b, *args, **kw)

    monkeypatch.setattr(reg.shutil, "copyfile", failing_copy)
    with pytest.raises(OSError):
        local.publish(ALICE, "broken", src)
    monkeypatch.undo()
    with pytest.raises(ModelNotFound):
        local.resolve(ALICE, "broken")
    leftovers = list((local.storage.root / "models" / ALICE / "broken").iterdir())
    assert leftovers == []


def test_bad_bundles_and_names_are_refused(local: ModelRegistry, tmp_path: Path) -> None:
    src = make_bundle(tmp_path / "b")
    for name in ("default", "Bad", "", "a/b", "x" * 70):
        with pytest.raises(InvalidModelName):
            local.publish(ALICE, name, src)
    with pytest.raises(InvalidBundle, match="no manifest.json"):
        local.publish(ALICE, "m", tmp_path)
    (src / "head.onnx").write_bytes(b"tampered")
    with pytest.raises(InvalidBundle, match="sha256"):
        local.publish(ALICE, "m", src)
    assert local.r.keys("hamnet:model:*") == []


def test_ownership_hides_other_keys_models(local: ModelRegistry, tmp_path: Path) -> None:
    src = make_bundle(tmp_path / "b")
    local.publish(ALICE, "private", src)
    shared = local.publish(None, "team", make_bundle(tmp_path / "t", name="team"))
    with pytest.raises(ModelNotFound):
        local.resolve(BOB, "private")
    with pytest.raises(ModelNotFound):
        local.get(BOB, "private")
    with pytest.raises(ModelNotFound):
        local.delete(BOB, "private", 1)
    assert local.resolve(BOB, "team").checksum == shared.checksum
    assert [m.ref for m in local.list(ALICE)] == ["default", "private@1", "team@1"]
    assert [m.ref for m in local.list(BOB)] == ["default", "team@1"]
    # an own model shadows a shared one of the same name
    local.publish(BOB, "team", src)
    assert local.resolve(BOB, "team").owner == BOB
    assert local.resolve(ALICE, "team").owner is None
    with pytest.raises(ModelNotFound):  # a shared model is the operator's to delete
        local.delete(ALICE, "team", 1)


def test_default_alias(local: ModelRegistry) -> None:
    d = local.resolve(ALICE, "default")
    assert d.builtin and d.ref == "default" and d.owner is None and d.version == 1
    assert d.bundle_name == "demo" and d.bundle_version == "synth-s0"
    assert local.resolve(None, "default@1").checksum == d.checksum
    with pytest.raises(ModelNotFound):
        local.resolve(ALICE, "default@2")
    with pytest.raises(ModelProtected):
        local.delete(None, "default", 1)
    assert local.fetch(d, Path("/nonexistent")) == Path(d.location)


def test_delete_is_refused_while_a_job_uses_the_version(local: ModelRegistry,
                                                        tmp_path: Path) -> None:
    store = JobStore(local.r, ttl=3600)
    v1 = local.publish(ALICE, "busy", make_bundle(tmp_path / "b"))
    v2 = local.publish(ALICE, "busy", make_bundle(tmp_path / "c", head=b"v2"))
    job, _ = store.create({"id": new_job_id(), "owner": ALICE, "sha256": "x",
                           "model": v1.job_ref()})
    with pytest.raises(ModelInUse):
        local.delete(ALICE, "busy", 1)
    store.begin(job.id, 3)  # running: still in use
    with pytest.raises(ModelInUse):
        local.delete(ALICE, "busy", 1)
    local.delete(ALICE, "busy", 2)  # another version is free
    assert not (local.storage.root / v2.location).exists()
    store.finish(job.id, {"video": {}})
    local.delete(ALICE, "busy", 1)
    assert not (local.storage.root / v1.location).exists()
    with pytest.raises(ModelNotFound):
        local.resolve(ALICE, "busy")


def test_fetch_local_verifies_the_checksum(local: ModelRegistry, tmp_path: Path) -> None:
    v = local.publish(ALICE, "m", make_bundle(tmp_path / "b"))
    path = local.fetch(v, tmp_path / "cache")
    assert path == local.storage.root / v.location and (path / "head.onnx").is_file()
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["classes"] = ["a", "z"]  # someone edited the stored copy
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ChecksumMismatch):
        local.fetch(v, tmp_path / "cache")


# ---- S3 (moto server) ----------------------------------------------------------------------
BUCKET = "hamnet-models"


@pytest.fixture(scope="module")
def s3_url(tmp_path_factory):
    sys.path.insert(0, str(Path(__file__).parents[1] / "service"))
    import httpx
    from hamnet_procs import Proc, free_port, wait_for

    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
           "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    argv = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
    proc = Proc("moto", [*argv, "-H", "127.0.0.1", "-p", str(port)], dict(os.environ),
                tmp_path_factory.mktemp("logs") / "moto.log").start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(url, timeout=2).status_code < 500, 30, "moto_server", proc)
    yield url
    proc.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture()
def s3reg(s3_url: str, redis_client, tmp_path: Path) -> ModelRegistry:
    storage = S3Storage(tmp_path / "gw", bucket=BUCKET, prefix="uploads/",
                        endpoint_url=s3_url, region="us-east-1").ensure()
    try:
        storage.client.create_bucket(Bucket=BUCKET)
    except storage.client.exceptions.BucketAlreadyOwnedByYou:
        pass
    return ModelRegistry(redis_client, storage)


def _objects(reg: ModelRegistry, prefix: str) -> list[str]:
    listing = reg.storage.client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for o in listing.get("Contents", []))


def test_s3_publish_fetch_delete(s3reg: ModelRegistry, tmp_path: Path) -> None:
    v = s3reg.publish(ALICE, "cloud", make_bundle(tmp_path / "b"))
    prefix = f"models/{ALICE}/cloud/1/"
    assert _objects(s3reg, prefix) == [prefix + f for f in
                                       ("head.onnx", "manifest.json", "notes.txt")]
    # a worker on another machine: its own data dir, same Redis and bucket
    worker = ModelRegistry(s3reg.r, S3Storage(tmp_path / "worker", bucket=BUCKET,
                                              endpoint_url=s3reg.storage.endpoint_url,
                                              region="us-east-1").ensure())
    got = worker.resolve(ALICE, "cloud@1")
    path = worker.fetch(got, tmp_path / "worker" / "models")
    assert path == tmp_path / "worker" / "models" / v.checksum
    assert (path / "head.onnx").read_bytes() == b"onnx-head-bytes"
    assert worker.fetch(got, tmp_path / "worker" / "models") == path  # reused
    s3reg.delete(ALICE, "cloud", 1)
    assert _objects(s3reg, prefix) == []


def test_s3_fetch_detects_a_swapped_object(s3reg: ModelRegistry, tmp_path: Path) -> None:
    v = s3reg.publish(ALICE, "swap", make_bundle(tmp_path / "b"))
    s3reg.storage.client.put_object(Bucket=BUCKET, Key=f"{v.location}/head.onnx",
                                    Body=b"not the published head")
    dest = tmp_path / "fetched"
    with pytest.raises(ChecksumMismatch):
        s3reg.fetch(v, dest)
    assert not dest.exists() or list(dest.iterdir()) == []  # nothing that looks whole


def test_s3_failed_upload_leaves_nothing(s3reg: ModelRegistry, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from hamnet_jobs.storage import StorageUnavailable

    client = s3reg.storage.client
    real = client.upload_file
    calls = []

    def flaky(filename, bucket, key, *a, **kw):
        calls.append(key)
        if len(calls) == 2:
            raise ConnectionError("connection reset by peer")
        return real(filename, bucket, key, *a, **kw)

    monkeypatch.setattr(client, "upload_file", flaky)
    with pytest.raises(StorageUnavailable):
        s3reg.publish(ALICE, "flaky", make_bundle(tmp_path / "b"))
    monkeypatch.undo()
    assert _objects(s3reg, f"models/{ALICE}/flaky/") == []
    with pytest.raises(ModelNotFound):
        s3reg.resolve(ALICE, "flaky")
