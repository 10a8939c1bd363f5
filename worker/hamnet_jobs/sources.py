"""Remote video sources: ``https://``/``http://`` URLs and ``s3://bucket/key`` objects that a
job reads instead of an upload (docs/SOURCES.md).

Two halves, both stdlib-only except boto3 (imported only for ``s3://``):

* :func:`check_source` / :func:`check_output` - the cheap submission-time check the gateway
  runs (syntax, scheme allowed, address policy on the resolved host, bucket allow-lists), so
  a request that can never work is refused at once with a precise code.
* :func:`download` - what a worker runs: the whole download into its scratch directory, with
  the outbound policy of :mod:`hamnet_jobs.urls` (host resolved once, every address vetted,
  connection pinned to a vetted address, every redirect hop vetted again), the size limit
  enforced on the declared length *and* on the bytes counted while reading, and resumption
  with ``Range``/``If-Range`` (S3: ``Range``/``IfMatch``) after a dropped connection, so a
  changed file restarts from zero instead of being spliced.

Every failure is a :class:`SourceError` whose ``code`` is the job's error code.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from hamnet_jobs.urls import (
    MAX_URL_LENGTH,
    AddressPredicate,
    DeadlineExceeded,
    RedirectRefused,
    Resolver,
    URLPolicyError,
    check_outbound_url,
    open_following,
)

CHUNK = 256 << 10
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts",
                    ".mts", ".wmv", ".flv", ".3gp", ".ogv")
OUTPUT_SUFFIX = ".hamnet.json"
# Content types that are certainly not a video: an HTML sign-in or error page served with 200
# is the usual way a "video URL" goes wrong, and it fails here without being probed.
_NOT_VIDEO_TYPES = ("text/", "application/json", "application/xml", "application/xhtml")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]{0,15}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
Progress = Callable[[int, int | None], None]


class SourceError(Exception):
    """A source that cannot be read. ``code`` is the API/job error code (``source_*``,
    ``invalid_source_url``, ``invalid_output_uri`` ...), ``status`` the HTTP status the gateway
    answers when the check fails at submission."""

    def __init__(self, code: str, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


# ------------------------------------------------------------------------------ names


@dataclass(frozen=True)
class S3Location:
    bucket: str
    key: str

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_uri(uri: str, *, field: str = "source_url", prefix: bool = False) -> S3Location:
    """``s3://bucket/key`` (``prefix``: the key may be empty or end with ``/``). Keys are taken
    literally (no percent-decoding): S3 keys may contain any character."""
    code = "invalid_source_url" if field != "output_uri" else "invalid_output_uri"
    if len(uri) > MAX_URL_LENGTH or any(c < " " or c == "\x7f" for c in uri):
        raise SourceError(code, f"{field} is too long or contains control characters")
    rest = uri[len("s3://"):] if uri.startswith("s3://") else None
    if rest is None:
        raise SourceError(code, f"{field} must look like s3://bucket/key")
    bucket, _, key = rest.partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise SourceError(code, f"{field}: {bucket!r} is not a valid bucket name")
    if not prefix and (not key or key.endswith("/")):
        raise SourceError(code, f"{field} must name an object (s3://bucket/key)")
    if len(key.encode()) > 1024:
        raise SourceError(code, f"{field}: the key is longer than 1024 bytes")
    return S3Location(bucket, key)


def scheme_of(url: str) -> str:
    head, sep, _ = url.partition("://")
    return head.lower() if sep and _SCHEME.match(head) else ""


def redact_url(url: str) -> str:
    """The URL as a job shows it: no user info, every query value replaced by ``REDACTED``
    (a presigned URL's signature is a credential), no fragment."""
    if scheme_of(url) == "s3":
        return url
    p = urlsplit(url)
    host = p.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{p.port}" if _port(p) else "")
    query = urlencode([(k, "REDACTED") for k, _ in parse_qsl(p.query, keep_blank_values=True)],
                      safe="")
    return urlunsplit((p.scheme, netloc, p.path, query, ""))


def _port(p: Any) -> int | None:
    try:
        return p.port
    except ValueError:
        return None


def source_name(url: str) -> str:
    """The file name a source is known by (display, output naming): the last path segment,
    printable, at most 200 characters; ``video`` when there is none."""
    path = url[5:].partition("/")[2] if scheme_of(url) == "s3" else unquote(urlsplit(url).path)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable() and c not in "\\/").lstrip(".").strip()
    return name[:200] or "video"


