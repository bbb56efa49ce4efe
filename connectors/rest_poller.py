"""REST poller source: a department's system that exposes its changed records over HTTP.

The digital city-management case system does not push: it answers "what changed since
this point?". The poller asks it every ``interval_s`` and publishes each changed case as a
``city_case`` record (or the connector's ``event_type``).

The HTTP contract (the field names are settings; their defaults are shown)::

    GET {url}?updated_since=<ISO-8601 UTC, milliseconds>&after_id=<id>&limit=<n>
    Authorization: Bearer <token>                  (only with bearer_token)

    200 {"items": [<record>, ...], "next": <URL string or null>}

- A *position* is the pair (``updated_at``, ``case_id``) of an item. The answer holds the
  items strictly after the pair (``updated_since``, ``after_id``), ordered by that pair
  ascending: by time first (milliseconds), then by id. Ids compare as integers when both
  are integers, otherwise as strings in code-point order (in PostgreSQL:
  ``ORDER BY updated_at, case_id COLLATE "C"``; canonical lowercase UUIDs sort the same
  in every collation). The id is the tie-breaker: many items may share a millisecond.
- ``updated_since`` is sent as ``2026-11-23T08:30:00.123Z``; the server compares its
  times truncated to milliseconds. On the very first poll (no stored position) both
  parameters are left out: everything, from the beginning. ``url`` may carry query
  parameters of its own (``?district=HUANGPU``); they are kept.
- ``next``, when not null, is the absolute or relative URL of the following page of the
  same answer; the poller follows it (same origin as ``url`` only: the bearer token goes
  nowhere else) until it is null, then waits ``interval_s`` and asks again from the last
  item it took. A page may be shorter than ``limit``; ``next`` alone says whether more
  follows.
- Each item is a record in the bus's JSON form (as ``bus publish`` takes it: times as
  RFC 3339 strings or epoch milliseconds, unions without Avro's wrapping); its
  ``updated_at`` may be an RFC 3339 string with an offset or epoch milliseconds.
- An item must not appear later with a position before one the server already answered:
  a server whose writes commit out of time order answers only up to a safety margin
  behind its clock (a case written late with an older ``updated_at`` would be missed).

The poller's side:

- Each item is published and acknowledged by the broker before the next; its position
  is then the connector's position, stored (offsets topic) after each page and when the
  connector stops, as ``{"updated_since": "<ISO ms Z>", "after_id": <id>}``. A restart
  asks from the stored position: nothing is skipped; after a crash, at most the items of
  the page being published are published again (at least once).
- An item not strictly after the last position taken is a repeat (a server that ignores
  ``after_id``, or sorts ids otherwise) and is skipped; such items are counted
  (``skipped``) and logged as a warning.
- An item that cannot become a record (not an object, no usable ``updated_at`` or id,
  not valid for the event type) goes to the dead-letter topic (``errors.tolerance: all``)
  with the page URL as ``__connect.errors.topic`` and in the ``rest_url`` header, its id
  as the key; the poller goes on past it. ``errors.tolerance: none`` stops it there.
- 5xx, 408, timeouts, dropped connections and answers that are not the JSON above are
  retried with backoff (``errors.retry.*``); 429 and 503 wait at least their Retry-After.
  The case system is never given up on: once ``errors.retry.timeout`` is spent the error
  is reported and the poller keeps asking every ``errors.retry.delay.max.ms``. Other 4xx
  answers (a wrong URL or token) stop the connector with the answer.
- The token is read from ``env:``/``file:`` at start and is never logged, shown in the
  status or put in an error message.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import httpx
from pydantic import Field

from bus import __version__
from bus.connect.answers import excerpt, retry_after_s
from bus.connect.base import Source, SourceContext
from bus.connect.config import ConnectorConfig, SecretRef
from bus.connect.exceptions import ConnectorError, ConnectorFailed, Interrupted
from bus.connect.records import RawRecord
from bus.errors import BusError
from bus.kafka.exceptions import KafkaError
from bus.registry.exceptions import RegistryUnreachable

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
#: What a 4xx answer that is not retried asks the operator to fix.
_HINTS = {401: "check bearer_token", 403: "check bearer_token", 404: "check url", 405: "check url", 410: "check url"}
_REFUSED = "the case system refuses the request: fix url or the server"
_FIELD_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]*$"


class RestPollerConfig(ConnectorConfig):
    """Settings of a `rest_poller`."""

    url: str = Field(
        pattern=r"^https?://[^\s/?#]+(/\S*)?$",
        description="The changes endpoint of the department's system (see the connector's HTTP contract).",
        examples=["https://chengguan.example.gov.cn/api/cases/changes"],
    )
    interval_s: float = Field(
        10.0, gt=0, le=86_400,
        description="Seconds between polls once the last page was read.", examples=[10, 60],
    )
    limit: int = Field(100, ge=1, le=10_000, description="Items asked for per page (`limit=`).", examples=[100])
    timeout_s: float = Field(
        10.0, gt=0, le=300, description="Seconds to wait for an answer before retrying.", examples=[10, 30]
    )
    bearer_token: SecretRef | None = Field(
        None, description="Sent as `Authorization: Bearer <token>` (env:NAME or file:PATH).",
        examples=["env:CHENGGUAN_API_TOKEN"],
    )
    event_type: str | None = Field(
        None, description="Event type of the items. Default: the connector's only `publishes` type.",
        examples=["city_case"],
    )
    cursor_field: str = Field(
        "updated_at", pattern=_FIELD_NAME,
        description="Item field holding the time of its last change (RFC 3339 or epoch milliseconds).",
        examples=["updated_at"],
    )
    id_field: str = Field(
        "case_id", pattern=_FIELD_NAME,
        description="Item field holding its id, the tie-breaker between items of the same millisecond.",
        examples=["case_id"],
    )
    items_field: str = Field("items", pattern=_FIELD_NAME, description="Answer field holding the list of items.",
                             examples=["items"])
    next_field: str = Field("next", pattern=_FIELD_NAME,
                            description="Answer field holding the next page's URL (null on the last page).",
                            examples=["next"])


class PollFailed(ConnectorError):
    """A request to the department's system that did not give a page. ``retry_after``: the
    server's Retry-After, in seconds."""

    def __init__(self, message: str, *, retriable: bool, retry_after: float | None = None) -> None:
        self.retriable = retriable
        self.retry_after = retry_after
        super().__init__(message)


