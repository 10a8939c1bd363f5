"""The outbound URL policy (hamnet_jobs.urls): address classification, one-resolution vetting,
and requests pinned to the vetted address (DNS rebinding, Host, TLS SNI, redirects).

Every request here goes to a real server on 127.0.0.x; public addresses are only classified or
handed to a stand-in resolver and never connected to.
"""

from __future__ import annotations

import socket
import ssl
import sys
import time
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hamnet_jobs.urls import (  # noqa: E402
    CallbackURLError,
    DeadlineExceeded,
    URLPolicyError,
    VettedURL,
    check_callback_url,
    check_outbound_url,
    is_public_address,
    open_pinned,
    resolve_vetted,
)
from hookserver import (  # noqa: E402
    HookServer,
    rebinding_resolver,
    resolver_for,
    self_signed,
    server_tls,
    servers_on_same_port,
)


def only(*ips: str):
    """A test policy allowing exactly these loopback addresses."""
    return lambda ip: str(ip) in ips


@pytest.fixture()
def no_dns(monkeypatch):
    """socket.getaddrinfo answers numeric hosts only: any name lookup outside the explicit
    resolver fails the test (and nothing can leave the machine)."""
    real = socket.getaddrinfo
    looked_up: list[str] = []

    def numeric_only(host, port, family=0, type=0, proto=0, flags=0):
        try:
            return real(host, port, family, type, proto, flags | socket.AI_NUMERICHOST)
        except socket.gaierror:
            looked_up.append(host)
            raise AssertionError(f"unexpected name lookup of {host!r}") from None

    monkeypatch.setattr(socket, "getaddrinfo", numeric_only)
    return looked_up


# ------------------------------------------------------------------------------ addresses


@pytest.mark.parametrize("ip", [
    "127.0.0.1", "127.0.0.2", "10.1.2.3", "172.16.0.1", "192.168.0.1", "100.64.0.1",
    "169.254.169.254", "0.0.0.0", "224.0.0.1", "240.0.0.1", "255.255.255.255", "192.0.2.1",
    "::1", "::", "fe80::1", "fe80::1%eth0", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1",
    "2001:db8::1", "100::1",
    # IPv6 forms embedding a non-public IPv4 address
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",
    "64:ff9b::a00:1", "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",
    "2002:7f00:1::1", "2002:a00:1::1", "2002:c0a8:1::1",
    # refused outright whatever they embed
    "::127.0.0.1", "::8.8.8.8", "::10.0.0.1", "64:ff9b:1::808:808", "64:ff9b:1::a00:1",
    "2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",
    "not an ip", "",
])
def test_non_public_addresses(ip: str) -> None:
    assert not is_public_address(ip)


@pytest.mark.parametrize("ip", [
    "93.184.216.34", "8.8.8.8", "1.1.1.1", "2606:4700::1111", "2a00:1450:4001:81c::200e",
    # embedded public IPv4: DNS64 / 6to4 / mapped answers for a public host stay usable
    "::ffff:93.184.216.34", "64:ff9b::5db8:d822", "2002:5db8:d822::1",
])
def test_public_addresses(ip: str) -> None:
    assert is_public_address(ip)


# ------------------------------------------------------------------------------ check URLs

# the 26 URLs the gateway refuses (tests/reliability/test_security.py), plus IPv6 forms
# embedding loopback/private IPv4
REFUSED = [
    "http://127.0.0.1:9/hook", "http://127.1/hook", "http://2130706433/", "http://0x7f000001/",
    "http://0.0.0.0/", "http://localhost/", "http://LOCALHOST./", "http://api.localhost/",
    "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://10.1.2.3/", "http://172.16.0.1/",
    "http://192.168.0.1/", "http://100.64.0.1/", "http://169.254.169.254/latest/meta-data",
    "http://[fe80::1]/", "http://[fc00::1]/", "http://224.0.0.1/", "http://240.0.0.1/",
    "ftp://example.com/", "file:///etc/passwd", "javascript:alert(1)",
    "http://user:pw@example.com/", "//example.com/x", "http:///nohost", "http://" + "a" * 2100,
    "http://[64:ff9b::a00:1]/", "http://[64:ff9b::7f00:1]:8080/", "http://[2002:7f00:1::1]/",
    "http://[::127.0.0.1]/", "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
    "http://[64:ff9b:1::a00:1]/", "http://0177.0.0.1/", "http://127.0.0.1:99999/",
    "http://example.com/a b",
]


