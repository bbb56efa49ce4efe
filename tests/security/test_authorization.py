"""Who may publish what through the HTTP ingest connector, over real HTTP on loopback.

The police's connector (publishes camera_alarm and camera_status) is refused city_case,
the city management's type, with 403 and an audit line naming the connector, the
department, the type and the caller's address, on both endpoints and with either
credential, and nothing reaches city_case's topic. A caller without valid credentials
gets 401 before anything about event types is revealed. Bearer tokens and HMAC
signatures are checked in their variants (the spellings the documentation allows are
accepted, anything else refused), and no credential, right or wrong, is ever logged.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import random
import time
from collections.abc import Callable, MutableMapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import pytest
from structlog.testing import capture_logs

from bus.connect.signing import sign, sign_request, timestamped
from bus.consume.tail import tail
from bus.demo.samples import GENERATORS
from bus.kafka.admin import admin
from tests.fixtures.city import City
from tests.security.conftest import Ingest

CASE = GENERATORS["city_case"](random.Random(7))


def record(event_type: str, seed: int = 1) -> bytes:
    return json.dumps(GENERATORS[event_type](random.Random(seed))).encode()


def raw_post(ingest: Ingest, event_type: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> int:
    """The status of a POST whose header bytes are sent as given."""
    address = urlsplit(ingest.url)
    assert address.hostname is not None
    conn = http.client.HTTPConnection(address.hostname, address.port, timeout=10)
    try:
        conn.putrequest("POST", f"{address.path}/{event_type}")
        for name, value in [*headers, (b"Content-Length", str(len(body)).encode())]:
            conn.putheader(name, value)
        conn.endheaders(body)
        return conn.getresponse().status
    finally:
        conn.close()


def audit_lines(logs: Sequence[MutableMapping[str, Any]], event: str) -> list[MutableMapping[str, Any]]:
    return [line for line in logs if line.get("audit") and line["event"] == event]


def topic_records(city: City, event_type: str) -> list[Any]:
    """The records of the type's topic; none when the topic was never even created."""
    topic = city.topology.event_type(event_type).topic
    if topic not in admin(city.settings).list_topics(timeout=10).topics:
        return []
    return list(tail(city.settings, [topic], exit_at_end=True))


@pytest.mark.parametrize("batch", [False, True], ids=["single", "batch"])
@pytest.mark.parametrize("credential", ["bearer", "hmac"])
def test_the_police_cannot_publish_city_cases_and_the_attempt_is_audited(
    start_ingest: Callable[..., Ingest], security_city: City, credential: str, batch: bool
) -> None:
    ingest = start_ingest()
    payload = json.dumps(CASE).encode() + (b"\n" + json.dumps(CASE).encode() if batch else b"")
    headers = sign_request(ingest.hmac_key, payload) if credential == "hmac" else {}
    with capture_logs() as logs:
        answer = ingest.post("city_case", payload, batch=batch, auth=credential == "bearer", headers=headers)
    assert answer.status_code == 403, answer.text
    error = answer.json()["error"]
    assert "'police' may not publish city_case" in error and "'city_management'" in error

    refused = audit_lines(logs, "ingest refused")
    assert len(refused) == 1, logs
    line = refused[0]
    assert (line["connector"], line["department"], line["event_type"]) == ("skynet-platform", "police", "city_case")
    host, _, port = line["remote"].rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0
    assert line["log_level"] == "warning"

    assert ingest.post("camera_alarm", record("camera_alarm")).status_code == 202  # the credential itself works
    assert topic_records(security_city, "city_case") == []


def test_without_valid_credentials_it_is_401_before_anything_about_types_is_revealed(
    start_ingest: Callable[..., Ingest],
) -> None:
    """A forbidden type (403) and an unknown one (404) look the same as an allowed one to
    a caller that has not authenticated: 401, so types cannot be probed."""
    ingest = start_ingest()
    for event_type in ("camera_alarm", "city_case", "no_such_type"):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Bus-Signature-256": "sha256=" + "0" * 64}):
            with capture_logs() as logs:
                answer = ingest.post(event_type, json.dumps(CASE).encode(), auth=False, headers=headers)
            assert answer.status_code == 401, (event_type, headers, answer.text)
            assert "city_case" not in answer.text and "city_management" not in answer.text
            [line] = audit_lines(logs, "ingest unauthenticated")
            assert line["event_type"] == event_type and line["remote"].startswith("127.0.0.1:")
            assert (line["connector"], line["department"]) == ("skynet-platform", "police")
    assert ingest.post("no_such_type", b"{}").status_code == 404  # with the token: the truth


