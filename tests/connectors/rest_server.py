"""A case system's changes endpoint on loopback, for the REST poller's tests.

A real threaded HTTP server that serves a mutable set of items by the poller's contract
(``connectors/rest_poller.py``): ``GET <path>?updated_since=&after_id=&limit=`` answers
the items strictly after the pair, ordered by (time, id), ``limit`` at a time, with a
``next`` link (keyset, relative by default) while more remain. It logs every request with
its arrival time, and can be told to answer a status (with Retry-After) or to drop the
connection in the middle of its answer for given requests.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit

PATH = "/api/cases/changes"
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def to_ms(value: Any) -> int:
    if isinstance(value, int):
        return value
    return (dt.datetime.fromisoformat(value.replace("Z", "+00:00")) - _EPOCH) // dt.timedelta(milliseconds=1)


def iso(at_ms: int) -> str:
    return (_EPOCH + dt.timedelta(milliseconds=at_ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _order(at_ms: int, item_id: str | int) -> tuple[int, int, Any]:
    return (at_ms, 0, item_id) if isinstance(item_id, int) else (at_ms, 1, item_id)


@dataclass
class Logged:
    """One request as the server received it (``at``: time.monotonic() on arrival)."""

    at: float
    target: str
    params: dict[str, str]
    headers: dict[str, str]
    outcome: str = ""


@dataclass(frozen=True)
class Fault:
    kind: Literal["status", "drop"]
    status: int = 500
    retry_after: str | None = None


@dataclass
class CaseServer:
    """Serves ``items`` (id -> (time ms, id, item as served)); ``faults`` maps a request's
    number (0-based, in arrival order) to what to do instead of answering."""

    token: str | None = None
    id_field: str = "case_id"
    cursor_field: str = "updated_at"
    next_base: str | None = None  # absolute next links on this base; None: relative links
    ignore_after_id: bool = False  # a server that answers every item at or after updated_since
    items: dict[Any, tuple[int, Any, Any]] = field(default_factory=dict)
    faults: dict[int, Fault] = field(default_factory=dict)
    log: list[Logged] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def base(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def url(self) -> str:
        return self.base + PATH

    # -- the data --------------------------------------------------------------------------

    def put(self, *items: dict[str, Any]) -> None:
        """Insert or replace cases (by id); their position is read from their own fields."""
        with self.lock:
            for item in items:
                item_id = item[self.id_field]
                self.items[item_id] = (to_ms(item[self.cursor_field]), item_id, item)

    def put_raw(self, item: Any, at_ms: int, item_id: str | int) -> None:
        """An item served as given (even one the poller cannot read) at position (at_ms, id)."""
        with self.lock:
            self.items[("raw", item_id)] = (at_ms, item_id, item)

    def fail(self, number: int, status: int, retry_after: str | None = None) -> None:
        self.faults[number] = Fault("status", status, retry_after)

    def drop(self, number: int) -> None:
        self.faults[number] = Fault("drop")

    def requests(self) -> list[Logged]:
        with self.lock:
            return list(self.log)

    def answer(self, params: dict[str, str]) -> dict[str, Any]:
        limit = int(params.get("limit", "100"))
        with self.lock:
            entries = sorted(self.items.values(), key=lambda e: _order(e[0], e[1]))
        if "updated_since" in params:
            since = to_ms(params["updated_since"])
            if "after_id" in params and not self.ignore_after_id:
                after = params["after_id"]
                ids = [e[1] for e in entries]
                after_id: Any = int(after) if ids and all(isinstance(i, int) for i in ids) else after
                entries = [e for e in entries if _order(e[0], e[1]) > _order(since, after_id)]
            else:
                entries = [e for e in entries if e[0] >= since]
        page, rest = entries[:limit], entries[limit:]
        link = None
        if rest:
            query = urlencode({"updated_since": iso(page[-1][0]), "after_id": str(page[-1][1]), "limit": limit})
            link = f"{self.next_base or ''}{PATH}?{query}"
        return {"items": [e[2] for e in page], "next": link}

    # -- serving ---------------------------------------------------------------------------

    def start(self) -> "CaseServer":
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                split = urlsplit(self.path)
                logged = Logged(time.monotonic(), self.path, dict(parse_qsl(split.query)),
                                {k.lower(): v for k, v in self.headers.items()})
                with owner.lock:
                    number = len(owner.log)
                    owner.log.append(logged)
                fault = owner.faults.get(number)
                if fault is not None and fault.kind == "drop":
                    logged.outcome = "dropped"
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "4096")
                    self.end_headers()
                    self.wfile.write(b'{"items": [{"case_id": "')
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                if fault is not None:
                    self.reply(fault.status, {"error": "injected by the test"}, logged, fault.retry_after)
                elif split.path != PATH:
                    self.reply(404, {"error": "no such endpoint"}, logged)
                elif owner.token is not None and logged.headers.get("authorization") != f"Bearer {owner.token}":
                    self.reply(401, {"error": "unauthorized"}, logged)
                else:
                    self.reply(200, owner.answer(logged.params), logged)

            def reply(self, status: int, body: Any, logged: Logged, retry_after: str | None = None) -> None:
                logged.outcome = str(status)
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                if retry_after is not None:
                    self.send_header("Retry-After", retry_after)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
