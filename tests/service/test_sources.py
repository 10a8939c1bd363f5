"""``source_url`` jobs through the real stack (gateway + redis + Celery worker + moto S3 + a
loopback HTTP file server): the worker downloads, resumes, enforces the limits, and fails with
the precise code; the gateway refuses what can never work at submission."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from sourcestack import Stack, wait_terminal

pytestmark = [pytest.mark.service, pytest.mark.slow]

MAX_BYTES = 3 << 20


@pytest.fixture(scope="module")
def stack(bundle_dir: Path, tmp_path_factory):
    st = Stack(tmp_path_factory.mktemp("sources"), bundle_dir, {
        "HAMNET_SOURCE_S3_BUCKETS": "videos",
        "HAMNET_OUTPUT_S3_BUCKETS": "results,missing-bucket",
        "HAMNET_SOURCE_MAX_BYTES": str(MAX_BYTES),
        "HAMNET_LEASE_S": "4",  # a killed worker's job is requeued within seconds
    })
    st.s3().create_bucket(Bucket="videos")
    st.s3().create_bucket(Bucket="results")
    yield st
    st.stop()


@pytest.fixture()
def api(stack: Stack):
    with httpx.Client(base_url=stack.url, timeout=60) as c:
        yield c


def _segments(result: dict) -> list[tuple]:
    return [(s["label"], round(s["start"], 6), round(s["end"], 6), round(s["score"], 6))
            for s in result["segments"]]


def test_source_url_gives_the_same_result_as_an_upload(stack: Stack, api: httpx.Client,
                                                        small_video: Path) -> None:
    video = small_video.read_bytes()
    url = stack.files.add("/clips/small.mp4", body=video)
    up = api.post("/v1/jobs", files={"file": ("small.mp4", video, "video/mp4")})
    assert up.status_code == 202, up.text
    r = api.post("/v1/jobs", data={"source_url": url + "?token=s3cr3t"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["source"] == {"uri": url + "?token=REDACTED", "kind": "http"}
    assert job["filename"] == "small.mp4" and "source_url" not in job
    a, b = wait_terminal(api, up.json()["id"]), wait_terminal(api, job["id"])
    assert a["status"] == b["status"] == "succeeded", (a, b, stack.logs())
    ra = api.get(f"/v1/jobs/{a['id']}/result").json()
    rb = api.get(f"/v1/jobs/{b['id']}/result").json()
    assert _segments(ra) == _segments(rb) and ra["video"] == rb["video"]
    assert ra["classes"] and [c["score"] for c in ra["classes"]] == \
        [c["score"] for c in rb["classes"]]
    assert "s3cr3t" not in json.dumps(b)
    # the worker's scratch copy is gone
    assert not any((stack.tmp / "data" / "scratch").glob(f"{b['id']}*"))


def test_json_body_params_and_idempotency(stack: Stack, api: httpx.Client,
                                          small_video: Path) -> None:
    url = stack.files.add("/clips/json.mp4", body=small_video.read_bytes())
    body = {"source_url": url, "min_score": 0.0, "tag": "from json"}
    hdr = {"Idempotency-Key": "src-key-1"}
    first = api.post("/v1/jobs", json=body, headers=hdr)
    assert first.status_code == 202, first.text
    again = api.post("/v1/jobs", json=body, headers=hdr)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    other = api.post("/v1/jobs", json={**body, "source_url": url + "?v=2"}, headers=hdr)
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    job = wait_terminal(api, first.json()["id"])
    assert job["status"] == "succeeded" and job["tag"] == "from json"
    assert job["params"]["min_score"] == 0.0


def test_resume_through_the_stack(stack: Stack, api: httpx.Client, small_video: Path) -> None:
    video = small_video.read_bytes()
    url = stack.files.add("/clips/flaky.mp4", body=video, drop_after=len(video) // 3, drops=2)
    job = wait_terminal(api, api.post("/v1/jobs", data={"source_url": url}).json()["id"])
    assert job["status"] == "succeeded", (job, stack.logs())
    ranges = [r["headers"].get("Range") for r in stack.files.requests
              if r["path"] == "/clips/flaky.mp4"]
    assert ranges[0] is None and len(ranges) == 3, ranges
    starts = [int(x.removeprefix("bytes=").rstrip("-")) for x in ranges[1:]]
    third = len(video) // 3
    assert 0 < starts[0] <= third and starts[0] < starts[1] <= starts[0] + third, ranges


@pytest.mark.parametrize(("name", "item", "code"), [
    ("missing", None, "source_not_found"),
    ("forbidden", {"status": 403}, "source_forbidden"),
    ("big", {"body": os.urandom(MAX_BYTES + 1)}, "source_too_large"),
    ("noise", {"body": os.urandom(50_000)}, "source_not_a_video"),
    ("page", {"body": b"<html>login</html>", "ctype": "text/html"}, "source_not_a_video"),
    ("stall", {"body": b"x" * 1000, "stall_s": 30}, "source_timeout"),
])
def test_worker_side_failures(stack: Stack, api: httpx.Client, name: str, item: dict | None,
                              code: str) -> None:
    path = f"/bad/{name}.mp4"
    url = stack.files.add(path, **item) if item else stack.files.url(path)
    r = api.post("/v1/jobs", data={"source_url": url})
    assert r.status_code == 202, r.text
    job = wait_terminal(api, r.json()["id"])
    assert job["status"] == "failed" and job["error"]["code"] == code, job
    assert str(stack.tmp) not in job["error"]["message"]


def test_unreachable_port(stack: Stack, api: httpx.Client) -> None:
    from hamnet_procs import free_port

    r = api.post("/v1/jobs", data={"source_url": f"http://127.0.0.1:{free_port()}/a.mp4"})
    job = wait_terminal(api, r.json()["id"])
    assert job["error"]["code"] == "source_unreachable", job


@pytest.mark.parametrize(("form", "code"), [
    ({"source_url": "ftp://127.0.0.1/a.mp4"}, "source_scheme_not_allowed"),
    ({"source_url": "/etc/passwd"}, "invalid_source_url"),
    ({"source_url": "s3://elsewhere/a.mp4"}, "source_bucket_not_allowed"),
    ({"source_url": "s3://videos/"}, "invalid_source_url"),
    ({"source_url": "http://127.0.0.1/a.mp4", "output_uri": "s3://other/"},
     "output_bucket_not_allowed"),
    ({"source_url": "http://127.0.0.1/a.mp4", "output_uri": "same"}, "invalid_output_uri"),
    ({"tag": "no video"}, "missing_file"),
])
def test_submission_refusals(api: httpx.Client, form: dict, code: str) -> None:
    r = api.post("/v1/jobs", data=form)
    assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text
    r = api.post("/v1/jobs", json=form)
    assert r.status_code == 422 and r.json()["error"]["code"] == code, r.text


def test_file_and_source_together(api: httpx.Client, small_video: Path) -> None:
    r = api.post("/v1/jobs", data={"source_url": "http://127.0.0.1/a.mp4"},
                 files={"file": ("a.mp4", small_video.read_bytes(), "video/mp4")})
    assert r.status_code == 422 and r.json()["error"]["code"] == "conflicting_source"
    r = api.post("/v1/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"


def test_loopback_refused_without_allow_private(stack: Stack, small_video: Path) -> None:
    _, url = stack.gateway({"HAMNET_SOURCE_ALLOW_PRIVATE": "false"}, "strict-gateway")
    src = stack.files.add("/clips/strict.mp4", body=small_video.read_bytes())
    n = len(stack.files.requests)
    with httpx.Client(base_url=url, timeout=30) as api:
        for u in (src, "http://localhost:9/a.mp4", "http://10.0.0.1/a.mp4",
                  "http://[::ffff:127.0.0.1]/a.mp4"):
            r = api.post("/v1/jobs", data={"source_url": u})
            assert r.status_code == 422, r.text
            assert r.json()["error"]["code"] == "source_address_forbidden"
    assert len(stack.files.requests) == n  # the gateway never contacted the source


def test_s3_source_and_output(stack: Stack, api: httpx.Client, small_video: Path) -> None:
    s3 = stack.s3()
    s3.put_object(Bucket="videos", Key="in/clip.mp4", Body=small_video.read_bytes())
    r = api.post("/v1/jobs", json={"source_url": "s3://videos/in/clip.mp4",
                                   "output_uri": "s3://results/out/"})
    assert r.status_code == 202, r.text
    assert r.json()["output"] == {"uri": "s3://results/out/clip.mp4.hamnet.json",
                                  "written": None, "written_at": None, "error": None}
    job = wait_terminal(api, r.json()["id"])
    assert job["status"] == "succeeded", (job, stack.logs())
    assert job["source"] == {"uri": "s3://videos/in/clip.mp4", "kind": "s3"}
    assert job["output"]["written"] is True and job["output"]["written_at"]
    obj = json.loads(s3.get_object(Bucket="results", Key="out/clip.mp4.hamnet.json")["Body"]
                     .read())
    result = api.get(f"/v1/jobs/{job['id']}/result").json()
    assert obj["id"] == job["id"] and obj["source"] == "s3://videos/in/clip.mp4"
    assert obj["segments"] == result["segments"]

    missing = api.post("/v1/jobs", data={"source_url": "s3://videos/in/nothing.mp4"})
    job = wait_terminal(api, missing.json()["id"])
    assert job["error"]["code"] == "source_not_found", job


def test_failed_output_write_keeps_the_result(stack: Stack, api: httpx.Client,
                                              small_video: Path) -> None:
    url = stack.files.add("/clips/out.mp4", body=small_video.read_bytes())
    r = api.post("/v1/jobs", data={"source_url": url, "output_uri": "s3://missing-bucket/x/"})
    job = wait_terminal(api, r.json()["id"])
    assert job["status"] == "succeeded", job
    assert job["output"]["written"] is False and "NoSuchBucket" in job["output"]["error"]
    assert api.get(f"/v1/jobs/{job['id']}/result").status_code == 200


def test_upload_with_output_uri(stack: Stack, api: httpx.Client, small_video: Path) -> None:
    r = api.post("/v1/jobs", data={"output_uri": "s3://results/uploads/"},
                 files={"file": ("mine.mp4", small_video.read_bytes(), "video/mp4")})
    assert r.status_code == 202, r.text
    job = wait_terminal(api, r.json()["id"])
    assert job["output"]["written"] is True, job
    obj = stack.s3().get_object(Bucket="results", Key="uploads/mine.mp4.hamnet.json")
    assert json.loads(obj["Body"].read())["id"] == job["id"]


def test_worker_killed_mid_download(stack: Stack, api: httpx.Client, small_video: Path) -> None:
    """The whole worker is killed while the job's download is in progress: the lease expires,
    a new worker requeues the job and downloads again into its own scratch dir. One result,
    two attempts, nothing left behind. (Last in the module: it replaces the worker.)"""
    from hamnet_procs import start_worker, wait_for, wait_worker_ready

    video = small_video.read_bytes()
    path = "/clips/killed.mp4"
    url = stack.files.add(path, body=video, stall_s=60, stall_gets=1)
    job_id = api.post("/v1/jobs", data={"source_url": url}).json()["id"]
    wait_for(lambda: any(r["path"] == path for r in stack.files.requests), 60,
             "the download to start", stack.worker)
    assert api.get(f"/v1/jobs/{job_id}").json()["status"] == "running"
    old = stack.worker
    old.kill9()
    scratch = stack.tmp / "data" / "scratch" / job_id
    new = start_worker(stack.env, stack.tmp / "worker2.log")
    stack.procs.append(new)
    stack.worker = new
    wait_worker_ready(stack.redis.client(), new)
    job = wait_terminal(api, job_id)
    assert job["status"] == "succeeded", (job, stack.logs())
    assert job["attempts"] == 2 and job["requeues"] == 1, job
    gets = [r for r in stack.files.requests if r["path"] == path]
    assert len(gets) == 2 and "Range" not in gets[1]["headers"]  # a fresh download
    assert api.get(f"/v1/jobs/{job_id}/result").status_code == 200
    assert not scratch.exists()
