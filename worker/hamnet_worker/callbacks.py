"""Completion callbacks: a signed POST of the public job record to the client's
``callback_url``.

The URL is checked when the job is submitted (gateway, :func:`check_callback_url`) and vetted
again for every delivery attempt (:func:`deliver_once`): the host is resolved once, every
address must be public (unless private callbacks are allowed), and the request is sent to that
vetted address itself with the original ``Host`` and TLS SNI
(:func:`hamnet_jobs.urls.open_pinned`), so a DNS answer that changes between the check and the
connection (DNS rebinding) cannot point the POST into the internal network. Redirects are not
followed (a 3xx is a failed, non-retryable delivery).

Receivers authenticate a delivery with the ``Hamnet-Signature`` header::

    Hamnet-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}." + raw body)>

where ``secret`` is the caller's webhook secret, :func:`signing_secret` of the service's
master key and the job's owner (the gateway can show callers their own secret, a worker
recomputes it from the job; no secret is ever stored with a job). :func:`verify` is the
reference check (constant-time compare, 5 minutes of clock tolerance). ``Hamnet-Delivery``
carries an id that stays the same across the retries of one delivery, for de-duplication.

Retries are driven by the caller (a Celery task): :data:`MAX_ATTEMPTS` attempts at most, the
n-th after :func:`backoff_s` seconds, only while :attr:`DeliveryAttempt.retryable`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import http.client
import json
import random
import socket
import ssl
import time
import uuid
from dataclasses import asdict, dataclass

from hamnet_jobs.urls import (
    AddressPredicate,
    CallbackURLError,
    Resolver,
    URLPolicyError,
    check_callback_url,
    open_pinned,
    resolve_vetted,
)

__all__ = [
    "MAX_ATTEMPTS", "SIGNATURE_HEADER", "DELIVERY_HEADER", "CallbackDeliveryError",
    "CallbackURLError", "DeliveryAttempt", "backoff_s", "check_callback_url", "deliver_once",
    "next_attempt_in", "post_callback", "sign", "signing_secret", "verify",
]

SIGNATURE_HEADER = "Hamnet-Signature"
DELIVERY_HEADER = "Hamnet-Delivery"
USER_AGENT = "hamnet-worker"
DEFAULT_TOLERANCE_S = 300

MAX_ATTEMPTS = 5
_SCHEDULE_S = (0.0, 10.0, 30.0, 90.0, 270.0)  # before attempt 1, 2, ... MAX_ATTEMPTS
_JITTER = 0.2  # +-20 %
_MAX_RESPONSE_READ = 1024


# ------------------------------------------------------------------------------ signatures


def signing_secret(master_key: str | bytes, owner: str) -> str:
    """The webhook secret of one API key (``owner``): ``whsec_`` + hex
    HMAC-SHA256(master_key, owner).

    Deterministic, so nothing is stored: the gateway shows it to its owner, a worker recomputes
    it from the job's owner. The derivation itself lives in :mod:`hamnet_jobs.webhooks`, which
    the gateway uses too, so both sides always agree; this adds the refusal of an empty key.
    """
    from hamnet_jobs.webhooks import signing_secret as derive

    if not master_key:
        raise ValueError("the webhook master key is empty")
    return derive(master_key, owner)


def _mac(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``Hamnet-Signature`` value: ``t=<timestamp>,v1=<hex HMAC-SHA256 of "t." + body>``
    (the key is the whole secret string, prefix included)."""
    return f"t={int(timestamp)},v1={_mac(secret, int(timestamp), body)}"


def verify(secret: str, header: str, body: bytes, tolerance_s: float = DEFAULT_TOLERANCE_S,
           now: float | None = None) -> bool:
    """Whether ``header`` (a ``Hamnet-Signature`` value) signs ``body`` with ``secret`` at a
    timestamp within ``tolerance_s`` of ``now``. Several ``v1`` entries are accepted (any one
    may match); a malformed header is simply invalid."""
    if not secret or not isinstance(header, str) or len(header) > 4096:
        return False
    ts: int | None = None
    sigs: list[str] = []
    for item in header.split(","):
        k, sep, v = item.strip().partition("=")
        if not sep:
            return False
        if k == "t":
            if ts is not None or not v.isascii() or not v.isdigit():
                return False
            ts = int(v)
        elif k == "v1":
            sigs.append(v)
    if ts is None or not sigs:
        return False
    now = time.time() if now is None else now
    if abs(now - ts) > tolerance_s:
        return False
    expected = _mac(secret, ts, body).encode()
    ok = False
    for s in sigs:  # no early exit: the time taken does not depend on which one matched
        ok |= hmac.compare_digest(expected, s.encode("ascii", "replace"))
    return ok


# ------------------------------------------------------------------------------ delivery


@dataclass(frozen=True)
class DeliveryAttempt:
    """The outcome of one POST, as stored on the job (``to_dict``).

    ``error`` is short and says only why (``"HTTP 500"``, ``"timed out"``, ``"refused: the host
    resolves to a non-public address"``), never an internal address or a traceback.
    """

    ok: bool
    http_status: int | None
    error: str | None
    retryable: bool
    at: str
    delivery_id: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