@pytest.mark.parametrize("url", REFUSED)
def test_check_callback_url_refuses(url: str, no_dns) -> None:
    for resolve in (True, False):
        with pytest.raises(CallbackURLError) as e:
            check_callback_url(url, resolve=resolve)
        assert e.value.code == "invalid_callback_url"
        assert isinstance(e.value, URLPolicyError) and isinstance(e.value, ValueError)
    assert no_dns == []  # none of these needed a DNS lookup


def test_check_messages_unchanged(no_dns) -> None:
    with pytest.raises(CallbackURLError, match="non-public address \\(10.1.2.3\\)"):
        check_callback_url("http://10.1.2.3/")
    with pytest.raises(CallbackURLError, match="must be an absolute http\\(s\\) URL"):
        check_callback_url("ftp://example.com/")
    with pytest.raises(CallbackURLError, match="must not contain credentials"):
        check_callback_url("http://u:p@example.com/")
    with pytest.raises(CallbackURLError, match="longer than 2048"):
        check_callback_url("http://" + "a" * 2100)
    with pytest.raises(CallbackURLError, match="points to a loopback address"):
        check_callback_url("http://localhost/")
    with pytest.raises(URLPolicyError) as e:
        check_outbound_url("http://10.1.2.3/")
    assert e.value.code == "invalid_url" and not isinstance(e.value, CallbackURLError)


def test_check_allows_public_and_private_when_allowed(no_dns) -> None:
    assert check_callback_url("https://93.184.216.34/hook") == "https://93.184.216.34/hook"
    assert check_callback_url("https://[2606:4700::1111]/h")
    assert check_callback_url("https://[64:ff9b::5db8:d822]/h")
    assert check_callback_url("http://127.0.0.1:9/cb", allow_private=True)
    assert check_callback_url("https://hooks.example.com/x", resolve=False)


def test_check_resolves_names(no_dns) -> None:
    resolve = resolver_for({"rebind.example.test": ["93.184.216.34", "10.0.0.7"]})
    with pytest.raises(CallbackURLError, match="non-public"):
        check_outbound_url("https://rebind.example.test/", resolver=resolve,
                           error=CallbackURLError)
    with pytest.raises(URLPolicyError, match="does not resolve") as e:
        check_outbound_url("https://nxdomain.example.test/", resolver=resolve)
    assert e.value.retryable


# ------------------------------------------------------------------------------ vetting


def test_resolve_vetted_vets_every_address(no_dns) -> None:
    """One non-public answer among public ones refuses the URL: DNS answer order is the
    attacker's to choose, and a connect loop would fall through to it."""
    for answers in (["93.184.216.34", "127.0.0.1"], ["127.0.0.1", "93.184.216.34"],
                    ["2606:4700::1111", "::ffff:10.0.0.1"], ["64:ff9b::a00:1"]):
        resolve = resolver_for({"hooks.example.test": answers})
        with pytest.raises(URLPolicyError) as e:
            resolve_vetted("https://hooks.example.test/x", resolver=resolve)
        assert e.value.reason == "non_public_address" and not e.value.retryable
        assert resolve.calls == ["hooks.example.test"]


