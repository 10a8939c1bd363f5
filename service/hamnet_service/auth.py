"""API keys. With ``HAMNET_API_KEYS`` set, every ``/v1`` request needs
``Authorization: Bearer <key>`` and each job belongs to the key that created it: the job store
records only a hash of the key (the owner), so Redis never holds a usable secret and a
key cannot see, list or delete another key's jobs (they answer 404, not 403, so ids of other
keys' jobs cannot even be confirmed).

Without keys every caller is :data:`ANONYMOUS`: a job is then reachable only through its id
(128 random bits, a capability), jobs cannot be listed, and ``hamnet serve`` refuses to listen
on a non-loopback address unless ``HAMNET_ALLOW_ANONYMOUS_PUBLIC=true``."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from hamnet_service.errors import ApiError
from hamnet_service.settings import get_settings

ANONYMOUS = "anonymous"


def owner_of(key: str) -> str:
    return "k" + hashlib.sha256(key.encode()).hexdigest()[:24]


def _match(request: Request, keys: list[str]) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and token:
        for key in keys:
            if hmac.compare_digest(token.encode(), key.encode()):
                return key
    return None


def is_authenticated(request: Request) -> bool:
    """A valid API key was sent (always False without keys)."""
    keys = get_settings().keys
    return bool(keys) and _match(request, keys) is not None


def caller(request: Request) -> str:
    """FastAPI dependency: the owner id of the caller, or 401."""
    keys = get_settings().keys
    if not keys:
        return ANONYMOUS
    key = _match(request, keys)
    if key is not None:
        return owner_of(key)
    raise ApiError(
        401, "unauthorized", "a valid API key is required (Authorization: Bearer <key>)",
        headers={"WWW-Authenticate": "Bearer"},
    )
