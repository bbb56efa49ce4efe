"""HMAC-SHA256 body signatures, as the bus sends and accepts them.

The header (``X-Bus-Signature-256`` unless configured otherwise) carries
``sha256=<hex digest of HMAC-SHA256(key, raw body)>``, the form GitHub uses for its
webhooks, so a receiver checks it with a few lines in any language::

    expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
    hmac.compare_digest(expected, received)

A sender to the HTTP ingest also sends ``X-Bus-Timestamp: <Unix seconds>`` and signs
``<timestamp>.`` followed by the body (:func:`sign_request`), the way Slack and Stripe
sign: the ingest refuses a timestamp outside its window, so a captured request cannot
be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Bus-Signature-256"
TIMESTAMP_HEADER = "X-Bus-Timestamp"
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


def timestamped(timestamp: str, body: bytes) -> bytes:
    """What a timestamped signature covers: the timestamp as sent, a dot, then the body."""
    return timestamp.encode("ascii", "replace") + b"." + body


def sign_request(
    key: str | bytes, body: bytes, *, now: float | None = None, signature_header: str = SIGNATURE_HEADER
) -> dict[str, str]:
    """The headers of a signed request to the HTTP ingest: the timestamp and its signature."""
    stamp = str(int(time.time() if now is None else now))
    return {TIMESTAMP_HEADER: stamp, signature_header: sign(key, timestamped(stamp, body))}
