"""HMAC-SHA256 body signatures, as the bus sends and accepts them.

The header (``X-Bus-Signature-256`` unless configured otherwise) carries
``sha256=<hex digest of HMAC-SHA256(key, raw body)>``, the form GitHub uses for its
webhooks, so a receiver checks it with a few lines in any language::

    expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    hmac.compare_digest(expected, received)
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Bus-Signature-256"
PREFIX = "sha256="


def sign(key: str | bytes, body: bytes) -> str:
    secret = key.encode("utf-8") if isinstance(key, str) else key
    return PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(key: str | bytes, body: bytes, received: str | None) -> bool:
    """True if ``received`` (``sha256=<hex>``, or the bare hex) signs ``body`` with ``key``."""
    if not received:
        return False
    given = received.strip().lower()
    if not given.startswith(PREFIX):
        given = PREFIX + given
    return hmac.compare_digest(sign(key, body).encode("ascii"), given.encode("ascii", "replace"))
