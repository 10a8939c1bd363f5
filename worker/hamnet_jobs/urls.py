"""Outbound URL policy: which URLs a hamnet process may send a request to, and how to send it
to exactly the address that was vetted.

Anything the service fetches or posts on a client's behalf (completion callbacks today, remote
videos later) goes through here, so that a client cannot use the service to reach the internal
network (SSRF). Stdlib only: both the gateway and the workers import it.

Three layers:

* :func:`check_outbound_url` / :func:`check_callback_url`: a cheap check at submission time
  (syntax, scheme, credentials, IP literals, ``localhost`` names, and optionally one DNS
  lookup), so a client learns at once that a URL will never be used.
* :func:`resolve_vetted`: resolves the host **once** and vets **every** address it resolves to
  (one non-public address refuses the URL: an attacker controls the order of DNS answers).
* :func:`open_pinned`: sends the request to one of those vetted addresses itself, never
  resolving the host name again, while keeping ``Host`` and, for https, TLS SNI and certificate
  verification on the original host name. This is what defeats DNS rebinding: a name that
  answered a public address at the check and a private one a second later never gets the
  second lookup.

Redirects are never followed by :func:`open_pinned`: it returns the 3xx response as it is, and
callbacks treat it as a failure (a webhook receiver has no reason to redirect a POST).
:func:`open_following` (remote video sources, GET only) follows a bounded number of them, each
hop's target going through :func:`resolve_vetted` again.

Addresses refused by :func:`is_public_address` (unless the caller allows private ones): IPv4
and IPv6 loopback, private, shared (100.64/10), link-local, site-local, reserved,
documentation, multicast and unspecified ranges; and the IPv6 forms that carry an IPv4 address:

* IPv4-mapped ``::ffff:a.b.c.d`` (a dual-stack socket connects to ``a.b.c.d``), NAT64
  ``64:ff9b::/96`` (the NAT64 gateway, inside our network, connects to the embedded address)
  and 6to4 ``2002:aabb:ccdd::/48`` (packets are tunnelled to ``a.b.c.d``) are judged by their
  embedded IPv4 address, with the IPv4 rules: a DNS64 resolver on an IPv6-only host
  legitimately answers ``64:ff9b::<public v4>`` for an IPv4-only webhook receiver, and refusing
  it would break callbacks there, while ``64:ff9b::10.0.0.1`` reaches 10.0.0.1 and is refused.
* IPv4-compatible ``::a.b.c.d`` (deprecated since RFC 4291), local-use NAT64
  ``64:ff9b:1::/48`` (RFC 8215: the embedding is site-specific, so it cannot be judged) and
  Teredo ``2001::/32`` (a tunnel whose server and client addresses are obfuscated) are refused
  outright: nothing legitimate needs them.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
AddressPredicate = Callable[[IPAddress], bool]
Resolver = Callable[..., Sequence[tuple[Any, ...]]]

MAX_URL_LENGTH = 2048
DEFAULT_PORTS = {"http": 80, "https": 443}


class URLPolicyError(ValueError):
    """An outbound URL that will not be used.

    ``code`` is the API error code, ``reason`` a short machine-readable cause (``too_long``,
    ``not_http``, ``credentials``, ``bad_characters``, ``bad_port``, ``loopback_name``,
    ``unresolvable``, ``non_public_address``), ``retryable`` whether the same URL may work later
    (only a failed DNS lookup is).
    """

    code = "invalid_url"

    def __init__(self, message: str, *, reason: str = "invalid", retryable: bool = False):
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable


class CallbackURLError(URLPolicyError):
    """A refused ``callback_url`` (the API error code of the callback field)."""

    code = "invalid_callback_url"


# ------------------------------------------------------------------------------ addresses

_NAT64_WKP = ipaddress.IPv6Network("64:ff9b::/96")
_REFUSED_V6 = tuple(ipaddress.IPv6Network(n) for n in (
    "::/96",            # IPv4-compatible (deprecated), also :: and ::1
    "64:ff9b:1::/48",   # local-use NAT64 (RFC 8215)
    "2001::/32",        # Teredo
    "fec0::/10",        # site-local (deprecated, still routed internally by some networks)
    "100::/64",         # discard-only
))


def _parse_ip(ip: str | IPAddress) -> IPAddress:
    if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return ip
    return ipaddress.ip_address(ip.split("%", 1)[0])


def _public_v4(a: ipaddress.IPv4Address) -> bool:
    return bool(a.is_global and not (a.is_multicast or a.is_private or a.is_loopback
                                     or a.is_link_local or a.is_reserved or a.is_unspecified))


def is_public_address(ip: str | IPAddress) -> bool:
    """Whether an outbound request may go to ``ip`` (see the module docstring for the rules).

    A string that is not an IP address is not public. A scope id (``fe80::1%eth0``) is ignored.
    """
    try:
        a = _parse_ip(ip)
    except ValueError:
        return False
    if isinstance(a, ipaddress.IPv4Address):
        return _public_v4(a)
    if a.ipv4_mapped is not None:
        return _public_v4(a.ipv4_mapped)
    if a in _NAT64_WKP:
        return _public_v4(ipaddress.IPv4Address(int(a) & 0xFFFFFFFF))
    if a.sixtofour is not None:
        return _public_v4(a.sixtofour)
    if any(a in n for n in _REFUSED_V6):
        return False
    return bool(a.is_global and not (a.is_multicast or a.is_private or a.is_loopback
                                     or a.is_link_local or a.is_site_local or a.is_reserved
                                     or a.is_unspecified))


def _allow_all(ip: IPAddress) -> bool:
    return True


def address_policy(allow_private: bool = False,
                   is_allowed: AddressPredicate | None = None) -> AddressPredicate:
    """The predicate in force: ``is_allowed`` when given (a test seam, or a stricter policy),
    else every address when ``allow_private`` (a private deployment), else
    :func:`is_public_address`."""
    if is_allowed is not None:
        return is_allowed
    return _allow_all if allow_private else is_public_address


# ------------------------------------------------------------------------------ URLs


@dataclass(frozen=True)
class VettedURL:
    """A URL whose host was resolved once and whose every address passed the policy.

    ``host`` is the ASCII (IDNA) host name or the IP literal without brackets; ``addresses``
    are IP strings in resolver order (IPv4-mapped IPv6 answers as plain IPv4), the only places
    :func:`open_pinned` will connect to.
    """

    url: str
    scheme: str
    host: str
    port: int
    path_with_query: str
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        h = f"[{self.host}]" if ":" in self.host else self.host
        return h if self.port == DEFAULT_PORTS[self.scheme] else f"{h}:{self.port}"


@dataclass(frozen=True)
class _Parsed:
    scheme: str
    host: str
    port: int
    path_with_query: str
    ip: IPAddress | None


def _parse(url: str, field: str, err: type[URLPolicyError]) -> _Parsed:
    if len(url) > MAX_URL_LENGTH:
        raise err(f"{field} is longer than {MAX_URL_LENGTH} characters", reason="too_long")
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018 - an unbalanced IPv6 bracket raises here or above
    except ValueError:
        raise err(f"{field} is not a valid URL", reason="invalid") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise err(f"{field} must be an absolute http(s) URL", reason="not_http")
    if parts.username is not None or parts.password is not None:
        raise err(f"{field} must not contain credentials", reason="credentials")
    if any(c <= " " or c == "\x7f" for c in url):
        raise err(f"{field} must not contain spaces or control characters",
                  reason="bad_characters")
    try:
        port = parts.port or DEFAULT_PORTS[parts.scheme]
    except ValueError:
        raise err(f"{field} has an invalid port", reason="bad_port") from None
    if not 0 < port < 65536:
        raise err(f"{field} has an invalid port", reason="bad_port")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    host = parts.hostname
    ip: IPAddress | None
    try:
        ip = ipaddress.ip_address(host)  # a scoped IPv6 literal keeps its scope id here
    except ValueError:
        ip = None
    if ip is None:
        try:
            host = host.rstrip(".").encode("idna").decode("ascii").lower() + (
                "." if host.endswith(".") else "")
        except UnicodeError:
            raise err(f"{field} host {parts.hostname!r} does not resolve",
                      reason="unresolvable") from None
    return _Parsed(parts.scheme, host, port, path, ip)


def _legacy_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """``127.1``, ``2130706433``, ``0x7f000001``, ``0177.0.0.1``: forms that inet_aton (and so
    a resolver) reads as an IPv4 address though ``ipaddress`` does not."""
    if not host or not all(c in "0123456789abcdefxABCDEFX." for c in host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def _is_loopback_name(host: str) -> bool:
    h = host.rstrip(".").lower()
    return h == "localhost" or h.endswith(".localhost")


def _vet(url: str, *, field: str, err: type[URLPolicyError], allowed: AddressPredicate,
         strict: bool, resolve: bool, resolver: Resolver) -> VettedURL | None:
    p = _parse(url, field, err)
    if p.ip is not None:
        addrs: list[IPAddress] = [p.ip]
    else:
        legacy = _legacy_ipv4(p.host)
        if strict and _is_loopback_name(p.host):
            raise err(f"{field} points to a loopback address", reason="loopback_name")
        if legacy is not None:
            addrs = [legacy]
        elif not resolve:
            return None
        else:
            try:
                infos = resolver(p.host, p.port, 0, socket.SOCK_STREAM)
                addrs = [_parse_ip(str(i[4][0])) for i in infos]
            except (OSError, UnicodeError, ValueError):
                addrs = []
            if not addrs:
                raise err(f"{field} host {p.host!r} does not resolve", reason="unresolvable",
                          retryable=True)
    # Every address must pass: the order of DNS answers is the attacker's to choose.
    for a in addrs:
        if not allowed(a):
            raise err(f"{field} resolves to a non-public address ({a})",
                      reason="non_public_address")
    pinned: list[str] = []
    for a in addrs:
        if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
            a = a.ipv4_mapped
        s = str(a)
        if s not in pinned:
            pinned.append(s)
    return VettedURL(url=url, scheme=p.scheme, host=str(p.ip) if p.ip is not None else p.host,
                     port=p.port, path_with_query=p.path_with_query, addresses=tuple(pinned))


def resolve_vetted(url: str, *, allow_private: bool = False,
                   resolver: Resolver = socket.getaddrinfo,
                   is_allowed: AddressPredicate | None = None,
                   field: str = "url") -> VettedURL:
    """Parse ``url``, resolve its host once with ``resolver`` (called like
    ``socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)``) and vet every address.

    Raises :class:`URLPolicyError` (``retryable`` only when the name did not resolve).
    ``is_allowed`` overrides the address policy (see :func:`address_policy`); the
    ``localhost`` name check applies only under the default public-only policy.
    """
    vetted = _vet(url, field=field, err=URLPolicyError,
                  allowed=address_policy(allow_private, is_allowed),
                  strict=is_allowed is None and not allow_private, resolve=True,
                  resolver=resolver)
    assert vetted is not None
    return vetted


def check_outbound_url(url: str, *, allow_private: bool = False, resolve: bool = True,
                       field: str = "url", error: type[URLPolicyError] = URLPolicyError,
                       resolver: Resolver = socket.getaddrinfo) -> str:
    """The submission-time check: returns ``url`` unchanged or raises ``error``.

    With ``allow_private`` only the syntax is checked. Without ``resolve`` a host name is not
    looked up (IP literals, legacy numeric forms and ``localhost`` names are still judged).
    Passing this check does not make a later request safe: send it with
    :func:`resolve_vetted` + :func:`open_pinned`.
    """
    if allow_private:
        _parse(url, field, error)
        return url
    _vet(url, field=field, err=error, allowed=is_public_address, strict=True, resolve=resolve,
         resolver=resolver)
    return url


def check_callback_url(url: str, allow_private: bool = False, resolve: bool = True) -> str:
    """:func:`check_outbound_url` for the ``callback_url`` field (raises
    :class:`CallbackURLError`, code ``invalid_callback_url``)."""
    return check_outbound_url(url, allow_private=allow_private, resolve=resolve,
                              field="callback_url", error=CallbackURLError)


# ------------------------------------------------------------------------------ requests


class DeadlineExceeded(TimeoutError):
    """The whole request took longer than its deadline (a peer trickling bytes)."""


def _connect_any(addresses: Sequence[str], port: int, timeout: float | None,
                 deadline: float | None) -> socket.socket:
    """A TCP connection to the first of ``addresses`` that accepts one. The addresses are
    numeric: ``AI_NUMERICHOST`` guarantees no name lookup happens here."""
    last: OSError | None = None
    for addr in addresses:
        t = timeout
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded("deadline exceeded while connecting")
            t = left if t is None else min(t, left)
        try:
            family, type_, proto, _, sockaddr = socket.getaddrinfo(
                addr, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)[0]
            sock = socket.socket(family, type_, proto)
        except OSError as e:
            last = e
            continue
        try:
            sock.settimeout(t)
            sock.connect(sockaddr)
            sock.settimeout(timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
        except OSError as e:
            sock.close()
            last = e
    if last is None:
        raise OSError("no address to connect to")
    raise last


class _PinnedMixin:
    """``connect()`` opens a socket to a vetted address, never to ``self.host``; everything
    else (the ``Host`` header, SNI) still uses ``self.host``."""

    _addresses: tuple[str, ...]
    _deadline: float | None
    _aborted: bool
    host: str
    port: int
    timeout: float | None
    sock: Any

    def _pin(self, addresses: Sequence[str], deadline: float | None) -> None:
        if not addresses:
            raise ValueError("no vetted address to connect to")
        self._addresses = tuple(addresses)
        self._deadline = deadline
        self._aborted = False
        self._abort_lock = threading.Lock()

    def _raw_connect(self) -> socket.socket:
        return _connect_any(self._addresses, self.port, self.timeout, self._deadline)

    def _set_sock(self, sock: socket.socket) -> None:
        with self._abort_lock:
            self.sock = sock
            aborted = self._aborted
        if aborted:
            raise DeadlineExceeded("deadline exceeded")

    def abort(self) -> None:
        """Unblock whatever the request thread is waiting on (called by the deadline timer)."""
        with self._abort_lock:
            self._aborted = True
            sock = self.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the raw fd, even under TLS


class PinnedHTTPConnection(_PinnedMixin, http.client.HTTPConnection):
    def __init__(self, host: str, port: int, addresses: Sequence[str], *,
                 timeout: float | None = 10.0, deadline: float | None = None):
        super().__init__(host, port, timeout=timeout)
        self._pin(addresses, deadline)

    def connect(self) -> None:
        self._set_sock(self._raw_connect())


class PinnedHTTPSConnection(_PinnedMixin, http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, addresses: Sequence[str], *,
                 timeout: float | None = 10.0, deadline: float | None = None,
                 context: ssl.SSLContext | None = None):
        ctx = context if context is not None else ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=ctx)
        self._ssl_ctx = ctx
        self._pin(addresses, deadline)

    def connect(self) -> None:
        raw = self._raw_connect()
        self._set_sock(raw)  # so that abort() can interrupt the handshake too
        try:
            # SNI and certificate verification against the host name of the URL, not the IP
            tls = self._ssl_ctx.wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise
        self._set_sock(tls)


@contextlib.contextmanager
def open_pinned(vetted: VettedURL, method: str = "GET", body: bytes | None = None,
                headers: Mapping[str, str] | None = None, timeout: float | None = 10.0, *,
                deadline_s: float | None = None,
                ssl_context: ssl.SSLContext | None = None,
                ) -> Iterator[http.client.HTTPResponse]:
    """Send one request to ``vetted`` and yield the response (read it inside the block).

    The connection goes to ``vetted.addresses`` only (the first that accepts), with
    ``Host: vetted.host[:port]``; for https the TLS handshake uses SNI ``vetted.host`` and
    verifies the certificate against it (``ssl_context``, default
    :func:`ssl.create_default_context`). ``timeout`` bounds each socket operation,
    ``deadline_s`` the whole exchange including the reads done inside the block
    (:class:`DeadlineExceeded`). Redirects are returned, never followed.
    """
    deadline = time.monotonic() + deadline_s if deadline_s is not None else None
    conn: PinnedHTTPConnection | PinnedHTTPSConnection
    if vetted.scheme == "https":
        conn = PinnedHTTPSConnection(vetted.host, vetted.port, vetted.addresses,
                                     timeout=timeout, deadline=deadline, context=ssl_context)
    elif vetted.scheme == "http":
        conn = PinnedHTTPConnection(vetted.host, vetted.port, vetted.addresses,
                                    timeout=timeout, deadline=deadline)
    else:
        raise URLPolicyError(f"unsupported scheme {vetted.scheme!r}", reason="not_http")
    timer = None
    if deadline_s is not None:
        timer = threading.Timer(max(deadline_s, 0.0), conn.abort)
        timer.daemon = True
        timer.start()
    try:
        hdrs = {"Connection": "close", **(headers or {})}
        conn.request(method, vetted.path_with_query, body=body, headers=hdrs)
        resp = conn.getresponse()
        if conn._aborted:  # the shutdown may read as a clean end of the headers
            raise DeadlineExceeded("deadline exceeded")
        yield resp
        if conn._aborted:  # ... or of the body
            raise DeadlineExceeded("deadline exceeded")
    except DeadlineExceeded:
        raise
    except (OSError, http.client.HTTPException) as e:
        if conn._aborted:
            raise DeadlineExceeded("deadline exceeded") from e
        raise
    finally:
        if timer is not None:
            timer.cancel()
        conn.close()


# ------------------------------------------------------------------------------ redirects

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class RedirectRefused(URLPolicyError):
    """A redirect that :func:`open_following` will not follow: its target failed the policy
    (``reason`` as for :class:`URLPolicyError`), or ``too_many_redirects``, ``no_location``,
    ``downgrade`` (https to http)."""

    code = "redirect_refused"


@contextlib.contextmanager
def open_following(url: str, method: str = "GET", headers: Mapping[str, str] | None = None,
                   timeout: float | None = 10.0, *, max_redirects: int = 5,
                   allow_private: bool = False, resolver: Resolver = socket.getaddrinfo,
                   is_allowed: AddressPredicate | None = None, deadline_s: float | None = None,
                   ssl_context: ssl.SSLContext | None = None, field: str = "url",
                   ) -> Iterator[tuple[VettedURL, http.client.HTTPResponse]]:
    """:func:`open_pinned` for body-less requests (GET, HEAD) that follows redirects, each hop
    vetted like the first: the target is resolved once by :func:`resolve_vetted` with the same
    policy and connected to pinned. Yields ``(vetted URL of the last hop, response)``.

    Why not ``urllib``'s redirect handling: it resolves every hop again at connect time (the
    rebinding window) and would follow a public URL's redirect to ``http://10.0.0.1/``.
    Raises :class:`RedirectRefused` for a refused hop (never for the first URL, whose refusal
    is the plain :class:`URLPolicyError` of :func:`resolve_vetted`), :class:`DeadlineExceeded`
    when ``deadline_s`` (all hops together) runs out. Callbacks keep using :func:`open_pinned`,
    which never follows a redirect.
    """
    if method not in ("GET", "HEAD"):
        raise ValueError("open_following only sends GET or HEAD")
    deadline = time.monotonic() + deadline_s if deadline_s is not None else None
    vetted = resolve_vetted(url, allow_private=allow_private, resolver=resolver,
                            is_allowed=is_allowed, field=field)
    for hop in range(max_redirects + 1):
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            raise DeadlineExceeded("deadline exceeded while following redirects")
        with open_pinned(vetted, method, headers=headers, timeout=timeout, deadline_s=left,
                         ssl_context=ssl_context) as resp:
            if resp.status not in REDIRECT_STATUSES:
                yield vetted, resp
                return
            location = resp.getheader("Location")
        if not location:
            raise RedirectRefused(f"{field} answered {resp.status} without a Location",
                                  reason="no_location")
        if hop == max_redirects:
            raise RedirectRefused(f"{field} redirected more than {max_redirects} times",
                                  reason="too_many_redirects")
        target = urljoin(vetted.url, location.strip())
        if vetted.scheme == "https" and urlsplit(target).scheme == "http":
            raise RedirectRefused(f"{field} redirected from https to http",
                                  reason="downgrade")
        try:
            vetted = resolve_vetted(target, allow_private=allow_private, resolver=resolver,
                                    is_allowed=is_allowed, field=f"{field} redirect")
        except URLPolicyError as e:
            raise RedirectRefused(str(e), reason=e.reason, retryable=e.retryable) from None
    raise AssertionError("unreachable")  # pragma: no cover
