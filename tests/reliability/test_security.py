"""Security: API-key isolation, unguessable ids, size/rate/queue limits, path traversal, callback
URL restrictions (checked by the gateway and again by the worker), security headers, and no
secret in any log, in Redis or in its append-only file.

All traffic goes to 127.0.0.1. No test submits a job whose callback points off the machine.
"""

from __future__ import annotations

import base64
import http.server
import json
import re
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from relprocs import Stack, wait_until

pytestmark = pytest.mark.service

KEYS = {"alpha": "rel-alpha-Zm9vYmFyYmF6cXV4", "beta": "rel-beta-cXV1eGJhemZvb2Jh"}
WRONG_KEY = "rel-wrong-bm90IGEga2V5IGF0IGFsbA"


def bearer(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture(scope="module")
def keyed(stack_factory) -> Stack:
    """Keys on, rate limit 6 a minute per key (alpha posts 4 times in this module, beta bursts),
    a worker; the gateway logs at debug level so the log check below sees as much as an
    operator ever could."""
    s = stack_factory("keyed", workers=1, gateway=False,
                      HAMNET_API_KEYS=",".join(KEYS.values()), HAMNET_RATE_LIMIT_PER_MINUTE="6")
    s.start_gateway(log_level="debug")
    return s


@pytest.fixture(scope="module")
def open_gw(stack_factory) -> Stack:
    """No keys, no rate limit, no worker: nothing submitted here ever runs (so no callback is
    ever attempted)."""
    return stack_factory("open", workers=0)


def err(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"}, body
    return body["error"]["code"]


# ------------------------------------------------------------------------------ API keys


def test_key_isolation(keyed: Stack, videos) -> None:
    job = keyed.submit(videos["short"].read_bytes(), headers=bearer("alpha"))
    jid = job["id"]
    assert keyed.wait_job(jid)["status"] == "succeeded"
    with keyed.client() as c:
        assert c.get(f"/v1/jobs/{jid}", headers=bearer("alpha")).status_code == 200
        assert c.get(f"/v1/jobs/{jid}/result", headers=bearer("alpha")).status_code == 200
        # beta cannot read, read the result of, delete, or even see alpha's job
        for method, path in (("GET", f"/v1/jobs/{jid}"), ("GET", f"/v1/jobs/{jid}/result"),
                             ("DELETE", f"/v1/jobs/{jid}")):
            r = c.request(method, path, headers=bearer("beta"))
            assert r.status_code == 404 and err(r) == "job_not_found", (method, path, r.text)
        listed = c.get("/v1/jobs", headers=bearer("beta")).json()
        assert jid not in {j["id"] for j in listed["jobs"]}
        assert jid in {j["id"] for j in c.get("/v1/jobs", headers=bearer("alpha")).json()["jobs"]}
        # the failed DELETE changed nothing
        assert c.get(f"/v1/jobs/{jid}/result", headers=bearer("alpha")).status_code == 200
        # no key, a wrong key, another scheme, an empty token: 401 everywhere under /v1
        for headers in ({}, {"Authorization": f"Bearer {WRONG_KEY}"},
                        {"Authorization": f"Basic {KEYS['alpha']}"},
                        {"Authorization": "Bearer"}, {"Authorization": KEYS["alpha"]}):
            for method, path in (("GET", f"/v1/jobs/{jid}"), ("GET", "/v1/jobs"),
                                 ("DELETE", f"/v1/jobs/{jid}"), ("GET", "/v1/models"),
                                 ("POST", "/v1/jobs")):
                r = c.request(method, path, headers=headers)
                assert r.status_code == 401, (headers, method, path, r.text)
                assert r.headers.get("www-authenticate", "").startswith("Bearer")
        # the key is not accepted from the query string (it would end up in access logs)
        assert c.get(f"/v1/jobs?api_key={KEYS['alpha']}").status_code == 401


def test_ids_are_unguessable(keyed: Stack, videos) -> None:
    from hamnet_jobs.record import new_job_id

    ids = [new_job_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for i in ids[:200]:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", i)
        assert len(base64.urlsafe_b64decode(i + "=" * (-len(i) % 4))) >= 16  # 128 bits
    # no shared structure (a counter or a timestamp prefix would show up here)
    assert len({i[:4] for i in ids}) > 1900
    job = keyed.submit(videos["short"].read_bytes(), headers=bearer("beta"))
    assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", job["id"])
    flipped = job["id"][:-1] + ("A" if job["id"][-1] != "A" else "B")
    with keyed.client() as c:
        assert c.get(f"/v1/jobs/{flipped}", headers=bearer("beta")).status_code == 404


# ------------------------------------------------------------------------------ limits


def test_rate_limit_429_with_retry_after(keyed: Stack, videos) -> None:
    """Fixed one-minute windows: retried once if the window turned over mid-burst."""
    data = videos["short"].read_bytes()
    for _attempt in range(2):
        window = int(time.time()) // 60
        with keyed.client() as c:
            codes = [c.post("/v1/jobs", files={"file": ("v.mp4", data, "video/mp4")},
                            headers=bearer("beta")) for _ in range(8)]
        if int(time.time()) // 60 == window:
            break
    limited = [r for r in codes if r.status_code == 429]
    assert limited, [r.status_code for r in codes]
    assert all(r.status_code in (202, 429) for r in codes)
    r = limited[0]
    assert err(r) == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # another key is not affected by beta's burst
    with keyed.client() as c:
        r = c.get("/v1/jobs", headers=bearer("alpha"))
        assert r.status_code == 200


def test_declared_size_refused_before_reading(keyed: Stack) -> None:
    """A Content-Length of 10 GB is answered 413 at once, without waiting for the body."""
    host, port = keyed.url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall((f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer "
                   f"{KEYS['alpha']}\r\nContent-Type: multipart/form-data; boundary=x\r\n"
                   f"Content-Length: {10 * 1024**3}\r\n\r\n--x\r\n").encode())
        t0 = time.monotonic()
        head = b""
        while b"}}" not in head and len(head) < 65536:  # headers and the JSON body
            part = s.recv(4096)
            if not part:
                break
            head += part
        head = head.decode(errors="replace")
    assert head.startswith("HTTP/1.1 413"), head
    assert time.monotonic() - t0 < 5
    assert "file_too_large" in head


def test_queue_full_429(stack_factory, videos) -> None:
    s = stack_factory("queue", workers=0, HAMNET_MAX_QUEUE="2")
    data = videos["short"].read_bytes()
    with s.client() as c:
        codes = [c.post("/v1/jobs", files={"file": ("v.mp4", data, "video/mp4")})
                 for _ in range(3)]
    assert [r.status_code for r in codes] == [202, 202, 429]
    assert err(codes[2]) == "queue_full" and int(codes[2].headers["retry-after"]) >= 1
    assert s.files_left() == [f"uploads/{r.json()['id']}.video" for r in
                              sorted(codes[:2], key=lambda r: r.json()["id"])]


# ------------------------------------------------------------------------------ traversal


@pytest.mark.parametrize("path", [
    "/v1/jobs/..%2F..%2F..%2Fetc%2Fpasswd",
    "/v1/jobs/%2e%2e%2f%2e%2e%2fsettings",
    "/v1/jobs/....//....//etc/passwd/result",
    "/static/../settings.py",
    "/static/..%2fsettings.py",
    "/static/%2e%2e/%2e%2e/hamnet_service/settings.py",
    "/static/..%5c..%5csettings.py",
    "/static//etc/passwd",
    "/%2e%2e/%2e%2e/etc/passwd",
])
def test_no_path_traversal(keyed: Stack, path: str) -> None:
    with httpx.Client(base_url=keyed.url, timeout=10) as c:
        for method in ("GET", "DELETE"):
            r = c.request(method, path, headers=bearer("alpha"))
            assert r.status_code in (404, 405, 422), (method, path, r.status_code, r.text[:200])
            assert "root:" not in r.text and "BaseSettings" not in r.text


def test_filename_never_reaches_the_file_system(keyed: Stack, videos) -> None:
    name = "../../../../../../tmp/rel-pwned.mp4"
    job = keyed.submit(videos["short"].read_bytes(), name=name, headers=bearer("alpha"))
    assert "/" not in job["filename"] and ".." not in job["filename"]
    assert not Path("/tmp/rel-pwned.mp4").exists()
    assert keyed.wait_job(job["id"])["status"] == "succeeded"
    assert not Path("/tmp/rel-pwned.mp4").exists()


# ------------------------------------------------------------------------------ callbacks


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:9/hook", "http://127.1/hook", "http://2130706433/", "http://0x7f000001/",
    "http://0.0.0.0/", "http://localhost/", "http://LOCALHOST./", "http://api.localhost/",
    "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://10.1.2.3/", "http://172.16.0.1/",
    "http://192.168.0.1/", "http://100.64.0.1/", "http://169.254.169.254/latest/meta-data",
    "http://[fe80::1]/", "http://[fc00::1]/", "http://224.0.0.1/", "http://240.0.0.1/",
    "ftp://example.com/", "file:///etc/passwd", "javascript:alert(1)",
    "http://user:pw@example.com/", "//example.com/x", "http:///nohost", "http://" + "a" * 2100,
    # IPv6 forms that embed a loopback/private IPv4 address (NAT64, 6to4, IPv4-compatible),
    # Teredo, and a legacy octal IPv4 form
    "http://[64:ff9b::a00:1]/", "http://[64:ff9b::7f00:1]:8080/", "http://[2002:7f00:1::1]/",
    "http://[::127.0.0.1]/", "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
    "http://0177.0.0.1/",
])
def test_callback_url_refused(open_gw: Stack, videos, url: str) -> None:
    with open_gw.client() as c:
        r = c.post("/v1/jobs", files={"file": ("v.mp4", videos["short"].read_bytes(),
                                               "video/mp4")}, data={"callback_url": url})
    assert r.status_code == 422, (url, r.text)
    assert err(r) == "invalid_callback_url"


class _Hooks(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server API)
        n = int(self.headers.get("content-length", 0))
        type(self).received.append(json.loads(self.rfile.read(n)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *a) -> None:  # noqa: ANN002
        pass


@pytest.fixture()
def hook_server():
    _Hooks.received = []
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hooks)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/hook", _Hooks.received
    srv.shutdown()


def test_worker_rechecks_callback(stack_factory, videos, hook_server) -> None:
    """A gateway misconfigured to allow private callbacks cannot make a worker (configured
    strictly) POST to loopback: the worker checks the URL again before sending."""
    url, received = hook_server
    s = stack_factory("cb-strict", workers=1, gateway=False)
    s.start_gateway(HAMNET_CALLBACK_ALLOW_PRIVATE="true")
    job = s.submit(videos["short"].read_bytes(), callback_url=url)
    assert s.wait_job(job["id"])["status"] == "succeeded"
    time.sleep(2)
    assert received == []
    assert "callback" in "\n".join(w.tail(30) for w in s.workers)


def test_callback_when_allowed(stack_factory, videos, hook_server) -> None:
    """Allowed explicitly (a private deployment): exactly one POST with the public job view."""
    url, received = hook_server
    s = stack_factory("cb-allowed", workers=1, HAMNET_CALLBACK_ALLOW_PRIVATE="true")
    job = s.submit(videos["short"].read_bytes(), callback_url=url)
    assert s.wait_job(job["id"])["status"] == "succeeded"
    wait_until(lambda: received, 15, "the callback")
    time.sleep(1)
    assert len(received) == 1
    assert received[0]["id"] == job["id"] and received[0]["status"] == "succeeded"
    assert "owner" not in received[0] and "sha256" not in received[0]


# ------------------------------------------------------------------------------ headers


def test_security_headers_everywhere(keyed: Stack) -> None:
    with httpx.Client(base_url=keyed.url, timeout=10) as c:
        responses = [
            c.get("/"), c.get("/livez"), c.get("/readyz"), c.get("/metrics"),
            c.get("/openapi.json"), c.get("/static/app.js"), c.get("/nope"),
            c.put("/v1/jobs", headers=bearer("alpha")), c.get("/v1/jobs"),
            c.get("/v1/jobs", headers=bearer("alpha")),
            c.get("/v1/jobs?limit=0", headers=bearer("alpha")),
            c.post("/v1/jobs", content=b"x", headers=bearer("alpha")),
        ]
    for r in responses:
        h = r.headers
        where = f"{r.request.method} {r.request.url.path} -> {r.status_code}"
        assert h.get("x-content-type-options") == "nosniff", where
        assert h.get("x-frame-options") == "DENY", where
        assert "frame-ancestors 'none'" in h.get("content-security-policy", ""), where
        assert h.get("referrer-policy") == "no-referrer", where
        assert "server" not in h, where
        assert h.get("access-control-allow-origin") is None, where
        if r.request.url.path.startswith("/v1"):
            assert h.get("cache-control") == "no-store", where


def test_docs_page_works_under_its_csp(keyed: Stack) -> None:
    """/docs is Swagger UI served from this origin (offline) and started by a script file: its
    CSP (``script-src 'self'``, no ``'unsafe-inline'``) lets every script of the page run
    (Swagger UI from a CDN with an inline script, FastAPI's default, would be a blank page).
    tests/service/test_web_page.py renders it in Chromium."""
    r = httpx.get(f"{keyed.url}/docs", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    scripts = re.findall(r"<script[^>]*>", r.text)
    assert scripts
    inline = [s for s in scripts if "src=" not in s]
    assert not inline, inline
    srcs = [re.search(r"src=['\"]([^'\"]+)", s).group(1) for s in scripts]
    external = [u for u in srcs if re.match(r"(https?:)?//", u)]
    assert not external, external
    styles = re.findall(r"<link[^>]*href=['\"]([^'\"]+)", r.text)
    assert not [u for u in styles if re.match(r"(https?:)?//", u)], styles
    for url in srcs + styles:  # every asset is served here, relative to /docs
        a = httpx.get(f"{keyed.url}/{url}", timeout=10)
        assert a.status_code == 200 and len(a.content) > 100, (url, a.status_code)
    assert any("swagger-ui-bundle.js" in u for u in srcs)
    # the document Swagger UI is started on
    assert httpx.get(f"{keyed.url}/openapi.json", timeout=10).json()["paths"]


# ------------------------------------------------------------------------------ secrets


def test_no_secrets_in_logs_or_redis(keyed: Stack) -> None:
    """Runs last in this module (file order), after every request above was made with the keys
    and a wrong key: neither appears in the gateway or worker logs, in any Redis key or value,
    or in Redis' append-only file (the store keeps a hash of the key, not the key)."""
    secrets = [*KEYS.values(), WRONG_KEY]
    logs = keyed.gateway.log.read_text(errors="replace") + "".join(
        w.log.read_text(errors="replace") for w in keyed.workers)
    # except the access-log line of test_key_isolation's deliberate ?api_key= request: a URL is
    # logged as sent, which is why keys are only ever read from the Authorization header
    logs = "\n".join(line for line in logs.splitlines() if "?api_key=" not in line)
    assert len(logs) > 0
    r = keyed.r()
    dump = []
    for key in r.scan_iter(count=500):
        dump.append(key)
        kind = r.type(key)
        if kind == "string":
            dump.append(r.get(key) or "")
        elif kind == "hash":
            dump.append(json.dumps(r.hgetall(key)))
        elif kind == "zset":
            dump.append(json.dumps(r.zrange(key, 0, -1)))
        elif kind == "list":
            dump.append(json.dumps(r.lrange(key, 0, -1)))
    aof = b"".join(p.read_bytes() for p in keyed.redis.dir.rglob("*.aof"))
    assert aof, "no append-only file found"
    for secret in secrets:
        assert secret not in logs, "an API key is in a log"
        assert not any(secret in x for x in dump), "an API key is stored in Redis"
        assert secret.encode() not in aof, "an API key is in the append-only file"


def test_redis_password_never_printed(stack_factory, videos) -> None:
    """With a password in ``HAMNET_REDIS_URL`` (redis-server ``requirepass``), neither the
    normal path (a job) nor the error paths (Redis down: 503s, worker and Celery reconnects)
    print it in a log, an API body or the metrics."""
    password = "rel-redis-pw-c2VjcmV0LXBhc3N3b3Jk"
    s = stack_factory("redis-auth", workers=1, gateway=False, redis_password=password)
    s.start_gateway(log_level="debug")
    job = s.submit(videos["short"].read_bytes())
    assert s.wait_job(job["id"])["status"] == "succeeded"
    bodies = []
    s.redis.stop()
    try:
        with s.client(timeout=60) as c:  # each waits out the store client's retries
            r = c.get(f"/v1/jobs/{job['id']}")
            assert r.status_code == 503
            bodies.append(r.text)
    finally:
        s.redis.start()
    s.wait_workers(1)
    with s.client() as c:
        bodies += [c.get("/readyz").text, c.get("/v1/models").text, c.get("/metrics").text]
    logs = s.gateway.log.read_text(errors="replace") + "".join(
        w.log.read_text(errors="replace") for w in s.workers)
    assert "Connection" in logs or "connect" in logs  # the outage was seen and logged
    assert password not in logs
    assert not any(password in b for b in bodies)
