"""Hardening of the gateway, end to end over real processes: a file sent under the wrong form
field, anonymous mode (no listing, no webhook secret, the id as capability), ``hamnet serve``
refusing a public address without keys, the duration limit on a raw H.264 stream (no container
duration), ``/readyz`` hiding worker error texts from strangers, 500 answers that name a
request id, and signed completion callbacks with their recorded delivery outcome.

Gateways and workers with other settings than the session's run on their own Redis database
(one per stack) of the session's redis-server, so their queues never mix with the session
worker's. All traffic goes to 127.0.0.1.
"""

from __future__ import annotations

import http.server
import json
import logging
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis as redis_lib
from hamnet_procs import (
    ROOT,
    Proc,
    free_port,
    hamnet_argv,
    start_gateway,
    start_worker,
    wait_for,
    wait_worker_ready,
)

pytestmark = pytest.mark.service

KEY = "hardening-key-k1-0123456789"
RID = re.compile(r"^[0-9a-f]{32}$")


def err(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"}, body
    return body["error"]["code"]


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True,
                   timeout=120, cwd=ROOT)


def _env(service_env: dict[str, str], **kw: str) -> dict[str, str]:
    env = {k: v for k, v in service_env.items() if k != "HAMNET_HOST"}
    env.update(kw)
    return env


# ------------------------------------------------------------------------------ 1. wrong field