def _csv(value: str) -> list[str]:
    return [x.strip() for x in (value or "").split(",") if x.strip()]


def _bucket_allowed(bucket: str, allowed: str) -> bool:
    names = _csv(allowed)
    return "*" in names or bucket in names


# ------------------------------------------------------------------------------ submission


@dataclass(frozen=True)
class SourcePolicy:
    """What a deployment accepts; built from the shared settings by :meth:`from_settings`."""

    schemes: tuple[str, ...] = ("https", "http", "s3")
    allow_private: bool = False
    s3_buckets: str = ""
    output_buckets: str = ""
    # (bucket, prefix) of the service's own upload store: never a source or an output
    reserved: tuple[str, str] | None = None

    @classmethod
    def from_settings(cls, s: Any) -> SourcePolicy:
        reserved = (s.s3_bucket, s.s3_prefix) if getattr(s, "storage", "") == "s3" else None
        return cls(schemes=tuple(x.lower() for x in _csv(s.source_schemes)),
                   allow_private=s.source_allow_private, s3_buckets=s.source_s3_buckets,
                   output_buckets=s.output_s3_buckets, reserved=reserved)

    def _reserved(self, loc: S3Location) -> bool:
        return self.reserved is not None and loc.bucket == self.reserved[0] and \
            loc.key.startswith(self.reserved[1])


def check_source(url: str, policy: SourcePolicy, *, resolve: bool = True,
                 resolver: Resolver = socket.getaddrinfo) -> str:
    """The submission-time check of a ``source_url``; returns its kind (``https``, ``http``,
    ``s3``) or raises :class:`SourceError` (422) with a precise code. Passing it does not make
    the download safe: :func:`download` vets every connection again."""
    url = url.strip()
    kind = scheme_of(url)
    if not kind:
        raise SourceError("invalid_source_url",
                          "source_url must be an absolute https://, http:// or s3:// URL")
    if kind not in policy.schemes or kind not in ("https", "http", "s3"):
        allowed = ", ".join(f"{x}://" for x in policy.schemes) or "none"
        raise SourceError("source_scheme_not_allowed",
                          f"source_url scheme {kind}:// is not accepted here (allowed: {allowed})")
    if kind == "s3":
        loc = parse_s3_uri(url)
        if not _csv(policy.s3_buckets):
            raise SourceError("source_s3_not_configured",
                              "s3:// sources are not enabled on this deployment "
                              "(HAMNET_SOURCE_S3_BUCKETS)")
        if not _bucket_allowed(loc.bucket, policy.s3_buckets) or policy._reserved(loc):
            raise SourceError("source_bucket_not_allowed",
                              f"bucket {loc.bucket!r} is not one this deployment reads from")
        return kind
    try:
        check_outbound_url(url, allow_private=policy.allow_private, resolve=resolve,
                           field="source_url", resolver=resolver)
    except URLPolicyError as e:
        raise _policy_error(e) from None
    return kind


