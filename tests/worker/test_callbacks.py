"""Callback delivery (hamnet_worker.callbacks): pinned, signed POSTs to real local servers, the
outcome classification, the signature scheme and the retry schedule.

Every request goes to a real server on 127.0.0.x; nothing is ever sent off the machine.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "jobs"))

from hamnet_worker.callbacks import (  # noqa: E402
    MAX_ATTEMPTS,
    CallbackDeliveryError,
    DeliveryAttempt,
    backoff_s,
    deliver_once,
    next_attempt_in,
    post_callback,
    sign,
    signing_secret,
    verify,
)
from hookserver import (  # noqa: E402
    HookServer,
    free_port,
    rebinding_resolver,
    resolver_for,
    self_signed,
    server_tls,
    servers_on_same_port,
)

PAYLOAD = {"id": "job_123", "status": "succeeded", "segments": [{"label": "x", "score": 0.5}]}


def only(*ips: str):
    return lambda ip: str(ip) in ips


def status_server(host: str, status: int, headers: dict | None = None) -> HookServer:
    return HookServer(host, respond=lambda req: (status, headers or {}, b"ok"))


# ------------------------------------------------------------------------------ rebinding


def test_dns_rebinding_posts_to_the_vetted_address() -> None:
    """The callback host answers 127.0.0.2 (allowed) when vetted and 127.0.0.1 (refused) on any
    later lookup: the POST lands on 127.0.0.2 with the original Host header, 127.0.0.1 sees
    nothing (resolve-then-urlopen would have posted to 127.0.0.1: see
    tests/jobs/test_urls.py::test_rebinding_setup_fools_resolve_then_connect)."""
    good, bad = servers_on_same_port(["127.0.0.2", "127.0.0.1"])
    resolve = rebinding_resolver("hooks.rebind.test", "127.0.0.2", "127.0.0.1")
    with good, bad:
        res = deliver_once(f"http://hooks.rebind.test:{good.port}/hook", PAYLOAD, secret=None,
                           allow_private=False, resolver=resolve,
                           is_allowed=only("127.0.0.2"), timeout=5)
    assert res.ok and res.http_status == 204, res
    assert bad.requests == []
    assert len(good.requests) == 1
    req = good.requests[0]
    assert req["headers"]["Host"] == f"hooks.rebind.test:{good.port}"
    assert json.loads(req["body"]) == PAYLOAD
    assert req["headers"]["Content-Type"] == "application/json"
    assert req["headers"]["User-Agent"] == "hamnet-worker"
    assert req["headers"]["Hamnet-Delivery"] == res.delivery_id
    assert "Hamnet-Signature" not in req["headers"]
    assert resolve.calls == ["hooks.rebind.test"]


def test_rebinding_to_a_refused_address_at_delivery_time() -> None:
    """Vetting happens at delivery: a name that now answers a refused address is not posted
    to, and retrying will not help."""
    with HookServer("127.0.0.1") as srv:
        resolve = resolver_for({"hooks.rebind.test": ["127.0.0.1"]})
        res = deliver_once(f"http://hooks.rebind.test:{srv.port}/hook", PAYLOAD, secret=None,
                           allow_private=False, resolver=resolve,
                           is_allowed=only("127.0.0.2"), timeout=5)
        direct = deliver_once(f"http://127.0.0.1:{srv.port}/hook", PAYLOAD, secret=None,
                              allow_private=False, timeout=5)
    assert srv.requests == []
    for r in (res, direct):
        assert not r.ok and not r.retryable and r.http_status is None
        assert r.error == "refused: the host resolves to a non-public address"
        assert "127.0.0" not in r.error


# ------------------------------------------------------------------------------ outcomes


@pytest.mark.parametrize(("status", "ok", "retryable"), [
    (200, True, False), (202, True, False), (204, True, False),
    (400, False, False), (401, False, False), (404, False, False), (410, False, False),
    (408, False, True), (429, False, True),
    (500, False, True), (502, False, True), (503, False, True),
])
def test_status_classification(status: int, ok: bool, retryable: bool) -> None:
    with status_server("127.0.0.2", status) as srv:
        res = deliver_once(f"http://127.0.0.2:{srv.port}/h", PAYLOAD, secret=None,
                           allow_private=True, timeout=5)
    assert (res.ok, res.retryable, res.http_status) == (ok, retryable, status)
    assert res.error == (None if ok else f"HTTP {status}")
    assert len(srv.requests) == 1


def test_connection_refused_is_retryable() -> None:
    port = free_port("127.0.0.2")
    res = deliver_once(f"http://127.0.0.2:{port}/h", PAYLOAD, secret=None, allow_private=True,
                       timeout=5)
    assert (res.ok, res.retryable, res.http_status, res.error) == (
        False, True, None, "connection refused")


def test_unresolvable_host_is_retryable() -> None:
    res = deliver_once("https://nxdomain.example.test/h", PAYLOAD, secret=None,
                       allow_private=False, resolver=resolver_for({}), timeout=5)
    assert (res.ok, res.retryable, res.error) == (False, True, "the host does not resolve")


def test_bad_url_is_not_retryable() -> None:
    res = deliver_once("ftp://example.com/", PAYLOAD, secret=None, allow_private=True)
    assert (res.ok, res.retryable, res.http_status) == (False, False, None)


def test_trickling_receiver_times_out_within_the_budget() -> None:
    import threading

    lst = socket.create_server(("127.0.0.2", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = lst.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
            while not stop.wait(0.1):
                try:
                    conn.sendall(b"a")
                except OSError:
                    return

    threading.Thread(target=trickle, daemon=True).start()
    t0 = time.monotonic()
    try:
        res = deliver_once(f"http://127.0.0.2:{lst.getsockname()[1]}/h", PAYLOAD, secret=None,
                           allow_private=True, timeout=1.0)
    finally:
        stop.set()
        lst.close()
    assert time.monotonic() - t0 < 4
    assert (res.ok, res.retryable, res.error) == (False, True, "timed out")


def test_redirect_is_not_followed() -> None:
    with HookServer("127.0.0.3") as target:
        with HookServer("127.0.0.2", respond=lambda req: (
                302, {"Location": f"http://127.0.0.3:{target.port}/internal"}, b"")) as hop:
            res = deliver_once(f"http://127.0.0.2:{hop.port}/hook", PAYLOAD, secret=None,
                               allow_private=True, timeout=5)
            time.sleep(0.3)
    assert len(hop.requests) == 1 and target.requests == []
    assert (res.ok, res.retryable, res.http_status) == (False, False, 302)
    assert res.error == "redirect not followed (HTTP 302)"


def test_post_callback_raises_on_failure() -> None:
    with status_server("127.0.0.2", 500) as srv:
        with pytest.raises(CallbackDeliveryError, match="HTTP 500") as e:
            post_callback(f"http://127.0.0.2:{srv.port}/h", PAYLOAD, allow_private=True)
    assert e.value.attempt.retryable
    with pytest.raises(CallbackDeliveryError, match="non-public"):
        post_callback("http://127.0.0.1:9/h", PAYLOAD, allow_private=False)
    with status_server("127.0.0.2", 204) as srv:
        assert post_callback(f"http://127.0.0.2:{srv.port}/h", PAYLOAD, allow_private=True).ok


def test_attempt_is_a_storable_record() -> None:
    with status_server("127.0.0.2", 503) as srv:
        res = deliver_once(f"http://127.0.0.2:{srv.port}/h", PAYLOAD, secret=None,
                           allow_private=True, timeout=5, delivery_id="dlv_fixed")
    d = res.to_dict()
    assert d == {"ok": False, "http_status": 503, "error": "HTTP 503", "retryable": True,
                 "at": res.at, "delivery_id": "dlv_fixed"}
    assert json.loads(json.dumps(d)) == d
    assert res.at.endswith("Z") and "T" in res.at
    assert srv.requests[0]["headers"]["Hamnet-Delivery"] == "dlv_fixed"


# ------------------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("certs")
    return {h: self_signed(tmp, h) for h in ("hooks.example.test", "other.example.test")}


def test_https_delivery_sends_sni_of_the_host_name(certs) -> None:
    cert, key = certs["hooks.example.test"]
    with HookServer("127.0.0.2", tls=server_tls(cert, key)) as srv:
        res = deliver_once(f"https://hooks.example.test:{srv.port}/hook", PAYLOAD,
                           secret="whsec_test", allow_private=False,
                           resolver=resolver_for({"hooks.example.test": ["127.0.0.2"]}),
                           is_allowed=only("127.0.0.2"), timeout=5,
                           ssl_context=ssl.create_default_context(cafile=str(cert)))
    assert res.ok and res.http_status == 204, res
    assert srv.sni == ["hooks.example.test"]
    req = srv.requests[0]
    assert req["headers"]["Host"] == f"hooks.example.test:{srv.port}"
    assert verify("whsec_test", req["headers"]["Hamnet-Signature"], req["body"])


def test_https_certificate_mismatch_is_not_retryable(certs) -> None:
    """A certificate that does not match the host name will not match on a retry minutes later
    either, and retrying would keep offering the payload to whoever answers."""
    cert, key = certs["other.example.test"]
    with HookServer("127.0.0.2", tls=server_tls(cert, key)) as srv:
        res = deliver_once(f"https://hooks.example.test:{srv.port}/hook", PAYLOAD,
                           secret="whsec_test", allow_private=False,
                           resolver=resolver_for({"hooks.example.test": ["127.0.0.2"]}),
                           is_allowed=only("127.0.0.2"), timeout=5,
                           ssl_context=ssl.create_default_context(cafile=str(cert)))
    assert srv.requests == []
    assert (res.ok, res.retryable, res.http_status) == (False, False, None)
    assert res.error == "TLS certificate verification failed"


# ------------------------------------------------------------------------------ signatures


def test_signed_delivery_verifies_at_the_receiver() -> None:
    secret = signing_secret("master-key-for-tests", "owner-alpha")

    def check(req: dict) -> tuple[int, dict, bytes]:
        ok = verify(secret, req["headers"].get("Hamnet-Signature", ""), req["body"])
        return (204 if ok else 401), {}, b""

    with HookServer("127.0.0.2", respond=check) as srv:
        url = f"http://127.0.0.2:{srv.port}/hook"
        good = deliver_once(url, PAYLOAD, secret=secret, allow_private=True, timeout=5)
        other = signing_secret("master-key-for-tests", "owner-beta")
        bad = deliver_once(url, PAYLOAD, secret=other, allow_private=True, timeout=5)
        unsigned = deliver_once(url, PAYLOAD, secret=None, allow_private=True, timeout=5)
    assert good.ok and good.http_status == 204
    assert (bad.ok, bad.http_status, bad.retryable) == (False, 401, False)
    assert (unsigned.ok, unsigned.http_status) == (False, 401)
    header = srv.requests[0]["headers"]["Hamnet-Signature"]
    t, v1 = header.split(",")
    assert t.startswith("t=") and abs(int(t[2:]) - time.time()) < 60
    assert v1.startswith("v1=") and len(v1) == 3 + 64


def test_sign_and_verify() -> None:
    secret = signing_secret(b"k", "alice")
    body = b'{"id":"job_1","status":"succeeded"}'
    now = 1_700_000_000
    h = sign(secret, now, body)
    assert h.startswith(f"t={now},v1=")
    assert verify(secret, h, body, now=now)
    assert verify(secret, h, body, now=now + 299)
    assert verify(secret, h, body, now=now - 299)  # a receiver's clock a little behind
    assert not verify(secret, h, body, now=now + 301)  # replayed later
    assert not verify(secret, h, body, now=now - 301)
    assert not verify(secret, h, body + b" ", now=now)  # tampered body
    assert not verify(secret, h, b'{"id":"job_1","status":"failed"}', now=now)
    assert not verify(signing_secret(b"k", "bob"), h, body, now=now)  # another key's secret
    assert not verify(secret, h.replace(f"t={now}", f"t={now + 1}"), body, now=now)
    # a header carrying a second (rotated) signature is still accepted
    assert verify(secret, f"{h},v1={'0' * 64}", body, now=now)
    for broken in ("", "garbage", f"t={now}", f"v1={h.split('v1=')[1]}", f"t=x,{h}",
                   f"t={now},t={now},v1=00", "t=-1,v1=00", "t=１２,v1=00"):
        assert not verify(secret, broken, body, now=now), broken
    assert not verify("", h, body, now=now)


def test_signing_secret_per_owner() -> None:
    a1 = signing_secret("master", "alpha")
    assert a1 == signing_secret(b"master", "alpha")  # deterministic: nothing to store
    assert a1.startswith("whsec_") and len(a1) == len("whsec_") + 64
    assert a1 != signing_secret("master", "beta")
    assert a1 != signing_secret("other-master", "alpha")
    assert "master" not in a1
    # the gateway shows callers hamnet_jobs.webhooks' derivation: the worker must sign with it
    import hashlib
    import hmac

    from hamnet_jobs.webhooks import signing_secret as gateway_secret

    assert a1 == gateway_secret("master", "alpha")
    assert a1 == "whsec_" + hmac.new(b"master", b"alpha", hashlib.sha256).hexdigest()
    with pytest.raises(ValueError):
        signing_secret("", "alpha")


# ------------------------------------------------------------------------------ retries


def test_backoff_schedule() -> None:
    assert MAX_ATTEMPTS == 5
    assert [backoff_s(n, rand=0.5) for n in range(1, 6)] == [0, 10, 30, 90, 270]
    assert [round(backoff_s(n, rand=0.0), 6) for n in range(1, 6)] == [0, 8, 24, 72, 216]
    assert backoff_s(5, rand=0.999999) < 324.001
    for _ in range(50):
        assert 8 <= backoff_s(2) <= 12
    assert sum(backoff_s(n, rand=1.0) for n in range(1, 6)) < 10 * 60
    for bad in (0, -1, MAX_ATTEMPTS + 1):
        with pytest.raises(ValueError):
            backoff_s(bad)


def test_next_attempt() -> None:
    def attempt(ok: bool, retryable: bool) -> DeliveryAttempt:
        return DeliveryAttempt(ok=ok, http_status=None, error=None, retryable=retryable,
                               at="2024-01-01T00:00:00.000Z")

    assert next_attempt_in(1, attempt(True, False)) is None
    assert next_attempt_in(1, attempt(False, False)) is None
    assert next_attempt_in(1, attempt(False, True), rand=0.5) == 10
    assert next_attempt_in(4, attempt(False, True), rand=0.5) == 270
    assert next_attempt_in(MAX_ATTEMPTS, attempt(False, True)) is None
