"""The digital city-management case system: its "what changed since" REST API.

It serves the contract the ``rest_poller`` connector reads (``connectors/rest_poller.py``)::

    GET <path>?updated_since=<ISO ms>&after_id=<case id>&limit=<n>
    200 {"items": [<city_case record>, ...], "next": <relative URL or null>}

Every step of a case is an item of its own (the change history), so a poller sees each
status a case went through: REPORTED, DISPATCHED (to a responsible unit), HANDLING,
RESOLVED, CLOSED. Items come in (``updated_at`` ms, ``case_id``) order, strictly after
the pair asked for. A change is stamped and stored under one lock, and an answer holds
only changes stamped before the current millisecond, so no change can later appear
before a position already answered (the contract's safety margin).
"""

from __future__ import annotations

import bisect
import datetime as dt
import heapq
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from bus.demo.samples import DISTRICTS, STREETS, city_case
from bus.demo.simulators.base import CHINA, JsonHandler, Pacer, QuietHTTPServer, Simulator
from bus.demo.simulators.exceptions import SimulatorError

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
LIFECYCLE = ("REPORTED", "DISPATCHED", "HANDLING", "RESOLVED", "CLOSED")
#: Category -> weight of new cases; the categories the departments subscribe to included.
CATEGORIES = {
    "MANHOLE_COVER": 12, "STREET_LIGHT": 15, "ROAD_SIGN": 8, "GREEN_SPACE": 8, "GARBAGE": 15, "STREET_VENDOR": 12,
    "ILLEGAL_CONSTRUCTION": 8, "WATER_POLLUTION": 5, "FIRE_HAZARD": 8, "PUBLIC_SAFETY": 9,
}
#: Categories of cases about one infrastructure component.
COMPONENTS = {"MANHOLE_COVER": "MH", "STREET_LIGHT": "SL", "ROAD_SIGN": "RS"}
MAX_LIMIT = 1000


def iso(at_ms: int) -> str:
    """An epoch-millisecond time as the case system writes it (UTC+8, milliseconds)."""
    return (_EPOCH + dt.timedelta(milliseconds=at_ms)).astimezone(CHINA).isoformat(timespec="milliseconds")


def epoch_ms(text: str) -> int:
    parsed = dt.datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
    if parsed.tzinfo is None:
        raise ValueError(f"{text!r} has no UTC offset")
    return (parsed - _EPOCH) // dt.timedelta(milliseconds=1)


class BadRequest(SimulatorError):
    """A request the case system answers 400."""