def output_target(output_uri: str | None, source_url: str | None, name: str,
                  policy: SourcePolicy) -> str | None:
    """Where a job's result JSON goes, checked: ``s3://bucket/prefix/`` -> ``prefix +
    <name>.hamnet.json``; ``same`` -> next to an ``s3://`` source (``<key>.hamnet.json``).
    Raises :class:`SourceError` (``invalid_output_uri``, ``output_not_configured``,
    ``output_bucket_not_allowed``)."""
    if output_uri is None or not output_uri.strip():
        return None
    output_uri = output_uri.strip()
    if output_uri == "same":
        if not source_url or scheme_of(source_url) != "s3":
            raise SourceError("invalid_output_uri",
                              "output_uri `same` needs an s3:// source (the result is "
                              "written next to it)")
        target = parse_s3_uri(source_url + OUTPUT_SUFFIX, field="output_uri")
    else:
        if scheme_of(output_uri) != "s3":
            raise SourceError("invalid_output_uri",
                              "output_uri must be an s3://bucket/prefix/ (or `same`)")
        loc = parse_s3_uri(output_uri, field="output_uri", prefix=True)
        if loc.key and not loc.key.endswith("/"):
            raise SourceError("invalid_output_uri",
                              "output_uri is a prefix: it must end with `/`")
        target = parse_s3_uri(f"s3://{loc.bucket}/{loc.key}{name}{OUTPUT_SUFFIX}",
                              field="output_uri")
    if not _csv(policy.output_buckets):
        raise SourceError("output_not_configured", "output_uri is not enabled on this "
                          "deployment (HAMNET_OUTPUT_S3_BUCKETS)")
    if not _bucket_allowed(target.bucket, policy.output_buckets) or policy._reserved(target):
        raise SourceError("output_bucket_not_allowed",
                          f"bucket {target.bucket!r} is not one this deployment writes to")
    return target.uri


def _policy_error(e: URLPolicyError) -> SourceError:
    if isinstance(e, RedirectRefused):
        return SourceError("source_redirect_forbidden", f"the source redirected: {e}")
    if e.reason in ("non_public_address", "loopback_name"):
        return SourceError("source_address_forbidden", str(e))
    if e.reason == "unresolvable":
        return SourceError("source_unreachable", str(e))
    return SourceError("invalid_source_url", str(e))


# ------------------------------------------------------------------------------ download


@dataclass
class Fetched:
    """What :func:`download` got: ``size`` bytes in ``path``; ``resumes`` ranged requests
    that continued a dropped transfer, ``restarts`` transfers begun again from zero (the file
    changed, or the server ignored ``Range``)."""

    path: Path
    size: int
    content_type: str | None = None
    validator: str | None = None
    resumes: int = 0
    restarts: int = 0
    events: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 2 * 1024**3
    timeout_s: float = 30.0
    deadline_s: float = 1200.0
    retries: int = 4
    max_redirects: int = 5
    backoff_s: float = 0.5
    max_resumes: int = 100  # a server that drops every few bytes is given up on, not chased

    @classmethod
    def from_settings(cls, s: Any) -> Limits:
        return cls(max_bytes=s.source_max_bytes, timeout_s=s.source_timeout_s,
                   deadline_s=s.source_deadline_s, retries=s.source_retries,
                   max_redirects=s.source_max_redirects)


class _Dropped(Exception):
    """The transfer ended before the expected length (resume it)."""


class _Restart(Exception):
    """The bytes so far cannot be continued (changed file, Range ignored): start again."""


def _too_large(limit: int) -> SourceError:
    return SourceError("source_too_large", f"the source is larger than {limit} bytes")


def _check_type(ctype: str | None) -> None:
    if ctype and ctype.split(";")[0].strip().lower().startswith(_NOT_VIDEO_TYPES):
        raise SourceError("source_not_a_video",
                          f"the source is not a video (Content-Type {ctype.split(';')[0]})")


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.I)


def _status_error(status: int, reason: str) -> SourceError | None:
    """Final answers that no retry changes."""
    if status in (404, 410):
        return SourceError("source_not_found", f"the source answered HTTP {status} (not found)")
    if status in (401, 403):
        return SourceError("source_forbidden", f"the source answered HTTP {status} "
                           "(access denied)")
    if 400 <= status < 500 and status not in (408, 416, 425, 429):
        return SourceError("source_unreachable", f"the source answered HTTP {status} {reason}")
    return None


def _read_body(resp: Any, fh: BinaryIO, got: Fetched, total: int | None, limits: Limits,
               on_progress: Progress | None) -> None:
    """Append the body to ``fh``, counting into ``got.size`` as it goes (a dropped connection
    resumes from there). Counted bytes enforce the limit whatever the headers claimed."""
    while True:
        chunk = resp.read(CHUNK)
        if not chunk:
            break
        if got.size + len(chunk) > limits.max_bytes:
            raise _too_large(limits.max_bytes)
        fh.write(chunk)
        got.size += len(chunk)
        if on_progress is not None:
            on_progress(got.size, total)
    if total is not None and got.size < total:
        raise _Dropped(f"connection closed at {got.size} of {total} bytes")


