"""The HTTP contract against a live gateway: validation and error codes, limits, API-key
isolation, idempotency, cancellation, headers, streaming-upload clean-up.

Gateway A (session, no keys, with a worker) is shared with the integration tests. Gateway B
(this module) has API keys, small limits and its own Redis database with no worker, so its jobs
stay queued and the tests can look at them without racing a worker.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from hamnet_procs import start_gateway, wait_for

pytestmark = pytest.mark.service

KEYS = {"alpha": "key-alpha-0123456789", "beta": "key-beta-0123456789",
        "gamma": "key-gamma-0123456789"}


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture(scope="module")
def gw_b(service_env, redis_server, tmp_path_factory):
    data = tmp_path_factory.mktemp("data-b")
    env = dict(service_env)
    env.update(
        HAMNET_REDIS_URL=redis_server.url[:-1] + "1",
        HAMNET_DATA_DIR=str(data),
        HAMNET_API_KEYS=",".join(KEYS.values()),
        HAMNET_MAX_UPLOAD_BYTES=str(300_000),
        HAMNET_MAX_DURATION_S="2.5",
        HAMNET_RATE_LIMIT_PER_MINUTE="8",
        HAMNET_MAX_FIELD_BYTES="4096",
    )
    proc, url = start_gateway(env, tmp_path_factory.mktemp("logs-b") / "gateway-b.log")
    with httpx.Client(base_url=url, timeout=60) as client:
        client.data_dir = data  # type: ignore[attr-defined]
        yield client
    proc.stop()


@pytest.fixture(scope="module")
def short_video(tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("v") / "short.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i",
                    "testsrc=size=64x48:rate=10:duration=2", "-pix_fmt", "yuv420p",
                    "-y", str(out)], check=True)
    return out.read_bytes()


def post(client: httpx.Client, content: bytes, name: str = "v.mp4", headers=None, **fields):
    return client.post("/v1/jobs", files={"file": (name, content, "video/mp4")},
                       data={k: str(v) for k, v in fields.items()}, headers=headers or {})


def err(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]["code"]


# ---------------------------------------------------------------------------- gateway A


def test_health(api: httpx.Client, worker) -> None:
    assert api.get("/livez").json()["status"] == "ok"
    wait_for(lambda: api.get("/readyz").status_code == 200, 30, "readyz")
    checks = api.get("/readyz").json()["checks"]
    assert checks["redis"] == "ok" and checks["workers_with_model"] >= 1


def test_upload_accepted(api: httpx.Client, small_video: Path, redis_server) -> None:
    r = post(api, small_video.read_bytes(), tag="t1", min_score="0.1")
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] in ("queued", "running", "succeeded") and job["tag"] == "t1"
    assert job["video"]["width"] == 96 and job["params"]["min_score"] == 0.1
    stored = json.loads(redis_server.client().get(f"hamnet:job:{job['id']}"))
    assert stored["id"] == job["id"] and "owner" in stored
    assert "owner" not in job and "sha256" not in job


@pytest.mark.parametrize(("content", "name", "status", "code"), [
    (b"", "empty.mp4", 422, "empty_file"),
    (b"hello, this is text, not a video" * 10, "a.mp4", 415, "not_a_video"),
    (b"PK\x03\x04" + os.urandom(2000), "zip.mp4", 415, "not_a_video"),
    (b"\x89PNG\r\n\x1a\n" + os.urandom(500), "img.mp4", None, None),
    (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00isomiso2avc1mp41" + b"\x00" * 64, "trunc.mp4",
     None, None),
])
def test_bad_content(api: httpx.Client, content, name, status, code) -> None:
    r = post(api, content, name=name)
    if status is None:  # truncated MP4: some 4xx with a video code, never a 5xx
        assert 400 <= r.status_code < 500 and err(r)
    else:
        assert r.status_code == status, r.text
        assert err(r) == code


def test_truncated_real_video(api: httpx.Client, small_video: Path) -> None:
    data = small_video.read_bytes()
    r = post(api, data[: len(data) // 3])
    assert r.status_code in (202, 415, 422), r.text  # a truncated MP4 may still decode
    if r.status_code != 202:
        assert err(r) in ("not_a_video", "corrupt_video", "no_video_stream", "invalid_video")


@pytest.mark.parametrize("ext", ["png", "jpg"])
def test_still_image(api: httpx.Client, tmp_path: Path, ext: str) -> None:
    out = tmp_path / f"i.{ext}"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48",
                    "-frames:v", "1", "-y", str(out)], check=True)
    r = post(api, out.read_bytes(), name="i.mp4")
    assert r.status_code == 415 and err(r) == "not_a_video"


def test_single_frame_is_too_short(api: httpx.Client, tmp_path: Path) -> None:
    out = tmp_path / "one.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=10",
                    "-frames:v", "1", "-pix_fmt", "yuv420p", "-y", str(out)], check=True)
    r = post(api, out.read_bytes())
    assert r.status_code == 422 and err(r) == "video_too_short"


def test_audio_only(api: httpx.Client, tmp_path: Path) -> None:
    out = tmp_path / "a.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1",
                    "-y", str(out)], check=True)
    r = post(api, out.read_bytes(), name="a.mp4")
    assert r.status_code == 415 and err(r) == "no_video_stream"


@pytest.mark.parametrize(("fields", "code"), [
    ({"min_score": "2"}, "invalid_parameter"),
    ({"min_score": "nan"}, "invalid_parameter"),
    ({"min_score": "abc"}, "invalid_parameter"),
    ({"min_score": "-0.1"}, "invalid_parameter"),
    ({"min_raw_score": "nan"}, "invalid_parameter"),
    ({"min_raw_score": "inf"}, "invalid_parameter"),
    ({"min_raw_score": "abc"}, "invalid_parameter"),
    ({"include": "no-such-label"}, "unknown_label"),
    ({"colour": "red"}, "unknown_field"),
    ({"callback_url": "http://127.0.0.1:9/x"}, "invalid_callback_url"),
    ({"callback_url": "http://169.254.169.254/latest"}, "invalid_callback_url"),
    ({"callback_url": "file:///etc/passwd"}, "invalid_callback_url"),
    ({"tag": "x" * 201}, "invalid_parameter"),
])
def test_invalid_parameters(api: httpx.Client, small_video: Path, fields, code) -> None:
    r = post(api, small_video.read_bytes(), **fields)
    assert r.status_code == 422, r.text
    assert err(r) == code


def test_huge_form_field(api: httpx.Client, small_video: Path) -> None:
    r = post(api, small_video.read_bytes(), tag="x" * 20_000)
    assert r.status_code == 413 and err(r) == "field_too_large"


def test_not_multipart(api: httpx.Client, small_video: Path) -> None:
    r = api.post("/v1/jobs", content=small_video.read_bytes(),
                 headers={"Content-Type": "video/mp4"})
    assert r.status_code == 415 and err(r) == "unsupported_media_type"
    r = api.post("/v1/jobs", content=small_video.read_bytes())
    assert r.status_code == 415


def test_malformed_multipart(api: httpx.Client) -> None:
    r = api.post("/v1/jobs", content=b"--xyz\r\nnot a header line\r\n\r\n",
                 headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 400 and err(r) == "malformed_multipart"
    r = api.post("/v1/jobs", content=b"garbage", headers={
        "Content-Type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 400
    r = post(api, b"")  # no bytes at all in the file part
    assert r.status_code == 422
    r = api.post("/v1/jobs", data={"tag": "x"}, files={"other": ("a", b"b")})
    assert r.status_code == 422 and err(r) == "missing_file"


def test_chunked_upload_without_length(api: httpx.Client, small_video: Path) -> None:
    body = small_video.read_bytes()
    boundary = "hamnetboundary"
    payload = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
               f"filename=\"c.mp4\"\r\nContent-Type: video/mp4\r\n\r\n").encode() + body + \
        f"\r\n--{boundary}--\r\n".encode()

    def gen():
        for i in range(0, len(payload), 4096):
            yield payload[i:i + 4096]

    r = api.post("/v1/jobs", content=gen(),
                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 202, r.text


def test_path_traversal_filename(api: httpx.Client, small_video: Path, data_dir: Path) -> None:
    r = post(api, small_video.read_bytes(), name="../../../../tmp/évil\x07名.mp4")
    assert r.status_code == 202, r.text
    name = r.json()["filename"]
    assert "/" not in name and ".." not in name and name.endswith("名.mp4")
    assert not Path("/tmp/évil\x07名.mp4").exists()


def test_unknown_and_malformed_ids(api: httpx.Client) -> None:
    r = api.get("/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA")
    assert r.status_code == 404 and err(r) == "job_not_found"
    r = api.get("/v1/jobs/bad..id")
    assert r.status_code in (404, 422)
    assert api.delete("/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA").status_code == 404
    assert api.get("/v1/nothing-here").status_code == 404


def test_idempotency_key(api: httpx.Client, small_video: Path, short_video: bytes) -> None:
    key = {"Idempotency-Key": f"k-{time.time()}"}
    first = post(api, small_video.read_bytes(), headers=key)
    again = post(api, small_video.read_bytes(), headers=key)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotent-replayed"] == "true"
    other = post(api, short_video, headers=key)
    assert other.status_code == 409 and err(other) == "idempotency_key_reused"
    # the same video with other parameters is another request, not a replay
    options = post(api, small_video.read_bytes(), headers=key, min_score=0.5)
    assert options.status_code == 409 and err(options) == "idempotency_key_reused"


def test_security_headers(api: httpx.Client) -> None:
    for r in (api.get("/livez"), api.get("/v1/jobs/AAAAAAAAAAAAAAAAAAAAAA"), api.get("/")):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert api.get("/v1/jobs").headers["cache-control"] == "no-store"
    assert "server" not in api.get("/livez").headers


def test_models_and_metrics(api: httpx.Client, worker) -> None:
    m = api.get("/v1/models").json()["models"][0]
    assert m["classes"] and len(m["checksum"]) == 64 and m["backbone"]["name"]
    text = api.get("/metrics").text
    for name in ("hamnet_jobs{", "hamnet_queue_depth", "hamnet_stage_duration_seconds",
                 "hamnet_video_seconds_processed_total", "hamnet_http_request_duration"):
        assert name in text


def test_gateway_does_not_import_heavy_runtimes() -> None:
    """Nor the worker package, nor PyAV/OpenCV: untrusted bytes are decoded in a child."""
    code = ("import sys, hamnet_service.app, hamnet_service.cli;"
            "print(sorted(m for m in ('torch', 'onnxruntime', 'hamnet_worker', 'av', 'cv2') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_client_disconnect_removes_partial(gateway: str, data_dir: Path) -> None:
    host, port = gateway.removeprefix("http://").split(":")
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"x.mp4\"\r\n\r\n").encode()
    with socket.create_connection((host, int(port))) as s:
        s.sendall((f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; "
                   f"boundary={boundary}\r\nContent-Length: 10000000\r\n\r\n").encode())
        s.sendall(head + b"\x00" * 200_000)
        wait_for(lambda: any((data_dir / "incoming").glob("*.part")), 10, "partial file")
    wait_for(lambda: not any((data_dir / "incoming").glob("*.part")), 15, "partial removed")


def test_min_raw_score_is_a_job_parameter(api: httpx.Client, small_video: Path) -> None:
    """``min_raw_score`` (any finite number: the raw score is unbounded) travels with the job
    next to ``min_score`` (a probability), and the upload schema documents both."""
    r = post(api, small_video.read_bytes(), min_raw_score="-1.5", min_score="0.25")
    assert r.status_code == 202, r.text
    assert r.json()["params"]["min_raw_score"] == -1.5
    assert r.json()["params"]["min_score"] == 0.25
    r = post(api, small_video.read_bytes(), min_raw_score="7")
    assert r.status_code == 202 and r.json()["params"]["min_raw_score"] == 7.0, r.text
    spec = api.get("/openapi.json").json()
    form = spec["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["multipart/form-data"]
    props = form["schema"]["properties"]
    assert "confidence" in props["min_score"]["description"]
    assert props["min_score"]["minimum"] == 0 and props["min_score"]["maximum"] == 1
    assert props["min_raw_score"]["type"] == "number" and "minimum" not in props["min_raw_score"]


def _manifest(bundle_dir: Path) -> dict:
    return json.loads((bundle_dir / "manifest.json").read_text())


def test_models_show_the_postprocessing_in_effect(api: httpx.Client, bundle_dir: Path) -> None:
    """The bundle's profile decides what its flags mean: the answer shows every flag with the
    value the worker applies, not the value written in the manifest."""
    m = api.get("/v1/models").json()["models"][0]
    asked = _manifest(bundle_dir)["postprocess"]
    pp = m["postprocess"]
    assert pp["profile"] == asked["profile"]
    flags = ("fix_snippet0", "fix_symmetric_outer", "fix_nms_seconds")
    if asked["profile"] == "official":
        expected = {**dict.fromkeys(flags, False), "nms_score_floor": None,
                    "max_proposals_per_class": None}
    elif asked["profile"] == "fixed":  # the mini bundle: flags written false, all in effect
        expected = {**dict.fromkeys(flags, True),
                    "nms_score_floor": asked["nms_score_floor"] or 1e-3,
                    "max_proposals_per_class": asked["max_proposals_per_class"] or 100}
    else:
        expected = {k: asked[k] for k in (*flags, "nms_score_floor", "max_proposals_per_class")}
    assert {k: pp[k] for k in expected} == expected
    for k in ("rat", "class_thresh", "gamma_oic", "oic_lambda", "nms_sigma", "fps"):
        assert pp[k] == asked[k], k


def test_models_show_the_card_and_say_it_is_the_demo(api: httpx.Client,
                                                     bundle_dir: Path) -> None:
    m = api.get("/v1/models").json()["models"][0]
    card = _manifest(bundle_dir).get("card")
    assert card, "the mini bundle has no model card"
    got = m["card"]
    for key in ("title", "summary", "synthetic", "intended_use", "limitations"):
        assert got[key] == card[key], key
    assert [c["name"] for c in got["classes"]] == [c["name"] for c in card["classes"]]
    assert got["metrics"] == card["metrics"]
    # The mini bundle is the synthetic demo: said plainly, with the classes it knows.
    assert card["synthetic"] is True and m["synthetic"] is True
    assert m["notice"].startswith("Demo model")
    assert "will not recognise real-world actions" in m["notice"]
    assert all(c["name"] in m["notice"] for c in card["classes"])


@pytest.fixture(scope="module")
def rendered_video(tmp_path_factory, bundle_dir: Path) -> Path:
    """A video rendered like the bundle's training videos, from a seed it never saw."""
    from hamnet.bundle import load_bundle
    from hamnet.demo.synth import SceneConfig, make_plan, render_frames, write_mp4

    scene = dict((load_bundle(bundle_dir).training or {}).get("scene") or {})
    known = set(SceneConfig.__dataclass_fields__)
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in scene.items() if k in known}
    kw.update(instances=(2, 2), classes_per_video=(1, 1))
    plan = make_plan(4242, 0, SceneConfig(**kw))
    out = tmp_path_factory.mktemp("rendered") / "rendered.mp4"
    write_mp4(out, render_frames(plan), plan.fps)
    return out


