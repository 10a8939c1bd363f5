"""Completion callbacks: a POST of the job record to the client's ``callback_url``.

The URL is checked twice, when the job is submitted (gateway) and again right before the POST
(worker), because DNS can change in between; loopback, private, link-local and reserved
addresses are refused unless explicitly allowed, so a job cannot be used to probe the internal
network (SSRF).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import urllib.request
from urllib.parse import urlsplit


class CallbackURLError(ValueError):
    code = "invalid_callback_url"


def check_callback_url(url: str, allow_private: bool = False, resolve: bool = True) -> str:
    if len(url) > 2048:
        raise CallbackURLError("callback_url is longer than 2048 characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CallbackURLError("callback_url must be an absolute http(s) URL")
    if parts.username or parts.password:
        raise CallbackURLError("callback_url must not contain credentials")
    if allow_private:
        return url
    host = parts.hostname
    try:
        addrs = [ipaddress.ip_address(host)]
    except ValueError:
        if host.lower() == "localhost" or host.lower().endswith(".localhost"):
            raise CallbackURLError("callback_url points to a loopback address") from None
        if not resolve:
            return url
        try:
            infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError):
            raise CallbackURLError(f"callback_url host {host!r} does not resolve") from None
        addrs = [ipaddress.ip_address(i[4][0].split("%")[0]) for i in infos]
    for a in addrs:
        if not a.is_global or a.is_multicast:
            raise CallbackURLError(f"callback_url resolves to a non-public address ({a})")
    return url


def post_callback(url: str, payload: dict, allow_private: bool, timeout: float = 10.0) -> None:
    """Best effort, no redirects followed (a redirect could point inside the network)."""
    check_callback_url(url, allow_private=allow_private)

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):  # noqa: ANN002, ANN003
            return None

    opener = urllib.request.build_opener(_NoRedirect)
    req = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "hamnet-worker"},
        method="POST",
    )
    with opener.open(req, timeout=timeout) as resp:  # noqa: S310 (scheme checked above)
        resp.read(1024)
