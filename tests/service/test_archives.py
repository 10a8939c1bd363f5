"""Bad labelled archives, through HTTP on a real gateway + redis: each kind gets its precise
error code, and nothing stays behind (no partial upload, no dataset files, no scratch).

Structural problems (format, names, links, sizes, labels.csv) are answered in the request;
a listed file that is not a video is found by the sandboxed probe after the 202, so that one
shows up as a ``failed`` dataset with the member named.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hamnet_procs import RedisServer, start_gateway  # noqa: E402
from test_s3_storage import aws_env, s3, s3_server  # noqa: E402, F401  (moto fixtures)


@pytest.fixture(scope="module")
def small_video(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A real 2 s MP4 (rendered by tests/video/vidgen.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "video"))
    import vidgen

    out = tmp_path_factory.mktemp("vid") / "clip.mp4"
    vidgen.write_video(out, vidgen.moving_square(20, 64, 48), fps=10.0)
    return out.read_bytes()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("archives")
    redis = RedisServer(base / "redis").start()
    data = base / "data"
    env = {**os.environ, "HAMNET_REDIS_URL": redis.url, "HAMNET_DATA_DIR": str(data),
           "HAMNET_DATASET_MAX_MEMBERS": "20", "HAMNET_DATASET_MIN_VIDEOS": "1",
           "HAMNET_RATE_LIMIT_PER_MINUTE": "0"}
    gw, url = start_gateway(env, base / "gateway.log")
    try:
        yield url, data
    finally:
        gw.stop()
        redis.stop()


def _zip(files: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def _tar(members: list[tarfile.TarInfo | tuple[str, bytes]], mode: str = "w") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as t:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                t.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                t.addfile(info, io.BytesIO(m[1]))
    return buf.getvalue()


def _post(url: str, data: bytes, name: str = "data.zip") -> httpx.Response:
    return httpx.post(f"{url}/v1/datasets", files={"file": (name, data)}, timeout=120)


def _leftovers(data: Path) -> list[str]:
    out = []
    for sub in ("incoming", "scratch", "blobs/datasets"):
        root = data / sub
        if root.exists():
            out += [str(p.relative_to(data)) for p in root.rglob("*") if p.is_file()]
    return out


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


LABELS = b"video,labels\nclip.mp4,spin\n"


def _cases(video: bytes) -> list[tuple[str, bytes, int, str, str]]:
    """(id, archive bytes, status, code, text the message must contain)."""
    zeros = b"\0" * (6 << 20)
    many = {f"v{i}.mp4": video for i in range(25)}
    many["labels.csv"] = b"video,labels\n" + b"".join(f"v{i}.mp4,a\n".encode() for i in range(25))
    dev = tarfile.TarInfo("dev0")
    dev.type = tarfile.CHRTYPE
    return [
        ("traversal_zip", _zip({"labels.csv": LABELS, "../clip.mp4": video}), 422,
         "archive_path_traversal", ".."),
        ("absolute_tar", _tar([("labels.csv", LABELS), ("/tmp/clip.mp4", video)]), 422,
         "archive_path_traversal", "absolute"),
        ("symlink_tar", _tar([("labels.csv", LABELS), _link("clip.mp4", "/etc/passwd",
                                                             tarfile.SYMTYPE)]), 422,
         "archive_symlink", "clip.mp4"),
        ("hardlink_tar", _tar([("labels.csv", LABELS), _link("clip.mp4", "labels.csv",
                                                              tarfile.LNKTYPE)]), 422,
         "archive_symlink", "hard link"),
        ("device_tar", _tar([("labels.csv", LABELS), dev]), 422, "archive_special_file",
         "dev0"),
        ("zip_bomb", _zip({"labels.csv": LABELS, "clip.mp4": zeros}), 422, "archive_bomb",
         "clip.mp4"),
        ("gzip_bomb", _tar([("labels.csv", LABELS), ("clip.mp4", zeros)], "w:gz"), 422,
         "archive_bomb", "expands"),
        ("too_many_files", _zip(many, zipfile.ZIP_STORED), 422, "archive_too_many_files",
         "at most 20"),
        ("no_labels", _zip({"clip.mp4": video}), 422, "labels_missing", "labels.csv"),
        ("label_syntax", _zip({"labels.csv": b"video,labels\nclip.mp4,spin|slide\n",
                               "clip.mp4": video}), 422, "labels_invalid", "line 2"),
        ("bad_header", _zip({"labels.csv": b"file,label\nclip.mp4,spin\n", "clip.mp4": video}),
         422, "labels_invalid", "line 1"),
        ("empty_labels", _zip({"labels.csv": b"video,labels\nclip.mp4,\n", "clip.mp4": video}),
         422, "labels_invalid", "line 2: no labels"),
        ("duplicate", _zip({"labels.csv": b"video,labels\nclip.mp4,a\nclip.mp4,b\n",
                            "clip.mp4": video}), 422, "labels_invalid", "line 3"),
        ("listed_missing", _zip({"labels.csv": b"video,labels\nclip.mp4,a\nother.mp4,b\n",
                                 "clip.mp4": video}), 422, "labels_invalid", "line 3"),
        ("unlisted", _zip({"labels.csv": LABELS, "clip.mp4": video, "extra.mp4": video}), 422,
         "labels_invalid", "extra.mp4"),
        ("text_listed", _zip({"labels.csv": b"video,labels\nclip.mp4,a\nnotes.txt,b\n",
                              "clip.mp4": video, "notes.txt": b"hello"}), 422, "not_a_video",
         "notes.txt"),
        ("empty_zip", _zip({}), 422, "archive_empty", "no files"),
        ("only_labels", _zip({"labels.csv": b"video,labels\n"}), 422, "archive_empty",
         "no videos"),
        ("not_an_archive", b"this is plain text, not an archive" * 20, 415,
         "unsupported_archive", "by content"),
    ]


def test_bad_archives_get_precise_errors_and_leave_nothing(stack, small_video) -> None:
    url, data = stack
    failures = []
    for case_id, blob, status, code, text in _cases(small_video):
        r = _post(url, blob)
        body = r.json()
        err = body.get("error") or {}
        if r.status_code != status or err.get("code") != code or text not in err.get(
                "message", ""):
            failures.append(f"{case_id}: {r.status_code} {body}")
        left = _leftovers(data)
        if left:
            failures.append(f"{case_id}: left {left}")
    assert not failures, "\n".join(failures)


def _wait_done(url: str, dataset_id: str, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rec = httpx.get(f"{url}/v1/datasets/{dataset_id}", timeout=30).json()
        if rec["status"] != "validating":
            return rec
        time.sleep(0.3)
    raise AssertionError(f"dataset {dataset_id} still validating: {rec}")


def test_non_video_inside_fails_the_dataset_naming_the_member(stack, small_video) -> None:
    url, data = stack
    fake = b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000)  # looks like an MP4 by name only
    archive = _tar([("set/labels.csv", b"video,labels\ngood.mp4,spin\nbad.mp4,spin;slide\n"),
                    ("set/good.mp4", small_video), ("set/bad.mp4", fake)], "w:gz")
    r = _post(url, archive, "set.tar.gz")
    assert r.status_code == 202, r.text
    assert r.json()["status"] == "validating"
    assert r.json()["classes"] == {"slide": 1, "spin": 2}
    rec = _wait_done(url, r.json()["id"])
    assert rec["status"] == "failed", rec
    assert [e["member"] for e in rec["errors"]] == ["bad.mp4"]
    assert rec["errors"][0]["line"] == 3
    assert rec["error"]["code"] in ("not_a_video", "corrupt_video", "invalid_video")
    assert _leftovers(data) == []


def test_good_archive_becomes_ready_and_delete_removes_it(stack, small_video) -> None:
    url, data = stack
    archive = _tar([("labels.csv", b"video,labels\na.mp4,spin\nb,slide ; spin\n"),
                    ("a.mp4", small_video), ("b.mp4", small_video)])
    r = _post(url, archive, "whatever.bin")  # the name does not matter, the content does
    assert r.status_code == 202, r.text
    rec = _wait_done(url, r.json()["id"])
    assert rec["status"] == "ready", rec
    assert rec["videos"] == 2 and rec["classes"] == {"slide": 1, "spin": 2}
    stored = sorted(p.name for p in (data / "blobs" / "datasets" / rec["id"]).rglob("*")
                    if p.is_file())
    assert stored == ["labels.json", "v00000.mp4", "v00001.mp4"]
    assert httpx.delete(f"{url}/v1/datasets/{rec['id']}", timeout=30).status_code == 204
    assert httpx.get(f"{url}/v1/datasets/{rec['id']}", timeout=30).status_code == 404
    assert _leftovers(data) == []


# ---- the same through an S3-compatible bucket (moto's server on loopback) ------------------

@pytest.fixture(scope="module")
def s3_gateway(s3, s3_server: str,  # noqa: F811
               tmp_path_factory: pytest.TempPathFactory):
    from test_s3_storage import AWS_ENV, BUCKET

    base = tmp_path_factory.mktemp("archives-s3")
    redis = RedisServer(base / "redis").start()
    env = {**os.environ, **AWS_ENV, "HAMNET_REDIS_URL": redis.url,
           "HAMNET_DATA_DIR": str(base / "data"), "HAMNET_STORAGE": "s3",
           "HAMNET_S3_BUCKET": BUCKET, "HAMNET_S3_ENDPOINT_URL": s3_server,
           "HAMNET_DATASET_MIN_VIDEOS": "1", "HAMNET_RATE_LIMIT_PER_MINUTE": "0"}
    gw, url = start_gateway(env, base / "gateway.log")
    try:
        yield url, base / "data"
    finally:
        gw.stop()
        redis.stop()


def test_datasets_in_the_bucket_all_or_nothing(s3_gateway, s3, small_video) -> None:  # noqa: F811
    from test_s3_storage import objects

    url, data = s3_gateway
    good = _zip({"labels.csv": b"video,labels\nclip.mp4,spin\n", "clip.mp4": small_video})
    r = _post(url, good)
    assert r.status_code == 202, r.text
    rec = _wait_done(url, r.json()["id"])
    assert rec["status"] == "ready", rec
    assert objects(s3, f"datasets/{rec['id']}/") == [
        f"datasets/{rec['id']}/labels.json", f"datasets/{rec['id']}/videos/v00000.mp4"]
    bad = _zip({"labels.csv": b"video,labels\nclip.mp4,spin\nz.mp4,slide\n",
                "clip.mp4": small_video, "z.mp4": b"\x00" * 5000})
    r = _post(url, bad)
    assert r.status_code == 202, r.text
    failed = _wait_done(url, r.json()["id"])
    assert failed["status"] == "failed" and failed["errors"][0]["member"] == "z.mp4", failed
    assert objects(s3, f"datasets/{failed['id']}/") == []
    assert httpx.delete(f"{url}/v1/datasets/{rec['id']}", timeout=30).status_code == 204
    assert objects(s3, "datasets/") == []
    assert _leftovers(data) == []


def test_gateway_killed_mid_validation_leaves_no_dataset_validating(small_video, tmp_path):
    """kill -9 of the gateway while it probes the videos: the next gateway's sweeper fails the
    dataset (`validation_interrupted`) and deletes what had been stored."""
    redis = RedisServer(tmp_path / "redis").start()
    data = tmp_path / "data"
    env = {**os.environ, "HAMNET_REDIS_URL": redis.url, "HAMNET_DATA_DIR": str(data),
           "HAMNET_DATASET_STALE_S": "3", "HAMNET_PARTIAL_IDLE_S": "10",
           "HAMNET_RATE_LIMIT_PER_MINUTE": "0"}
    names = [f"v{i:02d}.mp4" for i in range(60)]
    archive = _zip({"labels.csv": b"video,labels\n" + b"".join(f"{n},spin\n".encode()
                                                              for n in names),
                    **{n: small_video for n in names}}, zipfile.ZIP_STORED)
    gw, url = start_gateway(env, tmp_path / "gateway1.log")
    gw2 = None
    try:
        r = _post(url, archive)
        assert r.status_code == 202, r.text
        ds_id = r.json()["id"]
        deadline = time.monotonic() + 120
        while httpx.get(f"{url}/v1/datasets/{ds_id}", timeout=30).json()["progress"] < 5:
            assert time.monotonic() < deadline, "validation made no progress"
            time.sleep(0.1)
        gw.kill9()
        rec = json.loads(redis.client().get(f"hamnet:dataset:{ds_id}"))
        assert rec["status"] == "validating"
        assert list((data / "blobs" / "datasets" / ds_id).rglob("*.mp4"))  # half written
        gw2, url2 = start_gateway(env, tmp_path / "gateway2.log")
        rec = _wait_done(url2, ds_id, timeout=180)
        assert rec["status"] == "failed" and rec["error"]["code"] == "validation_interrupted"
        assert not (data / "blobs" / "datasets" / ds_id).exists()
        deadline = time.monotonic() + 60  # the archive's partial file: swept when idle 10 s
        while _leftovers(data) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _leftovers(data) == []
    finally:
        for p in (gw2, gw):
            if p is not None:
                p.stop()
        redis.stop()
