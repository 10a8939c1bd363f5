"""``/v1/batches`` through the real stack (gateway + redis + Celery worker + moto S3 + a
loopback HTTP file server): one job per source, counts derived from the jobs, result JSON
written next to the S3 sources, an S3 prefix expanded, cancellation, ownership, limits."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from sourcestack import Stack

pytestmark = [pytest.mark.service, pytest.mark.slow]

KEY, OTHER = "batch-key-alice", "batch-key-bob"


@pytest.fixture(scope="module")
def stack(bundle_dir: Path, tmp_path_factory):
    st = Stack(tmp_path_factory.mktemp("batches"), bundle_dir, {
        "HAMNET_API_KEYS": f"{KEY},{OTHER}",
        "HAMNET_SOURCE_S3_BUCKETS": "videos",
        "HAMNET_OUTPUT_S3_BUCKETS": "videos",
        "HAMNET_BATCH_MAX_SOURCES": "5",
    })
    st.s3().create_bucket(Bucket="videos")
    yield st
    st.stop()


@pytest.fixture()
def api(stack: Stack):
    with httpx.Client(base_url=stack.url, timeout=60,
                      headers={"Authorization": f"Bearer {KEY}"}) as c:
        yield c


def wait_batch(api: httpx.Client, batch_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    b: dict = {}
    while time.monotonic() < deadline:
        b = api.get(f"/v1/batches/{batch_id}").json()
        if b["status"] == "done":
            return b
        time.sleep(0.3)
    raise TimeoutError(f"batch {batch_id} still active: {b.get('counts')}")


def test_batch_of_three_with_one_bad_source(stack: Stack, api: httpx.Client,
                                            small_video: Path) -> None:
    s3 = stack.s3()
    video = small_video.read_bytes()
    s3.put_object(Bucket="videos", Key="set1/a.mp4", Body=video)
    s3.put_object(Bucket="videos", Key="set1/b.mp4", Body=video)
    srcs = ["s3://videos/set1/a.mp4", "s3://videos/set1/b.mp4", "s3://videos/set1/gone.mp4"]
    r = api.post("/v1/batches", json={"sources": srcs, "output_uri": "same", "tag": "set1"})
    assert r.status_code == 202, r.text
    batch = r.json()
    assert r.headers["Location"] == f"/v1/batches/{batch['id']}"
    assert [j["source"] for j in batch["jobs"]] == srcs
    assert batch["counts"]["total"] == 3 and batch["counts"]["queued"] + \
        batch["counts"]["running"] + batch["counts"]["succeeded"] + \
        batch["counts"]["failed"] == 3
    done = wait_batch(api, batch["id"])
    assert done["counts"] == {"total": 3, "queued": 0, "running": 0, "succeeded": 2,
                              "failed": 1, "cancelled": 0, "expired": 0}, stack.logs()
    bad = done["jobs"][2]
    assert bad["status"] == "failed" and bad["error"]["code"] == "source_not_found"
    # every job is an ordinary job that names its batch
    job = api.get(done["jobs"][0]["links"]["self"]).json()
    assert job["batch"] == batch["id"] and job["tag"] == "set1"
    # the result JSON next to each good source, equal to the API's result
    for item, key in zip(done["jobs"][:2], ("set1/a.mp4", "set1/b.mp4"), strict=True):
        assert item["output"]["written"] is True, item
        obj = json.loads(s3.get_object(Bucket="videos", Key=key + ".hamnet.json")["Body"]
                         .read())
        result = api.get(item["links"]["result"]).json()
        assert obj["id"] == item["id"] and obj["segments"] == result["segments"]
        assert obj["source"] == f"s3://videos/{key}"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="videos",
                                                       Prefix="set1/")["Contents"])
    assert keys == ["set1/a.mp4", "set1/a.mp4.hamnet.json", "set1/b.mp4",
                    "set1/b.mp4.hamnet.json"]


def test_batch_from_an_s3_prefix_and_http(stack: Stack, api: httpx.Client,
                                          small_video: Path) -> None:
    s3 = stack.s3()
    video = small_video.read_bytes()
    for key in ("set2/one.mp4", "set2/sub/two.MP4", "set2/readme.txt"):
        s3.put_object(Bucket="videos", Key=key, Body=video if key.endswith(("4",)) else b"hi")
    r = api.post("/v1/batches", json={"s3_prefix": "s3://videos/set2/", "min_score": 0.0})
    assert r.status_code == 202, r.text
    b = r.json()
    assert [j["source"] for j in b["jobs"]] == ["s3://videos/set2/one.mp4",
                                                "s3://videos/set2/sub/two.MP4"]
    assert b["s3_prefix"] == "s3://videos/set2/"
    url = stack.files.add("/batch/http.mp4", body=video)
    h = api.post("/v1/batches", json={"sources": [url + "?sig=hidden"]}).json()
    assert h["jobs"][0]["source"] == url + "?sig=REDACTED"
    assert wait_batch(api, b["id"])["counts"]["succeeded"] == 2
    assert wait_batch(api, h["id"])["counts"]["succeeded"] == 1

    # listing: the owner's batches, newest first; another key sees none of them
    listing = api.get("/v1/batches").json()
    assert [x["id"] for x in listing["batches"][:2]] == [h["id"], b["id"]]
    with httpx.Client(base_url=stack.url, timeout=30,
                      headers={"Authorization": f"Bearer {OTHER}"}) as bob:
        assert bob.get("/v1/batches").json()["total"] == 0
        r = bob.get(f"/v1/batches/{b['id']}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "batch_not_found"
        assert bob.delete(f"/v1/batches/{b['id']}").status_code == 404


def test_cancel_a_batch(stack: Stack, api: httpx.Client, small_video: Path) -> None:
    # sources that stall: the first job sits in its download, the second waits in the queue
    urls = [stack.files.add(f"/batch/stall{i}.mp4", body=b"x" * 100, stall_s=8)
            for i in range(2)]
    b = api.post("/v1/batches", json={"sources": urls}).json()
    r = api.delete(f"/v1/batches/{b['id']}")
    assert r.status_code == 200, r.text
    assert r.json()["counts"]["cancelled"] == 2 and r.json()["status"] == "done"
    for j in r.json()["jobs"]:
        assert api.get(f"/v1/jobs/{j['id']}").json()["status"] == "cancelled"
    # the worker lets go of the cancelled download (it stays cancelled) and takes new work
    url = stack.files.add("/batch/after.mp4", body=small_video.read_bytes())
    after = api.post("/v1/batches", json={"sources": [url]}).json()
    assert wait_batch(api, after["id"])["counts"]["succeeded"] == 1
    for j in b["jobs"]:
        assert api.get(f"/v1/jobs/{j['id']}").json()["status"] == "cancelled"


@pytest.mark.parametrize(("body", "code"), [
    ({"sources": []}, "batch_empty"),
    ({"sources": ["s3://videos/a.mp4"] * 6}, "batch_too_large"),
    ({"sources": ["s3://videos/a.mp4", "ftp://x/y.mp4"]}, "source_scheme_not_allowed"),
    ({"sources": ["s3://videos/a.mp4"], "s3_prefix": "s3://videos/"}, "invalid_batch"),
    ({}, "invalid_batch"),
    ({"s3_prefix": "s3://elsewhere/"}, "source_bucket_not_allowed"),
    ({"s3_prefix": "s3://videos/nothing-here/"}, "batch_empty"),
    ({"sources": ["s3://videos/x/a.mp4", "s3://videos/y/a.mp4"], "output_uri": "s3://videos/o/"},
     "output_collision"),
    ({"sources": ["s3://videos/a.mp4"], "min_score": 3}, "invalid_parameter"),
    ({"sources": ["s3://videos/a.mp4"], "colour": "red"}, "unknown_field"),
])
def test_batch_refusals_create_nothing(api: httpx.Client, body: dict, code: str) -> None:
    before = api.get("/v1/jobs").json()["total"]
    r = api.post("/v1/batches", json=body)
    assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
    assert api.get("/v1/jobs").json()["total"] == before
    if code == "source_scheme_not_allowed":
        assert r.json()["error"]["message"].startswith("sources[1]: ")


def test_batches_need_a_key(stack: Stack) -> None:
    with httpx.Client(base_url=stack.url, timeout=30) as anon:
        assert anon.get("/v1/batches").status_code == 401
        assert anon.post("/v1/batches", json={"sources": ["s3://videos/a.mp4"]}).status_code \
            == 401
