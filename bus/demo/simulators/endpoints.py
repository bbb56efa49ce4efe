"""The departments' webhook endpoints that the ``http_webhook_sink`` connectors deliver to.

One HTTP server, one path per endpoint (``/hooks/<connector name>``), each with its own
HMAC key. Like a careful receiver it:

- refuses a body whose ``X-Bus-Signature-256`` is not the HMAC-SHA256 of the body with its
  key (401: the sink dead-letters it), and one without ``Idempotency-Key`` (400);
- processes each ``Idempotency-Key`` once: a redelivery is answered 200 and counted as a
  duplicate, not as a new event;
- checks the order per record key (``ce-subject``): the sink promises a key's records in
  order, so a record published (``ce-time``) before the key's previous one is counted as
  an order violation and kept as an example.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from bus.connect.signing import SIGNATURE_HEADER, verify
from bus.demo.simulators.base import JsonHandler, QuietHTTPServer, Simulator
from bus.demo.simulators.exceptions import SimulatorError

PREFIX = "/hooks/"
#: Order violations kept as examples, per endpoint.
EXAMPLES = 20


@dataclass
class Endpoint:
    """One department's endpoint and what it received."""

    name: str
    department: str
    hmac_key: str
    delivered: int = 0
    duplicates: int = 0
    bad_signature: int = 0
    bad_request: int = 0
    order_violations: int = 0
    examples: list[dict[str, str]] = field(default_factory=list)
    records: list[dict[str, Any]] = field(default_factory=list)  # kept only with keep_records
    _seen: set[str] = field(default_factory=set)
    _last_time: dict[str, dt.datetime] = field(default_factory=dict)

    def stats(self) -> dict[str, Any]:
        return {"department": self.department, "delivered": self.delivered, "duplicates": self.duplicates,
                "bad_signature": self.bad_signature, "bad_request": self.bad_request,
                "order_violations": self.order_violations}


class DepartmentEndpoints(Simulator):
    """The webhook receivers of the departments, on one loopback server."""

    name = "department-endpoints"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, keep_records: bool = False) -> None:
        super().__init__(seed=0)
        self.host, self.port = host, port
        self.keep_records = keep_records
        self.endpoints: dict[str, Endpoint] = {}
        self._lock = threading.Lock()
        self._server: QuietHTTPServer | None = None
        self._serving: threading.Thread | None = None

    def add(self, name: str, department: str, hmac_key: str) -> str:
        """Register an endpoint; returns its URL (known once the server listens: call after start())."""
        self.endpoints[name] = Endpoint(name, department, hmac_key)
        return self.url(name)

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}{PREFIX}{name}"

    def open(self) -> None:
        receiver = self

        class Handler(JsonHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, answer = receiver.receive(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                self.reply(status, json.dumps(answer).encode("utf-8"))

        try:
            self._server = QuietHTTPServer((self.host, self.port), Handler)
        except OSError as exc:
            raise SimulatorError(f"the department endpoints cannot listen on {self.host}:{self.port}: "
                                 f"{exc.strerror or exc}; choose another port (0: any free one)") from None
        self.port = self._server.server_address[1]
        self._serving = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                         name="bus-demo-endpoints-http", daemon=True)
        self._serving.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def stats(self) -> dict[str, Any]:
        with self._lock:
            per = {name: e.stats() for name, e in self.endpoints.items()}
        totals = {k: sum(s[k] for s in per.values())
                  for k in ("delivered", "duplicates", "bad_signature", "order_violations")}
        return {**super().stats(), **totals, "endpoints": per}

    def receive(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """(status, JSON answer) for one delivery; ``headers`` with lowercase names."""
        self.count("requests")
        endpoint = self.endpoints.get(path[len(PREFIX):]) if path.startswith(PREFIX) else None
        if endpoint is None:
            return 404, {"error": f"no endpoint at {path}"}
        with self._lock:
            if not verify(endpoint.hmac_key, body, headers.get(SIGNATURE_HEADER.lower())):
                endpoint.bad_signature += 1
                return 401, {"error": f"{SIGNATURE_HEADER} does not sign the body with this endpoint's key"}
            key = headers.get("idempotency-key")
            try:
                record = json.loads(body)
            except ValueError:
                record = None
            if not key or not isinstance(record, dict):
                endpoint.bad_request += 1
                return 400, {"error": "send a JSON object with an Idempotency-Key header"}
            if key in endpoint._seen:
                endpoint.duplicates += 1
                return 200, {"status": "duplicate", "idempotency_key": key}
            endpoint._seen.add(key)
            endpoint.delivered += 1
            if self.keep_records:
                endpoint.records.append(record)
            self._check_order(endpoint, headers, key)
            return 200, {"status": "accepted", "idempotency_key": key}

    @staticmethod
    def _check_order(endpoint: Endpoint, headers: dict[str, str], key: str) -> None:
        subject, published = headers.get("ce-subject"), headers.get("ce-time")
        if subject is None or published is None:
            return
        subject = unquote(subject)
        try:
            at = dt.datetime.fromisoformat(unquote(published))
        except ValueError:
            return
        previous = endpoint._last_time.get(subject)
        if previous is not None and at < previous:
            endpoint.order_violations += 1
            if len(endpoint.examples) < EXAMPLES:
                endpoint.examples.append({"key": subject, "previous": previous.isoformat(), "got": at.isoformat(),
                                          "idempotency_key": key})
            return
        endpoint._last_time[subject] = at