class ItemInvalid(ConnectorError):
    """An item of an answer that cannot become a record."""


@dataclass(frozen=True)
class Cursor:
    """A position: an item's change time (epoch ms) and id."""

    at_ms: int
    id: str | int

    @property
    def key(self) -> tuple[int, int, int | str]:
        """The contract's order: time, then integers before strings, each in its own order."""
        return (self.at_ms, 0, self.id) if isinstance(self.id, int) else (self.at_ms, 1, self.id)

    def params(self) -> dict[str, str]:
        return {"updated_since": iso_ms(self.at_ms), "after_id": str(self.id)}

    def position(self) -> dict[str, Any]:
        return {"updated_since": iso_ms(self.at_ms), "after_id": self.id}


@dataclass(frozen=True)
class Page:
    url: str
    items: list[Any]
    next: str | None


def iso_ms(at_ms: int) -> str:
    return (_EPOCH + dt.timedelta(milliseconds=at_ms)).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch_ms(value: Any) -> int:
    """Epoch milliseconds of an RFC 3339 time with an offset, or of epoch milliseconds;
    ValueError saying what is wrong."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an RFC 3339 time or epoch milliseconds, got {json.dumps(value)[:40]}")
    try:
        parsed = dt.datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        raise ValueError(f"{value[:40]!r} is not an RFC 3339 time") from None
    if parsed.tzinfo is None:
        raise ValueError(f"{value[:40]!r} has no UTC offset")
    return (parsed - _EPOCH) // dt.timedelta(milliseconds=1)


class RestPoller(Source):
    """Polls a department system's changes endpoint and publishes each changed item."""

    config_model: ClassVar[type[ConnectorConfig]] = RestPollerConfig

    def __init__(self, config: ConnectorConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        assert isinstance(config, RestPollerConfig)
        self.config: RestPollerConfig = config
        self.event_type = config.event_type or self._only_type()
        self.check_publishes(self.event_type)
        self._origin = _origin(httpx.URL(config.url))
        self._client: httpx.Client | None = None
        self._cursor: Cursor | None = None
        self._unplaced: set[bytes] = set()  # dead-lettered items without a position, since the cursor last moved
        self.polls = 0
        self.skipped = 0
        self.last_error: str | None = None

    def _only_type(self) -> str:
        publishes = self.context.connector.publishes or []
        if len(publishes) != 1:
            raise ConnectorError(
                f"connector {self.name!r} publishes {', '.join(publishes)}: set `event_type` in its config to the "
                "type of the items"
            )
        return publishes[0]

    # -- lifecycle -----------------------------------------------------------------------

    def setup(self) -> None:
        self._cursor = self._stored_cursor()
        headers = {"User-Agent": f"citybus/{__version__}", "Accept": "application/json"}
        if self.config.bearer_token is not None:
            headers["Authorization"] = f"Bearer {self.config.bearer_token.get_secret_value()}"
        self._client = httpx.Client(timeout=self.config.timeout_s, headers=headers, follow_redirects=False)

    def _stored_cursor(self) -> Cursor | None:
        if self.position is None:
            return None
        try:
            after_id = self.position["after_id"]
            if not isinstance(after_id, (str, int)) or isinstance(after_id, bool):
                raise ValueError(f"after_id {after_id!r} is not a string or an integer")
            return Cursor(epoch_ms(self.position["updated_since"]), after_id)
        except (KeyError, TypeError, ValueError) as exc:
            raise ConnectorFailed(
                self.name, f"its stored position {self.position!r} is not {{updated_since, after_id}} ({exc}); "
                "remove the connector's key from the connector offsets topic to poll from the beginning"
            ) from None

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def status_detail(self) -> dict[str, Any]:
        return {"url": self.config.url, "event_type": self.event_type, "polls": self.polls,
                "skipped": self.skipped, "cursor": self._cursor.position() if self._cursor else None,
                "last_error": self.last_error}

    # -- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        self.mark_ready()
        while self.running:
            self.wait_while_paused()
            self.poll()
            self.context.stopping.wait(self.config.interval_s)

    def poll(self) -> None:
        """One poll: every page of the answer, published; the position stored after each."""
        url = httpx.URL(self.config.url)
        if self._cursor is not None:
            url = url.copy_merge_params(self._cursor.params())
        url = url.copy_merge_params({"limit": str(self.config.limit)})
        self.polls += 1
        while self.running and not self.paused:
            page = self._fetch(url)
            for number, item in enumerate(page.items, start=1):
                self._take(page.url, number, item)
            self.flush()
            if page.next is None:
                return
            url = self._follow(url, page.next)

    def _follow(self, current: httpx.URL, link: str) -> httpx.URL:
        target = current.join(link)
        if _origin(target) != self._origin:
            raise ConnectorFailed(
                self.name, f"the server's `{self.config.next_field}` link leads to {target.scheme}://{target.host}, "
                f"another origin than url ({self.config.url}); the poller follows links on the same origin only"
            )
        return target

    # -- HTTP ----------------------------------------------------------------------------

    def _fetch(self, url: httpx.URL) -> Page:
        """The page at ``url``, retried with backoff (and Retry-After) until it comes."""
        retries = self.context.retry.start()
        reported = False
        while True:
            self.check_running()
            try:
                page = self._get(url)
                self.last_error = None
                return page
            except PollFailed as exc:
                if not exc.retriable:
                    raise ConnectorFailed(self.name, str(exc)) from exc
                self.last_error = str(exc)
                delay = retries.next_delay()
                if delay is None:  # the budget is spent: say so once, keep asking at the longest wait
                    if not reported:
                        self.context.monitor.on_error(exc, stage="task_poll", url=str(url))
                        reported = True
                    delay = self.context.retry.backoff.max_s
                if exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                self.context.monitor.on_retry(None, exc, delay)
                if self.context.stopping.wait(delay):
                    raise Interrupted(f"connector {self.name!r} is stopping") from exc

    def _get(self, url: httpx.URL) -> Page:
        assert self._client is not None
        try:
            response = self._client.get(url)
        except httpx.TimeoutException as exc:
            raise PollFailed(f"{url} did not answer within {self.config.timeout_s:g} s", retriable=True) from exc
        except httpx.TransportError as exc:
            raise PollFailed(f"cannot read {url}: {type(exc).__name__}{': ' + str(exc) if str(exc) else ''}",
                             retriable=True) from exc
        status = response.status_code
        if status == 200:
            return self._page(url, response)
        retriable = status >= 500 or status in (408, 429)
        start = excerpt(response.content)
        what = "will retry" if retriable else _HINTS.get(status, _REFUSED)
        raise PollFailed(
            f"{url} answered {status}{': ' + start if start else ''} ({what})",
            retriable=retriable,
            retry_after=retry_after_s(response.headers.get("retry-after")) if status in (429, 503) else None,
        )

    def _page(self, url: httpx.URL, response: httpx.Response) -> Page:
        try:
            body = response.json()
        except ValueError:
            raise PollFailed(f"{url} answered 200 with a body that is not JSON: {excerpt(response.content)}",
                             retriable=True) from None
        items = body.get(self.config.items_field) if isinstance(body, dict) else None
        link = body.get(self.config.next_field) if isinstance(body, dict) else None
        if not isinstance(items, list) or not (link is None or isinstance(link, str) and link):
            raise PollFailed(
                f"{url} answered 200 but not {{\"{self.config.items_field}\": [...], \"{self.config.next_field}\": "
                f"<URL or null>}}: {excerpt(response.content)}", retriable=True,
            )
        return Page(str(url), items, link)

    # -- items ---------------------------------------------------------------------------

    def _take(self, url: str, number: int, item: Any) -> None:
        value = json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        item_id = item.get(self.config.id_field) if isinstance(item, dict) else None
        raw = RawRecord(topic=url, partition=None, offset=None,
                        key=None if item_id is None else str(item_id).encode("utf-8"), value=value,
                        headers=(("rest_url", url.encode("utf-8")),), timestamp_ms=int(time.time() * 1000))
        try:
            cursor = self._cursor_of(item)
        except ItemInvalid as exc:
            digest = hashlib.sha256(value).digest()
            if digest not in self._unplaced:  # asked again while nothing newer came: already dead-lettered
                self.dead_letter(raw, ItemInvalid(f"item {number} of {url}: {exc}"))
                self._unplaced.add(digest)
            return
        if self._cursor is not None and cursor.key <= self._cursor.key:
            self.skipped += 1
            self.log.warning("item not after the position skipped (the server repeats or misorders items)",
                             url=url, item=number, position=cursor.position(), after=self._cursor.position())
            return
        self._publish(raw, cursor, item, url, number)
        self._cursor = cursor
        self._unplaced.clear()

    def _cursor_of(self, item: Any) -> Cursor:
        if not isinstance(item, dict):
            raise ItemInvalid(f"expected a JSON object, got {json.dumps(item)[:40]}")
        if self.config.cursor_field not in item or self.config.id_field not in item:
            missing = [f for f in (self.config.cursor_field, self.config.id_field) if f not in item]
            raise ItemInvalid(f"no {' and no '.join(repr(f) for f in missing)} field (cursor_field, id_field)")
        item_id = item[self.config.id_field]
        if isinstance(item_id, bool) or not isinstance(item_id, (str, int)) or item_id == "":
            raise ItemInvalid(f"{self.config.id_field!r} is {json.dumps(item_id)[:40]}, not a string or an integer")
        try:
            return Cursor(epoch_ms(item[self.config.cursor_field]), item_id)
        except ValueError as exc:
            raise ItemInvalid(f"{self.config.cursor_field!r}: {exc}") from None

    def _publish(self, raw: RawRecord, cursor: Cursor, item: dict[str, Any], url: str, number: int) -> None:
        """Publish ``item`` (the bus being away is retried) or dead-letter it; either way the
        position moves past it."""
        retries = self.context.retry.start()
        while True:
            try:
                self.produce(self.event_type, item, position=cursor.position())
                return
            except (KafkaError, RegistryUnreachable) as exc:  # not the item's fault: keep it, retry
                delay = retries.next_delay()
                if delay is None:
                    delay = self.context.retry.backoff.max_s
                self.context.monitor.on_retry(raw, exc, delay)
                if self.context.stopping.wait(delay):
                    raise Interrupted(f"connector {self.name!r} is stopping; the item is asked for again") from exc
            except BusError as exc:  # RecordInvalid, too large...
                self.dead_letter(raw, ItemInvalid(f"item {number} of {url} ({self.config.id_field} "
                                                  f"{cursor.id}): {exc}"))
                self._advance(cursor.position())
                return


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


__all__ = ["Cursor", "ItemInvalid", "PollFailed", "RestPoller", "RestPollerConfig", "epoch_ms", "iso_ms"]