def _http_attempt(url: str, fh: BinaryIO, got: Fetched, limits: Limits, allow_private: bool,
                  deadline: float, resolver: Resolver, ssl_context: ssl.SSLContext | None,
                  on_progress: Progress | None, is_allowed: AddressPredicate | None) -> bool:
    """One request; True when the file is complete."""
    headers = {"Accept-Encoding": "identity", "User-Agent": "hamnet-source/1"}
    if got.size:
        headers["Range"] = f"bytes={got.size}-"
        if got.validator:  # a changed file answers 200 (whole new file), not a splice
            headers["If-Range"] = got.validator
    with open_following(url, "GET", headers, timeout=limits.timeout_s,
                        max_redirects=limits.max_redirects, allow_private=allow_private,
                        resolver=resolver, deadline_s=max(deadline - time.monotonic(), 0.001),
                        ssl_context=ssl_context, field="source_url",
                        is_allowed=is_allowed) as (_, resp):
        status = resp.status
        err = _status_error(status, resp.reason)
        if err is not None:
            raise err
        if status == 416 and got.size:
            raise _Restart("range not satisfiable")
        if status >= 500 or status in (408, 425, 429):
            raise _Dropped(f"the source answered HTTP {status}")
        if status not in (200, 206):
            raise SourceError("source_unreachable", f"the source answered HTTP {status}")
        length = resp.getheader("Content-Length")
        total: int | None = int(length) if length and length.isdigit() else None
        if status == 206:
            m = _CONTENT_RANGE.match(resp.getheader("Content-Range") or "")
            if m is None or int(m.group(1)) != got.size:
                raise _Restart("the server answered another range")
            total = int(m.group(3)) if m.group(3) != "*" else None
        elif got.size:  # 200 to a ranged request: the file changed or Range is unsupported
            fh.seek(0)
            fh.truncate()
            got.size, got.restarts = 0, got.restarts + 1
            got.events.append("restart")
        if got.size == 0:
            got.content_type = resp.getheader("Content-Type")
            _check_type(got.content_type)
            etag = resp.getheader("ETag")
            strong = etag if etag and not etag.startswith("W/") else None
            got.validator = strong or resp.getheader("Last-Modified")
        if total is not None and total > limits.max_bytes:
            raise _too_large(limits.max_bytes)
        _read_body(resp, fh, got, total, limits, on_progress)
        return True


def download_http(url: str, dest: Path, limits: Limits, *, allow_private: bool = False,
                  resolver: Resolver = socket.getaddrinfo,
                  ssl_context: ssl.SSLContext | None = None,
                  on_progress: Progress | None = None,
                  is_allowed: AddressPredicate | None = None) -> Fetched:
    """Download an http(s) source into ``dest`` (see the module docstring). ``resolver`` and
    ``is_allowed`` are the seams of :func:`hamnet_jobs.urls.resolve_vetted` (tests, stricter
    policies)."""
    deadline = time.monotonic() + limits.deadline_s
    got = Fetched(path=dest, size=0)
    failures = restarts = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _cleanup(dest), open(dest, "wb") as fh:
        while True:
            before = got.size
            try:
                if _http_attempt(url, fh, got, limits, allow_private, deadline, resolver,
                                 ssl_context, on_progress, is_allowed):
                    return got
            except SourceError:
                raise
            except DeadlineExceeded:
                raise SourceError("source_timeout", f"the download took longer than "
                                  f"{limits.deadline_s:.0f} s") from None
            except URLPolicyError as e:
                if e.retryable and failures < limits.retries:  # a DNS hiccup
                    failures += 1
                    _sleep(limits, failures, deadline)
                    continue
                raise _policy_error(e) from None
            except ssl.SSLCertVerificationError as e:
                raise SourceError("source_unreachable",
                                  f"TLS certificate verification failed: {e.verify_message}") \
                    from None
            except _Restart as e:
                restarts += 1
                if restarts > limits.retries:
                    raise SourceError("source_unreachable", f"the transfer could not be "
                                      f"resumed ({e})") from None
                fh.seek(0)
                fh.truncate()
                got.size, got.validator, got.restarts = 0, None, got.restarts + 1
                got.events.append("restart")
                continue
            except (_Dropped, OSError, http.client.HTTPException) as e:
                failures = 0 if got.size > before else failures + 1
                if failures > limits.retries or time.monotonic() >= deadline:
                    timeout = isinstance(e, TimeoutError)
                    raise SourceError(
                        "source_timeout" if timeout else "source_unreachable",
                        f"the source {'timed out' if timeout else 'failed'} "
                        f"{limits.retries + 1} times in a row ({_describe(e)})") from None
                _sleep(limits, max(failures, 1), deadline)
            if got.size:
                got.resumes += 1
                got.events.append(f"resume@{got.size}")
                if got.resumes > limits.max_resumes:
                    raise SourceError("source_unreachable", f"the connection dropped "
                                      f"{got.resumes} times")


