"""hamnet_jobs.sources: the submission-time checks, and the downloader against real loopback
HTTP servers (videoserver.py) that drop connections, lie about lengths, redirect, stall and
refuse; S3 sources against a real S3-compatible server (moto's, on loopback).

Loopback servers are reached with ``allow_private=True`` (or an explicit address policy):
the default policy refuses them, which is tested too. Nothing here leaves the machine."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from hamnet_jobs.sources import (  # noqa: E402
    Limits,
    SourceError,
    SourcePolicy,
    check_source,
    download_http,
    download_s3,
    list_videos,
    output_target,
    redact_url,
    source_name,
)
from hamnet_jobs.urls import RedirectRefused, open_following  # noqa: E402
from videoserver import VideoServer  # noqa: E402

BODY = os.urandom(3 << 20) + b"tail"  # 3 MiB: several reads, resumable in the middle
FAST = Limits(max_bytes=16 << 20, timeout_s=2.0, deadline_s=60.0, retries=3, backoff_s=0.02)


def only(*ips: str):
    return lambda ip: str(ip) in ips


@pytest.fixture()
def server():
    with VideoServer() as srv:
        yield srv


def fetch(url: str, tmp_path: Path, limits: Limits = FAST, **kw):
    return download_http(url, tmp_path / "dl" / "video", limits, allow_private=True, **kw)


def code_of(url: str, tmp_path: Path, limits: Limits = FAST, **kw) -> str:
    with pytest.raises(SourceError) as ei:
        fetch(url, tmp_path, limits, **kw)
    assert not (tmp_path / "dl" / "video").exists(), "a failed download left its file"
    return ei.value.code


# ---- submission-time checks ---------------------------------------------------------------

POLICY = SourcePolicy(s3_buckets="videos,media", output_buckets="results",
                      reserved=("media", "uploads/"))


@pytest.mark.parametrize(("url", "code"), [
    ("http://127.0.0.1/a.mp4", "source_address_forbidden"),
    ("https://10.1.2.3/a.mp4", "source_address_forbidden"),
    ("http://[::1]:8080/a.mp4", "source_address_forbidden"),
    ("http://[::ffff:192.168.0.1]/a.mp4", "source_address_forbidden"),
    ("http://localhost/a.mp4", "source_address_forbidden"),
    ("http://2130706433/a.mp4", "source_address_forbidden"),  # 127.0.0.1 in decimal
    ("http://169.254.169.254/latest/meta-data/", "source_address_forbidden"),
    ("ftp://example.org/a.mp4", "source_scheme_not_allowed"),
    ("file:///etc/passwd", "source_scheme_not_allowed"),
    ("example.org/a.mp4", "invalid_source_url"),
    ("https://user:pw@example.org/a.mp4", "invalid_source_url"),
    ("https://example.org:99999/a.mp4", "invalid_source_url"),
    ("s3://videos/", "invalid_source_url"),
    ("s3://Bad_Bucket/a.mp4", "invalid_source_url"),
    ("s3://secret-bucket/a.mp4", "source_bucket_not_allowed"),
    ("s3://media/uploads/job.video", "source_bucket_not_allowed"),  # the service's own store
])
def test_check_source_refuses(url: str, code: str) -> None:
    with pytest.raises(SourceError) as ei:
        check_source(url, POLICY, resolve=False)
    assert ei.value.code == code, ei.value.message


def test_check_source_accepts_and_policy_switches() -> None:
    assert check_source("https://example.org/a.mp4", POLICY, resolve=False) == "https"
    assert check_source("s3://videos/dir/a b.mp4", POLICY) == "s3"
    assert check_source("s3://media/other/a.mp4", POLICY) == "s3"
    # loopback and private sources only with allow_private
    private = SourcePolicy(allow_private=True)
    assert check_source("http://127.0.0.1:8080/a.mp4", private) == "http"
    # http can be switched off, and s3 without buckets is not configured
    with pytest.raises(SourceError, match="scheme"):
        check_source("http://example.org/a.mp4", SourcePolicy(schemes=("https",)),
                     resolve=False)
    with pytest.raises(SourceError) as ei:
        check_source("s3://videos/a.mp4", SourcePolicy())
    assert ei.value.code == "source_s3_not_configured"


def test_check_source_resolves_names_once() -> None:
    seen = []

    def resolver(host, port, *a):
        seen.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", port))]

    with pytest.raises(SourceError) as ei:
        check_source("https://videos.example.org/a.mp4", POLICY, resolver=resolver)
    assert ei.value.code == "source_address_forbidden" and seen == ["videos.example.org"]


def test_output_target() -> None:
    assert output_target(None, "s3://videos/a.mp4", "a.mp4", POLICY) is None
    assert output_target("s3://results/out/", "https://x.org/v/clip.mp4", "clip.mp4",
                         POLICY) == "s3://results/out/clip.mp4.hamnet.json"
    same = SourcePolicy(s3_buckets="videos", output_buckets="videos")
    assert output_target("same", "s3://videos/d/a.mp4", "a.mp4", same) == \
        "s3://videos/d/a.mp4.hamnet.json"
    for uri, src, code in [
        ("same", "https://x.org/a.mp4", "invalid_output_uri"),
        ("https://x.org/out/", None, "invalid_output_uri"),
        ("s3://results/out", None, "invalid_output_uri"),  # not a prefix
        ("s3://elsewhere/out/", None, "output_bucket_not_allowed"),
        ("same", "s3://videos/a.mp4", "output_bucket_not_allowed"),
    ]:
        with pytest.raises(SourceError) as ei:
            output_target(uri, src, "a.mp4", POLICY)
        assert ei.value.code == code, (uri, ei.value.message)
    with pytest.raises(SourceError) as ei:
        output_target("s3://results/", None, "a.mp4", SourcePolicy())
    assert ei.value.code == "output_not_configured"


def test_redaction_and_names() -> None:
    url = ("https://cdn.example.org:8443/v/My%20Clip.mp4?X-Amz-Signature=abc123&"
           "X-Amz-Credential=AKIA%2F1&x=1#frag")
    red = redact_url(url)
    assert "abc123" not in red and "AKIA" not in red and "frag" not in red
    assert red == ("https://cdn.example.org:8443/v/My%20Clip.mp4?X-Amz-Signature=REDACTED&"
                   "X-Amz-Credential=REDACTED&x=REDACTED")
    assert source_name(url) == "My Clip.mp4"
    assert source_name("https://x.org/") == "video"
    assert source_name("s3://b/dir/../.hidden") == "hidden"
    assert redact_url("s3://b/k.mp4") == "s3://b/k.mp4"


# ---- the downloader -------------------------------------------------------------------------

def test_plain_download(server: VideoServer, tmp_path: Path) -> None:
    url = server.add("/a.mp4", body=BODY)
    seen: list[int] = []
    got = fetch(url, tmp_path, on_progress=lambda n, total: seen.append(n))
    assert got.path.read_bytes() == BODY and got.size == len(BODY)
    assert got.resumes == 0 and got.content_type == "video/mp4"
    assert seen[-1] == len(BODY) and seen == sorted(seen)
    req = server.requests[0]["headers"]
    assert req["Host"] == f"127.0.0.1:{server.port}" and "Range" not in req


def test_default_policy_refuses_loopback_before_connecting(server: VideoServer,
                                                           tmp_path: Path) -> None:
    url = server.add("/a.mp4", body=BODY)
    with pytest.raises(SourceError) as ei:
        download_http(url, tmp_path / "v", FAST)  # allow_private defaults to False
    assert ei.value.code == "source_address_forbidden"
    assert server.requests == []  # not one byte went out


def test_resume_after_dropped_connections(server: VideoServer, tmp_path: Path) -> None:
    url = server.add("/a.mp4", body=BODY, drop_after=1 << 20, drops=2)
    got = fetch(url, tmp_path)
    assert got.path.read_bytes() == BODY
    assert got.resumes == 2 and got.restarts == 0, got.events
    ranges = [r["headers"].get("Range") for r in server.requests]
    # each resume continues where the bytes received so far end (1 and 2 MiB, unless the
    # kernel lost some of a cut connection's last bytes: then a little earlier)
    starts = [int(x.removeprefix("bytes=").rstrip("-")) for x in ranges[1:]]
    assert ranges[0] is None and len(starts) == 2, ranges
    assert 0 < starts[0] <= 1 << 20 and starts[0] < starts[1] <= starts[0] + (1 << 20)
    # If-Range carries the ETag of the first answer: a changed file cannot be spliced
    assert all(r["headers"].get("If-Range") == f'"v1-{len(BODY)}"'
               for r in server.requests[1:])
    assert server.bytes_sent <= len(BODY) + (2 << 20) - starts[1]  # nothing fetched twice


def test_changed_file_restarts_from_zero(server: VideoServer, tmp_path: Path) -> None:
    new = os.urandom(2 << 20)
    url = server.add("/a.mp4", body=BODY, drop_after=1 << 20, drops=1, change_after=1,
                     changed=new)
    got = fetch(url, tmp_path)
    assert got.path.read_bytes() == new  # never half old, half new
    assert got.restarts == 1 and [r["headers"].get("Range") for r in server.requests] == \
        [None, f"bytes={1 << 20}-"]


def test_server_ignoring_range_restarts(server: VideoServer, tmp_path: Path) -> None:
    url = server.add("/a.mp4", body=BODY, ranges=False, drop_after=1 << 20, drops=1)
    got = fetch(url, tmp_path)
    assert got.path.read_bytes() == BODY and got.restarts == 1


def test_connection_dropping_forever_gives_up(server: VideoServer, tmp_path: Path) -> None:
    # announces more than it ever sends, on every attempt (the "resume" gets 416 or nothing)
    url = server.add("/a.mp4", body=BODY[:1000], lie_length=5000, ranges=False)
    assert code_of(url, tmp_path) == "source_unreachable"
    assert 2 <= len(server.requests) <= 2 * (FAST.retries + 1) + 2  # bounded


def test_size_limit_on_declared_length(server: VideoServer, tmp_path: Path) -> None:
    url = server.add("/big.mp4", body=BODY)
    small = Limits(max_bytes=1 << 20, timeout_s=2, deadline_s=30, retries=1, backoff_s=0.01)
    assert code_of(url, tmp_path, small) == "source_too_large"
    assert len(server.requests) == 1  # refused on the header, no retry


def test_size_limit_on_counted_bytes(server: VideoServer, tmp_path: Path) -> None:
    # no Content-Length (close-delimited): the limit is enforced on the bytes read
    url = server.add("/big.mp4", body=BODY, no_length=True)
    small = Limits(max_bytes=1 << 20, timeout_s=2, deadline_s=30, retries=1, backoff_s=0.01)
    assert code_of(url, tmp_path, small) == "source_too_large"
    # ... and a Content-Length that understates the body does not let more bytes in
    url = server.add("/liar.mp4", body=BODY, lie_length=1000)
    got = fetch(url, tmp_path)
    assert got.size == 1000 and got.path.read_bytes() == BODY[:1000]


@pytest.mark.parametrize(("status", "code"), [
    (404, "source_not_found"), (410, "source_not_found"), (403, "source_forbidden"),
    (401, "source_forbidden"), (400, "source_unreachable"),
])
def test_http_errors(server: VideoServer, tmp_path: Path, status: int, code: str) -> None:
    url = server.add("/x.mp4", status=status)
    assert code_of(url, tmp_path) == code
    assert len(server.requests) == 1  # final answers are not retried


def test_server_errors_are_retried_then_unreachable(server: VideoServer,
                                                    tmp_path: Path) -> None:
    url = server.add("/x.mp4", status=503)
    assert code_of(url, tmp_path) == "source_unreachable"
    assert len(server.requests) == FAST.retries + 1


def test_missing_path_and_html(server: VideoServer, tmp_path: Path) -> None:
    assert code_of(server.url("/nothing.mp4"), tmp_path) == "source_not_found"
    url = server.add("/page", body=b"<html>sign in</html>", ctype="text/html; charset=utf-8")
    assert code_of(url, tmp_path) == "source_not_a_video"


def test_unreachable_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert code_of(f"http://127.0.0.1:{port}/a.mp4", tmp_path) == "source_unreachable"


def test_stalled_server_times_out(server: VideoServer, tmp_path: Path) -> None:
    url = server.add("/slow.mp4", body=BODY[:1000], stall_s=5)
    limits = Limits(max_bytes=1 << 20, timeout_s=0.5, deadline_s=60, retries=1,
                    backoff_s=0.01)
    assert code_of(url, tmp_path, limits) == "source_timeout"
    # the whole-download deadline bounds a server that keeps the socket alive
    limits = Limits(max_bytes=1 << 20, timeout_s=30, deadline_s=1.0, retries=5,
                    backoff_s=0.01)
    t0 = time.monotonic()
    assert code_of(url, tmp_path, limits) == "source_timeout"
    assert time.monotonic() - t0 < 20


def test_redirect_to_another_loopback_port(tmp_path: Path) -> None:
    with VideoServer() as a, VideoServer() as b:
        target = b.add("/real.mp4", body=BODY)
        url = a.add("/a.mp4", status=302, headers={"Location": target})
        got = fetch(url, tmp_path)
        assert got.path.read_bytes() == BODY
        assert b.requests[0]["headers"]["Host"] == f"127.0.0.1:{b.port}"
        # relative Location, 307/308 too
        c = a.add("/c.mp4", status=308, headers={"Location": "/a.mp4"})
        assert fetch(c, tmp_path).size == len(BODY)


def test_redirect_to_forbidden_address(tmp_path: Path) -> None:
    """The first hop passes the policy, the redirect target does not: refused before any
    request reaches the target."""
    with VideoServer("127.0.0.1") as a, VideoServer("127.0.0.2") as b:
        b.add("/secret", body=b"internal")
        url = a.add("/a.mp4", status=302, headers={"Location": b.url("/secret")})
        with pytest.raises(SourceError) as ei:
            download_http(url, tmp_path / "v", FAST, is_allowed=only("127.0.0.1"))
        assert ei.value.code == "source_redirect_forbidden"
        assert b.requests == []
        # open_following itself says why: the hop, not the first URL, was refused
        with pytest.raises(RedirectRefused):
            with open_following(url, is_allowed=only("127.0.0.1")):
                pass


def test_redirect_limits(tmp_path: Path) -> None:
    with VideoServer() as a:
        loop = a.add("/loop", status=302, headers={"Location": "/loop"})
        assert code_of(loop, tmp_path) == "source_redirect_forbidden"
        assert len(a.requests) == FAST.max_redirects + 1
        bad = a.add("/nowhere", status=302)
        assert code_of(bad, tmp_path) == "source_redirect_forbidden"
        ftp = a.add("/ftp", status=302, headers={"Location": "ftp://127.0.0.1/x"})
        assert code_of(ftp, tmp_path) == "source_redirect_forbidden"


def test_cancellation_from_progress_propagates(server: VideoServer, tmp_path: Path) -> None:
    url = server.add("/a.mp4", body=BODY)

    class Cancelled(Exception):
        pass

    def cancel(n: int, total: int | None) -> None:
        if n > (1 << 20):
            raise Cancelled

    with pytest.raises(Cancelled):
        fetch(url, tmp_path, on_progress=cancel)
    assert len(server.requests) == 1 and not (tmp_path / "dl" / "video").exists()


def test_concurrent_downloads_are_independent(server: VideoServer, tmp_path: Path) -> None:
    url = server.add("/a.mp4", body=BODY, drop_after=1 << 20, drops=3)
    out: list[bytes] = []

    def one(i: int) -> None:
        got = download_http(url, tmp_path / f"d{i}" / "v", FAST, allow_private=True)
        out.append(got.path.read_bytes())

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out == [BODY] * 3


# ---- S3 against a real S3-compatible server -------------------------------------------------

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "hamnet-test-key", "AWS_SECRET_ACCESS_KEY": "hamnet-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    pytest.importorskip("boto3")
    import httpx
    from hamnet_jobs.sources import s3_client

    sys.path.insert(0, str(Path(__file__).parents[1] / "service"))
    from hamnet_procs import Proc, free_port, wait_for

    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    argv = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
    proc = Proc("moto", [*argv, "-H", "127.0.0.1", "-p", str(port)], {**os.environ, **S3_ENV},
                tmp_path_factory.mktemp("moto") / "moto.log").start()
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: httpx.get(url, timeout=2).status_code < 500, 30, "moto_server", proc)
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(S3_ENV)
    client = s3_client(url, "us-east-1", timeout_s=10)
    client.create_bucket(Bucket="videos")
    yield client
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.stop()


def test_s3_download(s3, tmp_path: Path) -> None:
    s3.put_object(Bucket="videos", Key="dir/clip.mp4", Body=BODY, ContentType="video/mp4")
    got = download_s3("s3://videos/dir/clip.mp4", tmp_path / "v", FAST, s3)
    assert got.path.read_bytes() == BODY and got.validator and got.resumes == 0


def test_s3_errors(s3, tmp_path: Path) -> None:
    for uri, code in [("s3://videos/missing.mp4", "source_not_found"),
                      ("s3://no-such-bucket/a.mp4", "source_not_found")]:
        with pytest.raises(SourceError) as ei:
            download_s3(uri, tmp_path / "v", FAST, s3)
        assert ei.value.code == code
    s3.put_object(Bucket="videos", Key="big.mp4", Body=BODY)
    small = Limits(max_bytes=1 << 20, timeout_s=2, deadline_s=30, retries=1)
    with pytest.raises(SourceError) as ei:
        download_s3("s3://videos/big.mp4", tmp_path / "v", small, s3)
    assert ei.value.code == "source_too_large" and not (tmp_path / "v").exists()
    s3.put_object(Bucket="videos", Key="page.mp4", Body=b"<html/>", ContentType="text/html")
    with pytest.raises(SourceError) as ei:
        download_s3("s3://videos/page.mp4", tmp_path / "v", FAST, s3)
    assert ei.value.code == "source_not_a_video"


def test_s3_listing(s3) -> None:
    for key in ("batch/a.mp4", "batch/b.MOV", "batch/notes.txt", "batch/sub/c.webm",
                "other/d.mp4"):
        s3.put_object(Bucket="videos", Key=key, Body=b"x")
    s3.put_object(Bucket="videos", Key="batch/empty.mp4", Body=b"")
    assert list_videos("s3://videos/batch/", s3, 10) == [
        "s3://videos/batch/a.mp4", "s3://videos/batch/b.MOV", "s3://videos/batch/sub/c.webm"]
    with pytest.raises(SourceError) as ei:
        list_videos("s3://videos/batch/", s3, 2)
    assert ei.value.code == "batch_too_large"
    with pytest.raises(SourceError) as ei:
        list_videos("s3://videos/nothing/", s3, 2)
    assert ei.value.code == "batch_empty"


class CuttingProxy:
    """A TCP proxy in front of the S3 server that cuts the first response to a request
    containing ``marker`` after ``cut_after`` bytes (a link dropping mid-object), and records
    the requests that contain it."""

    def __init__(self, target_port: int, marker: bytes, cut_after: int) -> None:
        self.target_port, self.marker, self.cut_after = target_port, marker, cut_after
        self.cuts = 1
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        state = {"armed": False, "sent": 0}

        def up() -> None:
            try:
                while data := client.recv(65536):
                    if self.marker in data:
                        self.requests.append(data)
                        if self.cuts > 0:
                            self.cuts -= 1
                            state["armed"], state["sent"] = True, 0
                    upstream.sendall(data)
            except OSError:
                pass

        threading.Thread(target=up, daemon=True).start()
        try:
            while data := upstream.recv(65536):
                if state["armed"]:
                    room = self.cut_after - state["sent"]
                    if len(data) >= room:
                        client.sendall(data[:room])
                        break
                    state["sent"] += len(data)
                client.sendall(data)
        except OSError:
            pass
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.sock.close()


def test_s3_resume_after_a_dropped_stream(s3, tmp_path: Path) -> None:
    from hamnet_jobs.sources import s3_client

    s3.put_object(Bucket="videos", Key="resume.mp4", Body=BODY)
    moto_port = int(s3.meta.endpoint_url.rsplit(":", 1)[1])
    proxy = CuttingProxy(moto_port, b"GET /videos/resume.mp4", cut_after=1 << 20)
    try:
        client = s3_client(f"http://127.0.0.1:{proxy.port}", "us-east-1", timeout_s=10)
        got = download_s3("s3://videos/resume.mp4", tmp_path / "v", FAST, client)
    finally:
        proxy.close()
    assert got.path.read_bytes() == BODY
    assert got.resumes == 1 and got.restarts == 0, got.events
    second = proxy.requests[-1].lower()
    assert b"range: bytes=" in second and b"if-match: " + got.validator.lower().encode() \
        in second