def test_bearer_token_variants(start_ingest: Callable[..., Ingest]) -> None:
    ingest = start_ingest()
    token = ingest.token
    body = record("camera_status")
    accepted: dict[str, str | bytes] = {
        "exact": f"Bearer {token}",
        "scheme in lower case (RFC 9110: case-insensitive)": f"bearer {token}",
        "several spaces after the scheme": f"Bearer   {token}",
    }
    refused: dict[str, str | bytes] = {
        "empty": "",
        "scheme only": "Bearer",
        "prefix of the token": f"Bearer {token[:-1]}",
        "token and one more character": f"Bearer {token}x",
        "another case": f"Bearer {token.upper()}",
        "no scheme": token,
        "basic scheme": f"Basic {token}",
        "the HMAC key as token": f"Bearer {ingest.hmac_key}",
        "two tokens": f"Bearer {token}, Bearer {token}",
        "not ASCII": b"Bearer \xff\xfe" + token.encode(),
    }
    #: Values httpx will not send, sent by http.client, which does; h11 in the server may
    #: refuse them itself (400). A trailing space is optional whitespace HTTP strips.
    malformed = {
        "scheme and a space": (b"Bearer ", {400, 401}),
        "NUL inside": (f"Bearer {token[:3]}\x00{token[3:]}".encode(), {400, 401}),
        "tab inside": (f"Bearer {token[:3]}\t{token[3:]}".encode(), {400, 401}),
        "token and a trailing space": (f"Bearer {token} ".encode(), {202}),
    }
    for name, value in accepted.items():
        assert ingest.post("camera_status", body, auth=False, headers={"Authorization": value}).status_code == 202, name
    with capture_logs() as logs:
        for name, value in refused.items():
            answer = ingest.post("camera_status", body, auth=False, headers={"Authorization": value})
            assert answer.status_code == 401, f"{name}: {answer.status_code} {answer.text}"
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        for name, (raw, expected) in malformed.items():
            status = raw_post(ingest, "camera_status", body, [(b"Authorization", raw)])
            assert status in expected, f"{name}: {status}"
    assert len(audit_lines(logs, "ingest unauthenticated")) >= len(refused)
    text = json.dumps(logs, default=str)
    assert token[4:] not in text and ingest.hmac_key[4:] not in text  # neither the right one nor its variants


def test_hmac_signature_variants(start_ingest: Callable[..., Ingest]) -> None:
    ingest = start_ingest()
    body = record("camera_status", 2)
    stamp = str(int(time.time()))
    good = sign(ingest.hmac_key, timestamped(stamp, body))
    digest = good.removeprefix("sha256=")
    accepted: dict[str, str | bytes] = {
        "sha256=<hex>": good,
        "bare hex (documented)": digest,
        "upper-case hex": "sha256=" + digest.upper(),
    }
    refused: dict[str, str | bytes] = {
        "empty": "",
        "prefix only": "sha256=",
        "truncated": good[:-2],
        "one more digit": good + "0",
        "another body's signature": sign(ingest.hmac_key, timestamped(stamp, body + b" ")),
        "the body alone signed (no timestamp in it)": sign(ingest.hmac_key, body),
        "signed with the token": sign(ingest.token, timestamped(stamp, body)),
        "signed with an empty key": sign(b"", timestamped(stamp, body)),
        "sha1 label": "sha1=" + digest,
        "sha512 of the body with the key":
            "sha256=" + hmac.new(ingest.hmac_key.encode(), timestamped(stamp, body), hashlib.sha512).hexdigest(),
        "not ASCII": b"sha256=" + digest[:-1].encode() + b"\xe9",
        "two signatures": f"{good},{good}",
    }
    for name, value in accepted.items():
        answer = ingest.post("camera_status", body, auth=False, headers={"X-Bus-Signature-256": value,
                                                                         "X-Bus-Timestamp": stamp})
        assert answer.status_code == 202, f"{name}: {answer.text}"
    for name, value in refused.items():
        answer = ingest.post("camera_status", body, auth=False, headers={"X-Bus-Signature-256": value,
                                                                         "X-Bus-Timestamp": stamp})
        assert answer.status_code == 401, f"{name}: {answer.status_code} {answer.text}"
    # The body changed after signing (one byte): refused.
    tampered = body.replace(b'"', b"'", 1) if body.count(b'"') else body + b" "
    assert ingest.post("camera_status", tampered, auth=False,
                       headers={"X-Bus-Signature-256": good, "X-Bus-Timestamp": stamp}).status_code == 401
    # A wrong bearer token is not rescued by a good signature: a presented token is checked.
    assert ingest.post("camera_status", body, auth=False,
                       headers={"Authorization": "Bearer wrong", "X-Bus-Signature-256": good,
                                "X-Bus-Timestamp": stamp}).status_code == 401