def test_resolve_vetted_result(no_dns) -> None:
    resolve = resolver_for({"hooks.example.test": ["93.184.216.34", "::ffff:93.184.216.34",
                                                   "2606:4700::1111"]})
    v = resolve_vetted("https://Hooks.Example.test:8443/a/b?x=1#frag", resolver=resolve)
    assert v == VettedURL(url="https://Hooks.Example.test:8443/a/b?x=1#frag", scheme="https",
                          host="hooks.example.test", port=8443, path_with_query="/a/b?x=1",
                          addresses=("93.184.216.34", "2606:4700::1111"))
    assert v.host_header == "hooks.example.test:8443"
    with pytest.raises(AttributeError):
        v.addresses = ("127.0.0.1",)  # type: ignore[misc]
    v6 = resolve_vetted("http://[2606:4700::1111]/", resolver=resolve)
    assert v6.addresses == ("2606:4700::1111",) and v6.host_header == "[2606:4700::1111]"
    assert resolve.calls == ["hooks.example.test"]  # an IP literal is not looked up


def test_resolve_vetted_policy_seam(no_dns) -> None:
    resolve = resolver_for({"hooks.example.test": ["127.0.0.2"]})
    with pytest.raises(URLPolicyError):
        resolve_vetted("http://hooks.example.test/", resolver=resolve)
    assert resolve_vetted("http://hooks.example.test/", resolver=resolve,
                          is_allowed=only("127.0.0.2")).addresses == ("127.0.0.2",)
    assert resolve_vetted("http://hooks.example.test/", resolver=resolve,
                          allow_private=True).addresses == ("127.0.0.2",)
    with pytest.raises(URLPolicyError):
        resolve_vetted("http://127.0.0.1/", is_allowed=only("127.0.0.2"))


# ------------------------------------------------------------------------------ pinning


def test_rebinding_setup_fools_resolve_then_connect(monkeypatch) -> None:
    """Control: with this resolver, checking the name and then letting urllib resolve it
    again (what post_callback used to do) lands on the second, refused address."""
    a, b = servers_on_same_port(["127.0.0.2", "127.0.0.1"])
    resolve = rebinding_resolver("hooks.rebind.test", "127.0.0.2", "127.0.0.1")
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *r, **k: (
        resolve(host, *r, **k) if host == "hooks.rebind.test" else real(host, *r, **k)))
    with a, b:
        url = f"http://hooks.rebind.test:{a.port}/hook"
        vetted_ips = [i[4][0] for i in socket.getaddrinfo("hooks.rebind.test", a.port)]
        assert all(only("127.0.0.2")(ip) for ip in vetted_ips)  # "check" passes
        req = urllib.request.Request(url, data=b"{}", method="POST")
        with urllib.request.urlopen(req, timeout=5) as r:
            r.read()
    assert len(b.requests) == 1 and a.requests == []


def test_open_pinned_connects_to_the_vetted_address(no_dns) -> None:
    """DNS rebinding: the name answers 127.0.0.2 (allowed) at the check and 127.0.0.1
    (refused) afterwards; the request still goes to 127.0.0.2, with the original Host."""
    a, b = servers_on_same_port(["127.0.0.2", "127.0.0.1"])
    resolve = rebinding_resolver("hooks.rebind.test", "127.0.0.2", "127.0.0.1")
    with a, b:
        v = resolve_vetted(f"http://hooks.rebind.test:{a.port}/hook?x=1", resolver=resolve,
                           is_allowed=only("127.0.0.2"))
        for _ in range(3):  # later requests with the same vetting never look the name up
            with open_pinned(v, "POST", b'{"a":1}', {"Content-Type": "application/json"},
                             timeout=5) as r:
                assert r.status == 204
                r.read()
    assert b.requests == []
    assert len(a.requests) == 3
    req = a.requests[0]
    assert req["method"] == "POST" and req["path"] == "/hook?x=1" and req["body"] == b'{"a":1}'
    assert req["headers"]["Host"] == f"hooks.rebind.test:{a.port}"
    assert resolve.calls == ["hooks.rebind.test"]
    assert no_dns == []