class CaseSystem(Simulator):
    """The case system: new cases at ``new_case_rate`` per second, each moving one step
    through its lifecycle every ``step_after_s`` (a range, seconds), served over HTTP."""

    name = "case-system"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "/api/cases/changes",
        token: str | None = None,
        seed: int = 0,
        new_case_rate: float = 0.5,
        step_after_s: tuple[float, float] = (5.0, 30.0),
        city_level_share: float = 0.15,
        tick_s: float = 0.1,
    ) -> None:
        super().__init__(seed=seed)
        self.host, self.port, self.path = host, port, path
        self.token = token
        self.new_case_rate = new_case_rate
        self.step_after_s = step_after_s
        self.city_level_share = city_level_share
        self.tick_s = tick_s
        self._lock = threading.Lock()
        self._keys: list[tuple[int, str]] = []  # (updated_at ms, case_id) of every change, in order
        self._items: list[dict[str, Any]] = []  # the change, same index
        self._cases: dict[str, dict[str, Any]] = {}  # case id -> its latest version
        self._steps: list[tuple[float, int, str]] = []  # (due, seq, case id): the next step of a case
        self._seq = itertools.count()
        self._server: QuietHTTPServer | None = None
        self._serving: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        system = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                status, body = system.answer(self.path, self.headers.get("Authorization"))
                challenge = {"WWW-Authenticate": 'Bearer realm="chengguan"'} if status == 401 else None
                self.reply(status, json.dumps(body, ensure_ascii=False).encode("utf-8"), challenge)

        try:
            self._server = QuietHTTPServer((self.host, self.port), Handler)
        except OSError as exc:
            raise SimulatorError(f"the case system cannot listen on {self.host}:{self.port}: {exc.strerror or exc}; "
                                 "choose another port (0: any free one)") from None
        self.port = self._server.server_address[1]
        self._serving = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                         name="bus-demo-case-system-http", daemon=True)
        self._serving.start()

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def loops(self) -> list[Callable[[], None]]:
        return [self._run]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            open_cases = sum(c["status"] != "CLOSED" for c in self._cases.values())
            return {**super().stats(), "changes": len(self._items), "open_cases": open_cases}

    def _run(self) -> None:
        pacer = Pacer(self.new_case_rate)
        while not self.stopping.wait(self.tick_s):
            for _ in range(pacer.due()):
                self.report()
            for case_id in self._due_steps():
                self.advance(case_id)

    # -- cases -------------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """A new case, REPORTED now; its next step is scheduled."""
        rng = self.rng
        case = city_case(rng)  # the samples' reporter, source and place; the rest set here
        category = rng.choices(list(CATEGORIES), weights=list(CATEGORIES.values()))[0]
        district = case["district"]
        case.update(
            case_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)), status="REPORTED", category=category,
            title=f"{category.replace('_', ' ').lower()} problem on {rng.choice(STREETS)}",
            level="CITY" if rng.random() < self.city_level_share else "DISTRICT",
        )
        case.pop("responsible_unit", None)
        if category in COMPONENTS:
            case["component_id"] = f"{COMPONENTS[category]}-{DISTRICTS[district][2]}-{rng.randint(1, 99999):05d}"
        stored = self._write(case, first=True)
        self.count("cases_reported")
        self._schedule(stored["case_id"])
        return stored

    def advance(self, case_id: str) -> dict[str, Any]:
        """The case's next step, now; then the one after, later (none after CLOSED)."""
        with self._lock:
            case = dict(self._cases[case_id])
        step = LIFECYCLE[LIFECYCLE.index(case["status"]) + 1]
        case["status"] = step
        if step == "DISPATCHED":
            case["responsible_unit"] = f"{case['district'].lower()}-{case['category'].lower().replace('_', '-')}-unit"
        stored = self._write(case)
        self.count(f"cases_{step.lower()}")
        if step != "CLOSED":
            self._schedule(case_id)
        return stored

    def _schedule(self, case_id: str) -> None:
        with self._lock:
            heapq.heappush(self._steps, (time.monotonic() + self.rng.uniform(*self.step_after_s), next(self._seq),
                                         case_id))

    def _due_steps(self) -> list[str]:
        now = time.monotonic()
        with self._lock:
            due = []
            while self._steps and self._steps[0][0] <= now:
                due.append(heapq.heappop(self._steps)[2])
            return due

    def _write(self, case: dict[str, Any], *, first: bool = False) -> dict[str, Any]:
        """Stamp the change now (after the case's previous one) and store it, under the lock."""
        with self._lock:
            at = time.time_ns() // 1_000_000
            if not first:
                at = max(at, epoch_ms(self._cases[case["case_id"]]["updated_at"]) + 1)
            else:
                case["reported_at"] = iso(at)
                case["respond_by"] = iso(at + 2 * 3_600_000)
                case["resolve_by"] = iso(at + 72 * 3_600_000)
            case["updated_at"] = iso(at)
            key = (at, case["case_id"])
            index = bisect.bisect_right(self._keys, key)
            self._keys.insert(index, key)
            self._items.insert(index, case)
            self._cases[case["case_id"]] = case
            return case

    # -- the API -----------------------------------------------------------------------------

    def answer(self, target: str, authorization: str | None) -> tuple[int, dict[str, Any]]:
        """(status, JSON body) of a GET of ``target`` (path and query)."""
        self.count("requests")
        parts = urlsplit(target)
        if parts.path != self.path:
            return 404, {"error": f"no such resource; the changes are at {self.path}"}
        if self.token is not None and authorization != f"Bearer {self.token}":
            self.count("unauthorized")
            return 401, {"error": "send Authorization: Bearer <token>"}
        try:
            since, after_id, limit = _params(parse_qs(parts.query, keep_blank_values=True))
        except BadRequest as exc:
            self.count("bad_requests")
            return 400, {"error": str(exc)}
        items, more = self.changes(since, after_id, limit)
        self.count("items_served", len(items))
        link = None
        if more:
            last = items[-1]
            link = self.path + "?" + urlencode({
                "updated_since": _iso_z(epoch_ms(last["updated_at"])), "after_id": last["case_id"], "limit": limit})
        return 200, {"items": items, "next": link}

    def changes(self, since_ms: int | None, after_id: str, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """Up to ``limit`` changes strictly after (``since_ms``, ``after_id``), stamped before
        the current millisecond; and whether more such changes follow."""
        with self._lock:
            horizon = bisect.bisect_left(self._keys, (time.time_ns() // 1_000_000, ""))
            start = 0 if since_ms is None else bisect.bisect_right(self._keys, (since_ms, after_id))
            end = min(horizon, start + limit)
            return [dict(i) for i in self._items[start:end]], end < horizon


def _iso_z(at_ms: int) -> str:
    return (_EPOCH + dt.timedelta(milliseconds=at_ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _params(query: dict[str, list[str]]) -> tuple[int | None, str, int]:
    def one(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    since_text, after_id, limit_text = one("updated_since"), one("after_id") or "", one("limit")
    since = None
    if since_text:
        try:
            since = epoch_ms(since_text)
        except ValueError:
            raise BadRequest(f"updated_since {since_text!r} is not an RFC 3339 time with an offset "
                             "(e.g. 2026-11-23T00:30:00.123Z)") from None
    elif after_id:
        raise BadRequest("after_id needs updated_since: send both, or neither for every change")
    try:
        limit = int(limit_text) if limit_text else 100
    except ValueError:
        raise BadRequest(f"limit {limit_text!r} is not a number") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    return since, after_id, limit