def test_a_captured_signed_request_cannot_be_replayed_later(
    start_ingest: Callable[..., Ingest], security_city: City,
) -> None:
    """The signature covers the timestamp; a timestamp outside the window is refused, so a
    request captured on the wire is worth nothing after 5 minutes (and a sender whose clock is
    wrong is told so)."""
    ingest = start_ingest()
    body = record("camera_status", 4)
    now = time.time()
    cases = {
        "captured 10 minutes ago": sign_request(ingest.hmac_key, body, now=now - 600),
        "stamped 10 minutes ahead": sign_request(ingest.hmac_key, body, now=now + 600),
        "no timestamp": {"X-Bus-Signature-256": sign_request(ingest.hmac_key, body)["X-Bus-Signature-256"]},
        "a newer timestamp on an old signature": {**sign_request(ingest.hmac_key, body, now=now - 600),
                                                  "X-Bus-Timestamp": str(int(now))},
        "not a number": {"X-Bus-Timestamp": "yesterday",
                         "X-Bus-Signature-256": sign(ingest.hmac_key, timestamped("yesterday", body))},
    }
    with capture_logs() as logs:
        for name, headers in cases.items():
            answer = ingest.post("camera_status", body, auth=False, headers=headers)
            assert answer.status_code == 401, f"{name}: {answer.status_code} {answer.text}"
    reasons = [line["reason"] for line in audit_lines(logs, "ingest unauthenticated")]
    assert sum("check the sender's clock" in r for r in reasons) == 2 and "bad signature" in reasons, reasons
    assert ingest.post("camera_status", body, auth=False, headers=sign_request(ingest.hmac_key, body)).status_code == 202
    assert len(topic_records(security_city, "camera_status")) == 1  # the refused ones published nothing


def test_signatures_of_the_body_alone_only_when_configured(start_ingest: Callable[..., Ingest]) -> None:
    """``signature_max_age_s: 0`` is for a sender that cannot add a timestamp (replayable)."""
    ingest = start_ingest(auth={"hmac_key": "env:SECURITY_INGEST_HMAC_KEY", "signature_max_age_s": 0})
    body = record("camera_status", 5)
    assert ingest.post("camera_status", body, auth=False,
                       headers={"X-Bus-Signature-256": sign(ingest.hmac_key, body)}).status_code == 202


@pytest.mark.parametrize(
    ("auth", "accepted_credential", "refused_credential"),
    [({"token": "env:SECURITY_INGEST_TOKEN"}, "bearer", "hmac"),
     ({"hmac_key": "env:SECURITY_INGEST_HMAC_KEY"}, "hmac", "bearer")],
    ids=["token only", "hmac key only"],
)
def test_a_connector_takes_only_the_credentials_it_is_configured_with(
    start_ingest: Callable[..., Ingest], auth: dict[str, str], accepted_credential: str, refused_credential: str
) -> None:
    ingest = start_ingest(auth=auth)
    body = record("camera_status", 3)

    def send(credential: str) -> int:
        if credential == "bearer":
            return ingest.post("camera_status", body).status_code
        return ingest.post("camera_status", body, auth=False,
                           headers=sign_request(ingest.hmac_key, body)).status_code

    assert send(accepted_credential) == 202
    assert send(refused_credential) == 401