def _describe(e: BaseException) -> str:
    if isinstance(e, http.client.IncompleteRead):
        return "connection closed mid-body"
    return f"{type(e).__name__}: {e}"[:200]


def _sleep(limits: Limits, n: int, deadline: float) -> None:
    time.sleep(max(0.0, min(limits.backoff_s * n, deadline - time.monotonic())))


@contextlib.contextmanager
def _cleanup(dest: Path) -> Iterator[None]:
    """A failed or interrupted download leaves no partial file behind."""
    try:
        yield
    except BaseException:
        dest.unlink(missing_ok=True)
        raise


# ------------------------------------------------------------------------------ s3


def s3_client(endpoint_url: str | None = None, region: str | None = None,
              timeout_s: float = 30.0) -> Any:
    """A boto3 client with the deployment's S3 settings and boto3's credential chain (the
    same as :class:`hamnet_jobs.storage.S3Storage`'s, but with its own timeouts)."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise SourceError("source_s3_not_configured", "s3:// sources need boto3 "
                          "(pip install 'hamnet[s3]')", status=503) from None
    config = Config(retries={"max_attempts": 3, "mode": "standard"},
                    connect_timeout=min(timeout_s, 10.0), read_timeout=timeout_s,
                    s3={"addressing_style": "path"} if endpoint_url else None)
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url or None,
                                          region_name=region or None, config=config)


def _s3_error(e: Exception, what: str) -> SourceError:
    response = getattr(e, "response", None) or {}
    err = response.get("Error") or {}
    code = str(err.get("Code", ""))
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    if code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket") or status == 404:
        return SourceError("source_not_found", f"{what} does not exist")
    if code in ("403", "AccessDenied", "Forbidden", "AllAccessDisabled") or status == 403:
        return SourceError("source_forbidden", f"access to {what} is denied")
    return SourceError("source_unreachable", f"{what} could not be read "
                       f"({type(e).__name__}: {code or e})"[:300])


def _transient_s3() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError
    from urllib3.exceptions import HTTPError as Urllib3Error

    return (BotoCoreError, Urllib3Error, OSError, http.client.HTTPException, _Dropped)


def download_s3(uri: str, dest: Path, limits: Limits, client: Any,
                on_progress: Progress | None = None) -> Fetched:
    """Download ``s3://bucket/key`` into ``dest``: the size is checked on ``HeadObject``
    and on the bytes read; a dropped stream resumes with ``Range`` and ``IfMatch`` on the
    first ETag (a changed object answers 412 and the download restarts)."""
    from botocore.exceptions import ClientError

    loc = parse_s3_uri(uri)
    deadline = time.monotonic() + limits.deadline_s
    got = Fetched(path=dest, size=0)
    transient = _transient_s3()
    failures = 0
    dest.parent.mkdir(parents=True, exist_ok=True)
    with _cleanup(dest), open(dest, "wb") as fh:
        while True:
            before = got.size
            try:
                if got.validator is None:
                    head = client.head_object(Bucket=loc.bucket, Key=loc.key)
                    got.validator, total = head.get("ETag"), int(head["ContentLength"])
                    got.content_type = head.get("ContentType")
                    if total > limits.max_bytes:
                        raise _too_large(limits.max_bytes)
                    _check_type(got.content_type)
                kw: dict[str, Any] = {"Bucket": loc.bucket, "Key": loc.key}
                if got.validator:
                    kw["IfMatch"] = got.validator
                if got.size:
                    kw["Range"] = f"bytes={got.size}-"
                obj = client.get_object(**kw)
                length = int(obj.get("ContentLength") or 0)
                total = got.size + length
                if total > limits.max_bytes:
                    raise _too_large(limits.max_bytes)
                _read_body(obj["Body"], fh, got, total, limits, on_progress)
                return got
            except SourceError:
                raise
            except ClientError as e:
                code = str((e.response.get("Error") or {}).get("Code", ""))
                if code in ("PreconditionFailed", "412") and failures < limits.retries:
                    failures += 1  # the object changed under us: start over
                    fh.seek(0)
                    fh.truncate()
                    got.size, got.validator, got.restarts = 0, None, got.restarts + 1
                    got.events.append("restart")
                    continue
                raise _s3_error(e, loc.uri) from None
            except transient as e:
                failures = 0 if got.size > before else failures + 1
                if failures > limits.retries or time.monotonic() >= deadline:
                    raise SourceError("source_unreachable", f"{loc.uri} could not be read "
                                      f"({_describe(e)})") from None
                _sleep(limits, max(failures, 1), deadline)
            if got.size:
                got.resumes += 1
                got.events.append(f"resume@{got.size}")


# ------------------------------------------------------------------------------ entry point


def download(url: str, dest: Path, settings: Any, *, on_progress: Progress | None = None,
             client: Any = None) -> Fetched:
    """Download a job's ``source_url`` into ``dest`` with the deployment's settings
    (``HAMNET_SOURCE_*``, and for ``s3://`` the ``HAMNET_S3_*`` endpoint and region).

    ``on_progress(bytes, total or None)`` is called after every chunk; an exception it raises
    (the job was cancelled) stops the download and propagates unchanged.
    """
    limits = Limits.from_settings(settings)
    if scheme_of(url) == "s3":
        if client is None:
            client = s3_client(settings.s3_endpoint_url, settings.s3_region, limits.timeout_s)
        return download_s3(url, dest, limits, client, on_progress)
    return download_http(url, dest, limits, allow_private=settings.source_allow_private,
                         on_progress=on_progress)


def list_videos(prefix_uri: str, client: Any, max_items: int,
                max_scanned: int = 10_000) -> list[str]:
    """The ``s3://`` URIs of the video objects under ``s3://bucket/prefix/`` (by extension,
    in key order). Raises :class:`SourceError` ``batch_too_large`` when there are more than
    ``max_items``, and lists at most ``max_scanned`` keys (a prefix holding a million other
    objects is refused rather than listed for minutes)."""
    from botocore.exceptions import BotoCoreError, ClientError

    loc = parse_s3_uri(prefix_uri, field="s3_prefix", prefix=True)
    if loc.key and not loc.key.endswith("/"):
        raise SourceError("invalid_source_url", "s3_prefix must end with `/`")
    found: list[str] = []
    scanned = 0
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=loc.bucket, Prefix=loc.key, PaginationConfig={"PageSize": 1000})
        for page in pages:
            for obj in page.get("Contents", []):
                scanned += 1
                key = obj["Key"]
                if key.lower().endswith(VIDEO_EXTENSIONS) and int(obj.get("Size", 0)) > 0:
                    found.append(f"s3://{loc.bucket}/{key}")
                    if len(found) > max_items:
                        raise SourceError("batch_too_large", f"{prefix_uri} holds more than "
                                          f"{max_items} videos (HAMNET_BATCH_MAX_SOURCES)")
            if scanned >= max_scanned:
                raise SourceError("batch_too_large", f"{prefix_uri} holds more than "
                                  f"{max_scanned} objects; use a narrower prefix")
    except (ClientError, BotoCoreError) as e:
        err = _s3_error(e, prefix_uri)
        raise SourceError(err.code, err.message, status=422) from None
    if not found:
        raise SourceError("batch_empty", f"no video objects ({', '.join(VIDEO_EXTENSIONS[:6])} "
                          f"...) under {prefix_uri}")
    return found