def _run(api: httpx.Client, video: Path, **fields) -> dict:
    r = post(api, video.read_bytes(), name=video.name, **fields)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    deadline = time.monotonic() + 300
    while (job := api.get(f"/v1/jobs/{job_id}").json())["status"] not in (
            "succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
    assert job["status"] == "succeeded", job
    return api.get(f"/v1/jobs/{job_id}/result").json()


def test_result_confidence_domain_and_filters(api: httpx.Client, worker, rendered_video: Path,
                                              bundle_dir: Path) -> None:
    """Each segment has a calibrated ``confidence`` in [0, 1] next to its raw ``score``; the
    result says whether the video is in the model's domain and carries the compact card;
    ``min_score`` filters on the confidence and ``min_raw_score`` on the raw score."""
    full = _run(api, rendered_video)
    segs = full["segments"]
    assert len(segs) >= 2, segs
    for seg in segs:
        assert seg["confidence"] is not None and 0.0 <= seg["confidence"] <= 1.0, seg
    domain = full["domain"]
    assert set(domain) == {"in_distribution", "score", "threshold"}
    assert domain["in_distribution"] is True, domain  # rendered like the training videos
    card = _manifest(bundle_dir)["card"]
    assert full["model"]["card"]["title"] == card["title"]
    assert full["model"]["card"]["synthetic"] is True

    def key(s: dict) -> tuple:
        return (s["label"], round(s["start"], 6), round(s["end"], 6))

    # A cut between two confidences keeps some segments and drops others (a small bundle's
    # calibration may give every segment the same confidence: then just above it drops all).
    conf = sorted({s["confidence"] for s in segs})
    cut = conf[len(conf) // 2] if len(conf) > 1 else min(1.0, conf[0] + 0.01)
    kept = _run(api, rendered_video, min_score=cut)["segments"]
    assert sorted(map(key, kept)) == sorted(key(s) for s in segs if s["confidence"] >= cut)
    assert len(kept) < len(segs)

    raw = sorted({s["score"] for s in segs})
    cut = raw[len(raw) // 2]
    kept = _run(api, rendered_video, min_raw_score=cut)["segments"]
    assert sorted(map(key, kept)) == sorted(key(s) for s in segs if s["score"] >= cut)
    assert 0 < len(kept) < len(segs)


# ---------------------------------------------------------------------------- gateway B


def test_auth_required(gw_b: httpx.Client, short_video: bytes) -> None:
    r = post(gw_b, short_video)
    assert r.status_code == 401 and err(r) == "unauthorized"
    assert r.headers["www-authenticate"] == "Bearer"
    assert gw_b.get("/v1/jobs", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert gw_b.get("/v1/jobs", headers={"Authorization": KEYS["alpha"]}).status_code == 401
    assert gw_b.get("/v1/models").status_code == 401
    assert gw_b.get("/livez").status_code == 200


def test_key_isolation(gw_b: httpx.Client, short_video: bytes) -> None:
    r = post(gw_b, short_video, headers=auth("alpha"))
    assert r.status_code == 202, r.text
    jid = r.json()["id"]
    assert gw_b.get(f"/v1/jobs/{jid}", headers=auth("alpha")).status_code == 200
    for call in (gw_b.get, gw_b.delete):
        r = call(f"/v1/jobs/{jid}", headers=auth("beta"))
        assert r.status_code == 404 and err(r) == "job_not_found"
    assert gw_b.get(f"/v1/jobs/{jid}/result", headers=auth("beta")).status_code == 404
    assert jid not in [j["id"] for j in gw_b.get("/v1/jobs", headers=auth("beta")).json()["jobs"]]
    assert jid in [j["id"] for j in gw_b.get("/v1/jobs", headers=auth("alpha")).json()["jobs"]]
    # Redis holds only a hash of the key, never the key itself.
    assert all(k not in str(gw_b.get(f"/v1/jobs/{jid}", headers=auth("alpha")).json())
               for k in KEYS.values())


def test_result_of_unfinished_job_and_cancel(gw_b: httpx.Client, short_video: bytes) -> None:
    jid = post(gw_b, short_video, headers=auth("alpha")).json()["id"]
    r = gw_b.get(f"/v1/jobs/{jid}/result", headers=auth("alpha"))
    assert r.status_code == 409 and err(r) == "job_queued"
    assert (gw_b.data_dir / "uploads" / f"{jid}.video").exists()
    assert gw_b.delete(f"/v1/jobs/{jid}", headers=auth("alpha")).status_code == 204
    job = gw_b.get(f"/v1/jobs/{jid}", headers=auth("alpha")).json()
    assert job["status"] == "cancelled"
    assert not (gw_b.data_dir / "uploads" / f"{jid}.video").exists()
    assert gw_b.delete(f"/v1/jobs/{jid}", headers=auth("alpha")).status_code == 204
    assert gw_b.get(f"/v1/jobs/{jid}", headers=auth("alpha")).status_code == 404


def test_pagination(gw_b: httpx.Client, short_video: bytes) -> None:
    for _ in range(3):
        assert post(gw_b, short_video, headers=auth("beta")).status_code == 202
    page = gw_b.get("/v1/jobs?limit=2", headers=auth("beta")).json()
    assert len(page["jobs"]) == 2 and page["total"] >= 3 and page["next_offset"] == 2
    rest = gw_b.get("/v1/jobs?limit=2&offset=2", headers=auth("beta")).json()
    assert {j["id"] for j in page["jobs"]}.isdisjoint(j["id"] for j in rest["jobs"])
    assert gw_b.get("/v1/jobs?limit=0", headers=auth("beta")).status_code == 422


def test_size_limit(gw_b: httpx.Client) -> None:
    big = os.urandom(400_000)
    r = post(gw_b, big, headers=auth("alpha"))
    assert r.status_code == 413 and err(r) == "file_too_large"

    def gen():  # chunked: no Content-Length to reject early, so the running count must
        yield b"--zz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n\r\n"
        for _ in range(50):
            yield b"\x00" * 10_000

    r = gw_b.post("/v1/jobs", content=gen(), headers={
        **auth("alpha"), "Content-Type": "multipart/form-data; boundary=zz"})
    assert r.status_code == 413 and err(r) == "file_too_large"
    time.sleep(0.2)
    assert not list((gw_b.data_dir / "incoming").glob("*"))


def test_duration_limit(gw_b: httpx.Client, small_video: Path) -> None:
    r = post(gw_b, small_video.read_bytes(), headers=auth("alpha"))  # 3 s > 2.5 s
    assert r.status_code == 422 and err(r) == "video_too_long"


def test_rate_limit(gw_b: httpx.Client, short_video: bytes) -> None:
    # a per-minute window: keep posting (a loaded machine may straddle a window boundary)
    codes = []
    for _ in range(24):
        codes.append(post(gw_b, short_video, headers=auth("gamma")))
        if codes[-1].status_code == 429:
            break
    limited = [r for r in codes if r.status_code == 429]
    assert limited, [r.status_code for r in codes]
    assert err(limited[0]) == "rate_limited" and int(limited[0].headers["retry-after"]) >= 1


def test_queue_full(service_env, redis_server, tmp_path_factory, short_video: bytes) -> None:
    env = dict(service_env)
    env.update(HAMNET_REDIS_URL=redis_server.url[:-1] + "2", HAMNET_MAX_QUEUE="2",
               HAMNET_DATA_DIR=str(tmp_path_factory.mktemp("data-c")))
    proc, url = start_gateway(env, tmp_path_factory.mktemp("logs-c") / "gateway-c.log")
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            assert [post(c, short_video).status_code for _ in range(2)] == [202, 202]
            r = post(c, short_video)
            assert r.status_code == 429 and err(r) == "queue_full"
            assert int(r.headers["retry-after"]) > 0
    finally:
        proc.stop()