def test_open_pinned_falls_through_vetted_addresses_only(no_dns) -> None:
    """Nothing listens on 127.0.0.4 at that port (the server's bind would have failed against a
    wildcard listener): the next vetted address is used, and nothing else."""
    with HookServer("127.0.0.3") as srv:
        v = VettedURL(url="", scheme="http", host="multi.example.test", port=srv.port,
                      path_with_query="/", addresses=("127.0.0.4", "127.0.0.3"))
        with open_pinned(v, timeout=5) as r:
            assert r.status == 204
    assert len(srv.requests) == 1
    assert srv.requests[0]["headers"]["Host"] == f"multi.example.test:{srv.port}"


def test_redirect_is_returned_not_followed(no_dns) -> None:
    with HookServer("127.0.0.3") as target:
        with HookServer("127.0.0.2", respond=lambda req: (
                302, {"Location": f"http://127.0.0.3:{target.port}/internal"}, b"")) as hop:
            v = resolve_vetted(f"http://127.0.0.2:{hop.port}/hook", allow_private=True)
            with open_pinned(v, "POST", b"{}", timeout=5) as r:
                assert r.status == 302
            time.sleep(0.2)
    assert len(hop.requests) == 1 and target.requests == []


def test_deadline_bounds_a_trickling_server(no_dns) -> None:
    import threading

    lst = socket.create_server(("127.0.0.2", 0))
    stop = threading.Event()

    def trickle() -> None:
        conn, _ = lst.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not stop.wait(0.1):  # a byte every 0.1 s: no socket timeout ever fires
                try:
                    conn.sendall(b"a")
                except OSError:
                    return

    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    v = VettedURL(url="", scheme="http", host="slow.example.test",
                  port=lst.getsockname()[1], path_with_query="/", addresses=("127.0.0.2",))
    t0 = time.monotonic()
    try:
        with pytest.raises(DeadlineExceeded), open_pinned(v, timeout=1.0, deadline_s=1.0) as r:
            r.read()
    finally:
        stop.set()
        lst.close()
    assert time.monotonic() - t0 < 4


# ------------------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("certs")
    return {h: self_signed(tmp, h) for h in ("hooks.example.test", "other.example.test")}


def test_tls_sni_and_verification_use_the_host_name(certs, no_dns) -> None:
    cert, key = certs["hooks.example.test"]
    with HookServer("127.0.0.2", tls=server_tls(cert, key)) as srv:
        resolve = resolver_for({"hooks.example.test": ["127.0.0.2"]})
        v = resolve_vetted(f"https://hooks.example.test:{srv.port}/hook", resolver=resolve,
                           is_allowed=only("127.0.0.2"))
        ctx = ssl.create_default_context(cafile=str(cert))
        with open_pinned(v, "POST", b"{}", timeout=5, ssl_context=ctx) as r:
            assert r.status == 204
    assert srv.sni == ["hooks.example.test"]
    assert srv.requests[0]["headers"]["Host"] == f"hooks.example.test:{srv.port}"


def test_tls_certificate_for_another_name_fails(certs, no_dns) -> None:
    cert, key = certs["other.example.test"]
    with HookServer("127.0.0.2", tls=server_tls(cert, key)) as srv:
        resolve = resolver_for({"hooks.example.test": ["127.0.0.2"]})
        v = resolve_vetted(f"https://hooks.example.test:{srv.port}/hook", resolver=resolve,
                           is_allowed=only("127.0.0.2"))
        ctx = ssl.create_default_context(cafile=str(cert))  # trusted, but for another name
        with pytest.raises(ssl.SSLCertVerificationError, match="match|mismatch"), \
                open_pinned(v, "POST", b"{}", timeout=5, ssl_context=ctx):
            pass
        # an untrusted certificate fails with the default context too
        v2 = resolve_vetted(f"https://other.example.test:{srv.port}/hook",
                            resolver=resolver_for({"other.example.test": ["127.0.0.2"]}),
                            is_allowed=only("127.0.0.2"))
        with pytest.raises(ssl.SSLCertVerificationError), open_pinned(v2, timeout=5):
            pass
    assert srv.requests == []
    assert srv.sni == ["hooks.example.test", "other.example.test"]
