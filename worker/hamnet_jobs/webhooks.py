"""Webhook secrets: one per API key, derived, never stored.

``secret = "whsec_" + HMAC-SHA256(master key, owner)``. The gateway shows a caller its own
secret (``GET /v1/webhook-secret``) and a worker recomputes it from the job's owner when it
signs a callback, so no secret is written into a job record. The master key is
``HAMNET_CALLBACK_SECRET`` or, when unset, a random key created once in Redis
(``hamnet:callback-key``) that every gateway and worker then shares.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from hamnet_jobs import keys


def master_key(client: Any, configured: str = "") -> str:
    if configured:
        return configured
    client.set(keys.CALLBACK_KEY, secrets.token_hex(32), nx=True)
    return client.get(keys.CALLBACK_KEY)


def signing_secret(master: str | bytes, owner: str) -> str:
    key = master.encode() if isinstance(master, str) else master
    return "whsec_" + hmac.new(key, owner.encode(), hashlib.sha256).hexdigest()