@pytest.fixture(scope="module")
def big_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real H.264 MP4 of a few MB (lossless noise does not compress)."""
    out = tmp_path_factory.mktemp("big") / "clip.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=208x160:rate=25:duration=3,noise=alls=20:allf=t",
           "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0",
           str(out))
    return out


def _incoming(data_dir: Path) -> list[str]:
    d = data_dir / "incoming"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def test_file_in_wrong_field(api: httpx.Client, small_video: Path, big_video: Path,
                             data_dir: Path) -> None:
    size = big_video.stat().st_size
    assert size > 2_000_000 and size > 100 * 8192, size  # far beyond HAMNET_MAX_FIELD_BYTES
    before = _incoming(data_dir)
    for video in (small_video, big_video):
        r = api.post("/v1/jobs", files={"video": ("clip.mp4", video.read_bytes(),
                                                  "video/mp4")})
        assert r.status_code == 422, (video.name, r.status_code, r.text)
        assert err(r) == "missing_file"
        msg = r.json()["error"]["message"]
        assert "`file`" in msg and "`video`" in msg, msg
    time.sleep(0.2)
    assert _incoming(data_dir) == before


def test_wrong_field_answered_before_its_data(gateway: str, data_dir: Path) -> None:
    """The misplaced part is refused once its headers are parsed: the gateway answers while
    the client is still sending (here: 1 KB of a part whose body never ends), instead of
    buffering it as a text field until the idle timeout."""
    host, port = gateway.split("//")[1].split(":")
    before = _incoming(data_dir)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall((f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nContent-Type: "
                   "multipart/form-data; boundary=hb\r\nContent-Length: 3000000\r\n\r\n"
                   "--hb\r\nContent-Disposition: form-data; name=\"video\"; "
                   "filename=\"clip.mp4\"\r\nContent-Type: video/mp4\r\n\r\n").encode()
                  + b"\x00" * 1024)
        head = b""
        try:
            while b"}}" not in head and len(head) < 65536:
                part = s.recv(4096)
                if not part:
                    break
                head += part
        except TimeoutError:
            pass
    text = head.decode(errors="replace")
    assert text.startswith("HTTP/1.1 422"), text
    assert "missing_file" in text and "`video`" in text, text
    time.sleep(0.2)
    assert _incoming(data_dir) == before


# ------------------------------------------------------------------------------ 2. anonymous


def test_anonymous_mode(api: httpx.Client, small_video: Path) -> None:
    r = api.post("/v1/jobs", files={"file": ("s.mp4", small_video.read_bytes(), "video/mp4")})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    r = api.get("/v1/jobs")
    assert r.status_code == 403 and err(r) == "listing_requires_api_key", r.text
    r = api.get(f"/v1/jobs/{job_id}")  # the id is the capability
    assert r.status_code == 200 and r.json()["id"] == job_id, r.text
    r = api.get("/v1/webhook-secret")
    assert r.status_code == 403, r.text
    assert "secret" not in r.json()
    assert api.delete(f"/v1/jobs/{job_id}").status_code == 204


# ------------------------------------------------------------------------------ 3. hamnet serve


def _serve(env: dict[str, str], port: int, log: Path, *host: str) -> Proc:
    argv = hamnet_argv("serve", *(("--host", host[0]) if host else ()), "--port", str(port),
                       "--log-level", "warning")
    return Proc("serve", argv, env, log).start()


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False


def test_serve_refuses_public_address_without_keys(service_env, tmp_path: Path) -> None:
    """``hamnet serve --host 0.0.0.0`` without keys exits 2 at once and binds nothing; keys,
    an explicit HAMNET_ALLOW_ANONYMOUS_PUBLIC=true, or the loopback default let it start."""
    env = _env(service_env)
    env.pop("HAMNET_ALLOW_ANONYMOUS_PUBLIC", None)
    env.pop("HAMNET_API_KEYS", None)
    port = free_port()
    proc = _serve(env, port, tmp_path / "refused.log", "0.0.0.0")
    try:
        rc = proc.p.wait(30)
    finally:
        proc.stop()
    out = proc.tail()
    assert rc == 2, out
    assert "HAMNET_API_KEYS" in out and "HAMNET_ALLOW_ANONYMOUS_PUBLIC" in out, out
    assert "Uvicorn running" not in out and "Started server" not in out, out
    assert not _port_in_use(port)

    for case, extra, host in (
        ("anonymous public allowed", {"HAMNET_ALLOW_ANONYMOUS_PUBLIC": "true"}, ("0.0.0.0",)),
        ("API keys", {"HAMNET_API_KEYS": "k"}, ("0.0.0.0",)),
        ("loopback default, no keys", {}, ()),
    ):
        port = free_port()
        proc = _serve(dict(env, **extra), port, tmp_path / "serve.log", *host)
        try:
            wait_for(lambda port=port: httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2)
                     .status_code == 200, 60, f"hamnet serve ({case})", proc)
        finally:
            proc.stop()
        assert not proc.alive()


# ------------------------------------------------------------------------------ 4. raw H.264


@pytest.fixture(scope="module")
def raw_h264(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("h264")
    out = {}
    for name, seconds in (("long", 6), ("short", 2)):
        out[name] = d / f"{name}.h264"
        ffmpeg("-f", "lavfi", "-i", f"testsrc=size=96x64:rate=25:duration={seconds}",
               "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast", "-f", "h264",
               str(out[name]))
    return out


def test_raw_h264_duration_limit(service_env, worker, raw_h264, tmp_path: Path) -> None:
    import av

    with av.open(str(raw_h264["long"])) as c:  # what makes this case: no container duration
        assert c.duration is None and c.streams.video[0].duration is None
    proc, url = start_gateway(_env(service_env, HAMNET_MAX_DURATION_S="3"),
                              tmp_path / "gateway.log")
    try:
        with httpx.Client(base_url=url, timeout=60) as c:
            r = c.post("/v1/jobs", files={"file": ("long.h264", raw_h264["long"].read_bytes(),
                                                   "video/h264")})
            assert r.status_code == 422, r.text
            assert err(r) == "video_too_long"
            r = c.post("/v1/jobs", files={"file": ("short.h264",
                                                   raw_h264["short"].read_bytes(),
                                                   "video/h264")})
            assert r.status_code == 202, r.text
            c.delete(f"/v1/jobs/{r.json()['id']}")
    finally:
        proc.stop()


# ------------------------------------------------------------------------------ 5. /readyz


def test_readyz_hides_worker_errors(service_env, redis_server, tmp_path: Path) -> None:
    missing = "/nonexistent/hamnet-hardening-bundle"
    db_url = redis_server.url.rsplit("/", 1)[0] + "/11"
    rdb = redis_lib.Redis.from_url(db_url, decode_responses=True)
    rdb.flushdb()
    env = _env(service_env, HAMNET_REDIS_URL=db_url,
               HAMNET_DATA_DIR=str(tmp_path / "data"))
    wproc = start_worker(dict(env, HAMNET_BUNDLE=missing), tmp_path / "worker.log")
    gproc = None
    try:
        gproc, url = start_gateway(dict(env, HAMNET_API_KEYS=KEY), tmp_path / "gateway.log")

        def errored() -> bool:
            for key in rdb.scan_iter(match="hamnet:worker:*"):
                raw = rdb.get(key)
                if raw and json.loads(raw).get("load_error"):
                    return True
            return False

        wait_for(errored, 90, "a worker heartbeat with a load error", wproc)
        with httpx.Client(base_url=url, timeout=30) as c:
            for params, headers in (({}, {}), ({"detail": "true"}, {}),
                                    ({"detail": "true"}, {"Authorization": "Bearer wrong"}),
                                    ({}, {"Authorization": f"Bearer {KEY}"})):
                r = c.get("/readyz", params=params, headers=headers)
                assert r.status_code == 503, r.text
                body = r.json()
                assert body["checks"]["worker_errors"] == 1, body
                assert body["checks"]["workers_with_model"] == 0, body
                assert "worker_error_messages" not in body["checks"], body
                for secret in ("nonexistent", "hamnet-hardening-bundle", "Error", "Traceback"):
                    assert secret not in r.text, (secret, r.text)
            r = c.get("/readyz", params={"detail": "true"},
                      headers={"Authorization": f"Bearer {KEY}"})
            assert r.status_code == 503, r.text
            messages = r.json()["checks"]["worker_error_messages"]
            assert len(messages) == 1 and missing in messages[0], messages
    finally:
        if gproc is not None:
            gproc.stop()
        wproc.stop()
        rdb.flushdb()
        rdb.close()


# ------------------------------------------------------------------------------ 6. request ids


def test_unexpected_error_names_request_id(caplog: pytest.LogCaptureFixture) -> None:
    from fastapi.testclient import TestClient
    from hamnet_service import auth, state
    from hamnet_service.app import create_app

    def broken_store():  # noqa: ANN202
        raise RuntimeError("store exploded: redis://:hunter2@10.0.0.7")

    app = create_app()
    app.dependency_overrides[state.store] = broken_store
    app.dependency_overrides[auth.caller] = lambda: "tester"
    client = TestClient(app, raise_server_exceptions=False)
    ok = client.get("/livez")
    assert ok.status_code == 200 and RID.match(ok.headers.get("x-request-id", "")), ok.headers
    with caplog.at_level(logging.ERROR, logger="hamnet.service"):
        r = client.get("/v1/jobs/" + "a" * 22)
    assert r.status_code == 500, r.text
    assert r.json().keys() == {"error"} and err(r) == "internal_error", r.text
    message = r.json()["error"]["message"]
    assert "hunter2" not in r.text and "RuntimeError" not in r.text, r.text
    rid = r.headers.get("x-request-id", "")
    assert RID.match(rid) and rid in message, (rid, message)
    assert rid != ok.headers["x-request-id"]
    logged = [rec for rec in caplog.records
              if rec.levelno >= logging.ERROR and rid in rec.getMessage()]
    assert logged, [rec.getMessage() for rec in caplog.records]
    assert logged[0].exc_info is not None and logged[0].exc_info[0] is RuntimeError


def test_every_response_has_request_id(api: httpx.Client) -> None:
    responses = [api.get("/livez"), api.get("/readyz"), api.get("/v1/models"),
                 api.get("/v1/jobs/" + "b" * 22), api.get("/nope"), api.put("/v1/jobs"),
                 api.post("/v1/jobs", content=b"x")]
    ids = [r.headers.get("x-request-id", "") for r in responses]
    assert all(RID.match(i) for i in ids), [(r.status_code, i) for r, i in zip(responses, ids, strict=True)]
    assert len(set(ids)) == len(ids)


# ------------------------------------------------------------------------------ 7. callbacks


class _Hooks(http.server.BaseHTTPRequestHandler):
    """``/ok`` answers 200, ``/fail`` 500; every POST is recorded (path, headers, raw body)."""

    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        n = int(self.headers.get("content-length", 0))
        body = self.rfile.read(n)
        type(self).received.append({"path": self.path, "headers": dict(self.headers),
                                     "body": body, "at": time.monotonic()})
        self.send_response(200 if self.path.startswith("/ok") else 500)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *a) -> None:  # noqa: ANN002
        pass


@pytest.fixture()
def hooks():
    _Hooks.received = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}", _Hooks.received
    srv.shutdown()
    srv.server_close()


def test_signed_callbacks(service_env, redis_server, small_video: Path, hooks,
                          tmp_path: Path) -> None:
    from hamnet_worker.callbacks import verify

    base, received = hooks
    db_url = redis_server.url.rsplit("/", 1)[0] + "/12"
    rdb = redis_lib.Redis.from_url(db_url, decode_responses=True)
    rdb.flushdb()
    env = _env(service_env, HAMNET_REDIS_URL=db_url, HAMNET_DATA_DIR=str(tmp_path / "data"),
               HAMNET_CALLBACK_ALLOW_PRIVATE="true", HAMNET_API_KEYS=KEY)
    wproc = start_worker(env, tmp_path / "worker.log")
    gproc = None
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        gproc, url = start_gateway(env, tmp_path / "gateway.log")
        wait_worker_ready(rdb, wproc)
        with httpx.Client(base_url=url, timeout=60, headers=auth) as c:
            ids = {}
            for kind in ("fail", "ok"):  # the failing one first: its retry overlaps the other
                r = c.post("/v1/jobs", files={"file": ("s.mp4", small_video.read_bytes(),
                                                       "video/mp4")},
                           data={"callback_url": f"{base}/{kind}"})
                assert r.status_code == 202, r.text
                ids[kind] = r.json()["id"]
            secret = c.get("/v1/webhook-secret").json()["secret"]

            def job(kind: str) -> dict:
                r = c.get(f"/v1/jobs/{ids[kind]}")
                assert r.status_code == 200, r.text
                return r.json()

            def callback(kind: str, pred) -> dict | None:  # noqa: ANN001
                j = job(kind)
                assert j["status"] not in ("failed", "cancelled"), j
                cb = j.get("callback") or {}
                return j if j["status"] == "succeeded" and pred(cb) else None

            try:
                first = wait_for(lambda: callback("fail", lambda cb: cb.get("attempts", 0) >= 1),
                                 120, "first callback attempt")["callback"]
                done = wait_for(lambda: callback("ok", lambda cb: cb.get("status")
                                                 == "delivered"), 120, "callback delivered")
            except TimeoutError as e:
                raise AssertionError(f"{e}\n{wproc.tail()}\n{gproc.tail()}") from None
            fail_posts = [h for h in received if h["path"] == "/fail"]
            early = [round(b["at"] - a["at"], 2) for a, b in
                     zip(fail_posts, fail_posts[1:], strict=False)]
            assert first["attempts"] == 1, (
                f"the retry came {early} s after the first attempt, not ~10 s", first)
            assert first["status"] == "pending" and first["http_status"] == 500, first

            cb = done["callback"]
            assert cb["attempts"] == 1 and cb["http_status"] == 200, cb
            ok_posts = [h for h in received if h["path"] == "/ok"]
            assert len(ok_posts) == 1, ok_posts
            hook = ok_posts[0]
            sig = hook["headers"].get("Hamnet-Signature", "")
            assert verify(secret, sig, hook["body"]), (sig, hook["body"][:200])
            assert not verify(secret, sig, hook["body"] + b" ")
            payload = json.loads(hook["body"])
            assert payload["id"] == ids["ok"] and payload["status"] == "succeeded", payload
            assert "owner" not in payload and "callback" not in payload, payload

            # the second attempt of the failing hook, about 10 s after the first
            try:
                failed2 = wait_for(lambda: callback("fail", lambda cb: cb.get("attempts") == 2),
                                   30, "second callback attempt")["callback"]
            except TimeoutError as e:
                raise AssertionError(f"{e}\n{wproc.tail()}") from None
            assert failed2["status"] == "pending" and failed2["http_status"] == 500, failed2
            fail_posts = [h for h in received if h["path"] == "/fail"]
            assert len(fail_posts) == 2, fail_posts
            gap = fail_posts[1]["at"] - fail_posts[0]["at"]
            assert 6 <= gap <= 20, gap
            d1, d2 = (h["headers"].get("Hamnet-Delivery") for h in fail_posts)
            assert d1 and d1 == d2, ("Hamnet-Delivery changed between retries", d1, d2)
            assert verify(secret, fail_posts[1]["headers"]["Hamnet-Signature"],
                          fail_posts[1]["body"])
    finally:
        if gproc is not None:
            gproc.stop()
        wproc.stop()
        rdb.flushdb()
        rdb.close()