class CallbackDeliveryError(RuntimeError):
    """Raised by :func:`post_callback` when the delivery failed."""

    def __init__(self, attempt: DeliveryAttempt):
        super().__init__(f"callback delivery failed: {attempt.error}")
        self.attempt = attempt


_POLICY_ERRORS = {
    "non_public_address": "refused: the host resolves to a non-public address",
    "loopback_name": "refused: the host is a loopback name",
    "unresolvable": "the host does not resolve",
}


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def _classify(status: int) -> tuple[bool, str | None, bool]:
    """(ok, error, retryable) of an HTTP status."""
    if 200 <= status < 300:
        return True, None, False
    if 300 <= status < 400:
        return False, f"redirect not followed (HTTP {status})", False
    if status in (408, 429) or 500 <= status < 600:
        return False, f"HTTP {status}", True
    return False, f"HTTP {status}", False


def deliver_once(url: str, payload: dict, *, secret: str | None, allow_private: bool,
                 timeout: float = 10.0, resolver: Resolver = socket.getaddrinfo,
                 is_allowed: AddressPredicate | None = None, delivery_id: str | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> DeliveryAttempt:
    """One POST of ``payload`` as JSON to ``url``; never raises for a delivery failure.

    The URL is vetted again here (one resolution with ``resolver``, every address checked
    against ``is_allowed``, default: public addresses only, everything when
    ``allow_private``) and the request pinned to the vetted address. ``timeout`` bounds the
    whole attempt (connect, TLS, request, response headers and the first KiB of the body).

    2xx is success; 408, 429, 5xx, timeouts, connection and transient DNS errors are
    retryable; other statuses (3xx included: redirects are not followed), URL policy
    refusals and TLS certificate failures are not.
    """
    delivery_id = delivery_id or uuid.uuid4().hex
    at = _now_iso()

    def result(ok: bool, status: int | None, error: str | None, retryable: bool
               ) -> DeliveryAttempt:
        return DeliveryAttempt(ok=ok, http_status=status, error=error, retryable=retryable,
                               at=at, delivery_id=delivery_id)

    body = json.dumps(payload, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
               DELIVERY_HEADER: delivery_id}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, int(time.time()), body)
    try:
        vetted = resolve_vetted(url, allow_private=allow_private, resolver=resolver,
                                is_allowed=is_allowed, field="callback_url")
        with open_pinned(vetted, "POST", body, headers, timeout=timeout, deadline_s=timeout,
                         ssl_context=ssl_context) as resp:
            resp.read(_MAX_RESPONSE_READ)
            status = resp.status
    except URLPolicyError as e:
        return result(False, None, _POLICY_ERRORS.get(e.reason, "refused: invalid callback URL"),
                      e.retryable)
    except ssl.SSLCertVerificationError:
        return result(False, None, "TLS certificate verification failed", False)
    except ssl.SSLError:
        return result(False, None, "TLS handshake failed", True)
    except TimeoutError:
        return result(False, None, "timed out", True)
    except ConnectionRefusedError:
        return result(False, None, "connection refused", True)
    except http.client.HTTPException:
        return result(False, None, "invalid HTTP response", True)
    except OSError:
        return result(False, None, "connection failed", True)
    ok, error, retryable = _classify(status)
    return result(ok, status, error, retryable)


def backoff_s(attempt: int, *, rand: float | None = None) -> float:
    """Seconds to wait before the ``attempt``-th delivery attempt (1-based): 0, then about 10,
    30, 90 and 270 s (``MAX_ATTEMPTS`` = 5, about 6.7 minutes in all), each with +-20 %
    jitter so that retries to one receiver spread out. ``rand`` in [0, 1) replaces
    ``random.random()`` (0.5 = no jitter)."""
    if not 1 <= attempt <= MAX_ATTEMPTS:
        raise ValueError(f"attempt must be in 1..{MAX_ATTEMPTS}, not {attempt}")
    base = _SCHEDULE_S[attempt - 1]
    u = random.random() if rand is None else min(max(rand, 0.0), 1.0)
    return base * (1.0 - _JITTER + 2 * _JITTER * u)


def next_attempt_in(attempts_made: int, last: DeliveryAttempt, *,
                    rand: float | None = None) -> float | None:
    """Seconds until the next attempt after ``attempts_made`` attempts ending with ``last``,
    or None when the delivery is over (success, a non-retryable failure, or no attempt
    left)."""
    if last.ok or not last.retryable or attempts_made >= MAX_ATTEMPTS:
        return None
    return backoff_s(attempts_made + 1, rand=rand)


def post_callback(url: str, payload: dict, allow_private: bool, timeout: float = 10.0,
                  secret: str | None = None) -> DeliveryAttempt:
    """One attempt, raising :class:`CallbackDeliveryError` on failure (the pre-retry API)."""
    attempt = deliver_once(url, payload, secret=secret, allow_private=allow_private,
                           timeout=timeout)
    if not attempt.ok:
        raise CallbackDeliveryError(attempt)
    return attempt
