"""Dead letters: counting, showing and replaying them (``bus dlq``).

Every dead-letter topic of a topology's namespace is scanned: each connector's
(``bus-dlq-<connector>`` or its ``errors.deadletterqueue.topic.name``) and the router's
(``bus-router-dlq``). A dead letter is the failed record itself (key, value, original
headers) plus Kafka Connect's ``__connect.errors.*`` headers (see
:mod:`bus.connect.dlq`), which say where it came from and why it failed.

Replay sends dead letters of one connector to where they were going:

- a **sink**'s dead letters are delivered *through that connector again*: the replay
  builds the connector (from ``topology.yaml``, as the runner does) and hands it the
  records, decoded, in batches of their original partition, in offset order. Producing
  them back to the subscription topic would redeliver them to every sink of that
  subscription, and a retry topic would need the runner to consume a second topic; a
  direct delivery needs neither. The records keep their headers, so their CloudEvents id
  is the same: an idempotent sink (the webhook's ``Idempotency-Key``, the PostgreSQL
  sink's upsert by key) does not duplicate one that was in fact delivered before.
- a **source**'s dead letters are published to their event type's canonical topic, as
  the connector's department, checked and encoded by :class:`~bus.publish.Publisher`,
  under their original CloudEvents id (or, for input that never became an event, an id
  derived from the dead letter's position, the same at every replay).

A record that fails again goes through the connector's error policy: with
``errors.tolerance: all`` it is a new dead letter (its context headers name the same
original position); with ``none`` the replay stops there.

What was replayed is remembered in the compacted topic ``<ns.>bus-dlq-replayed``, keyed
by the dead letter's position (``<dlq topic>/<partition>/<offset>``): a replay skips what
an earlier one sent, whatever filters either used. Markers are written after each batch
was delivered (or dead-lettered again), so a replay cut short resends at most one batch,
and that resend carries the same ids.

Limits: a replayed record reaches a sink after newer records of its key may have; a
sink that upserts by key (PostgreSQL) then holds the replayed, older value. Replay a
key's dead letters before newer records of it matter, or check the sink afterwards.
A source's dead letter is published as a JSON object (or a wire-format record) of one
event type: ``ce_type`` of the dead letter, ``event_type`` given, or the connector's only
``publishes`` type; connector-specific parsing (MQTT routes) is not applied again.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from typing import Any, Literal

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, Producer, TopicPartition
from confluent_kafka import KafkaError as RdKafkaError

from bus.connect.assembly import Assembly, assemble
from bus.connect.base import Sink, Source
from bus.kafka.compacted import CompactedTopic
from bus.connect.dlq import HEADER_PREFIX, STAGE_TASK_POLL, STAGE_VALUE_CONVERTER
from bus.connect.exceptions import Backpressure
from bus.connect.monitor import ConnectorMonitor
from bus.connect.records import RawRecord, SinkBatch, SinkRecord
from bus.connect.sink_loop import DecodeFailed
from bus.consume.decoder import Decoder
from bus.errors import BusError
from bus.kafka.admin import wait_for_broker
from bus.kafka.config import KafkaSettings, consumer_config, producer_config
from bus.kafka.exceptions import DeliveryFailed, KafkaError
from bus.ops.exceptions import OpsError
from bus.publish.publisher import Publisher
from bus.registry.client import registry_client
from bus.registry.exceptions import RegistryUnreachable
from bus.topology.models import Connector, Topology, topic_name
from bus.topology.names import DLQ_PREFIX, ROUTER_GROUP, dlq_topic, replayed_topic, router_dlq_topic

#: Header added to a record a replay published or delivered: the dead letter it came from.
REPLAY_HEADER = "bus_dlq_replay"
#: A read of the dead-letter topics ends when nothing arrived for this long (a partition
#: whose last offsets are transaction markers never delivers its "last" record).
QUIET_S = 2.0

Progress = Callable[[int, int], None]


class DeadLetterError(OpsError):
    """A dead-letter command that cannot be carried out as asked."""


class NotReplayable(BusError):
    """A source dead letter that cannot become a record (raised per record, then
    dead-lettered again by the connector's error policy)."""


# -- one dead letter -------------------------------------------------------------------------


@dataclass(frozen=True)
class DeadLetter:
    """A record of a dead-letter topic, with its Kafka Connect context headers."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def from_message(cls, msg: Message) -> "DeadLetter":
        raw = RawRecord.from_message(msg)
        return cls(msg.topic(), msg.partition(), msg.offset(), raw.timestamp_ms, raw.key, raw.value, raw.headers)

    @property
    def id(self) -> str:
        """Its position, the key of its replay marker."""
        return f"{self.topic}/{self.partition}/{self.offset}"

    def header(self, name: str) -> str | None:
        for key, value in reversed(self.headers):
            if key == name:
                return value.decode("utf-8", "replace")
        return None

    def context(self, name: str) -> str | None:
        """A ``__connect.errors.<name>`` header."""
        return self.header(HEADER_PREFIX + name)

    @property
    def connector(self) -> str:
        return self.context("connector.name") or "?"

    @property
    def original_topic(self) -> str | None:
        return self.context("topic")

    @property
    def original_partition(self) -> int | None:
        return _int(self.context("partition"))

    @property
    def original_offset(self) -> int | None:
        return _int(self.context("offset"))

    @property
    def original_where(self) -> str:
        topic, partition, offset = self.original_topic, self.original_partition, self.original_offset
        if topic is None:
            return "?"
        return topic if partition is None else f"{topic}[{partition}]@{offset}"

    @property
    def stage(self) -> str | None:
        return self.context("stage")

    @property
    def error_class(self) -> str:
        return self.context("exception.class.name") or "?"

    @property
    def error_message(self) -> str:
        return self.context("exception.message") or ""

    @property
    def ce_id(self) -> str | None:
        return self.header("ce_id")

    @property
    def time(self) -> dt.datetime | None:
        if self.timestamp_ms is None:
            return None
        return dt.datetime.fromtimestamp(self.timestamp_ms / 1000, dt.timezone.utc)

    def original(self) -> RawRecord:
        """The record as it was before it failed: original position, no context headers."""
        return RawRecord(
            topic=self.original_topic,
            partition=self.original_partition,
            offset=self.original_offset,
            key=self.key,
            value=self.value,
            headers=tuple((k, v) for k, v in self.headers if not k.startswith(HEADER_PREFIX)),
            timestamp_ms=self.timestamp_ms,
        )


def _int(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


# -- choosing dead letters ------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Which dead letters a command is about; every given criterion must match."""

    connector: str | None = None
    #: The original topic, or the dead-letter topic.
    topic: str | None = None
    #: The exception class: its full name or the part after the last dot.
    error: str | None = None
    since: dt.datetime | None = None

    def matches(self, letter: DeadLetter) -> bool:
        if self.connector is not None and letter.connector != self.connector:
            return False
        if self.topic is not None and self.topic not in (letter.original_topic, letter.topic):
            return False
        if self.error is not None and self.error not in (letter.error_class, letter.error_class.rsplit(".", 1)[-1]):
            return False
        if self.since is not None and (letter.time is None or letter.time < self.since):
            return False
        return True


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: dt.datetime | None = None) -> dt.datetime:
    """``--since``: a duration back from now (``90s``, ``15m``, ``2h``, ``7d``) or an ISO 8601
    time (``2026-11-23T08:00:00Z``; without a zone, UTC)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    match = _DURATION.match(text.strip())
    if match:
        return now - dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        when = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise DeadLetterError(
            f"--since {text!r} is neither a duration (90s, 15m, 2h, 7d) nor an ISO 8601 time "
            "(2026-11-23T08:00:00Z)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.timezone.utc)


# -- reading -------------------------------------------------------------------------------


def dead_letter_topics(topology: Topology, settings: KafkaSettings) -> list[str]:
    """The dead-letter topics of the topology's namespace that exist on the cluster:
    every ``bus-dlq-*`` topic (connectors of other topology versions included), the
    configured ``errors.deadletterqueue.topic.name`` of its connectors, the router's."""
    try:
        existing = set(wait_for_broker(settings).list_topics(timeout=settings.connect_timeout_s).topics)
    except KafkaException as exc:
        raise KafkaError(f"could not list the topics of {settings.bootstrap_servers}: {exc.args[0].str()}") from exc
    prefix = topic_name(topology.namespace, f"{DLQ_PREFIX}-")
    replayed = replayed_topic(topology.namespace)
    wanted = {t for t in existing if t.startswith(prefix) and t != replayed}
    wanted.add(router_dlq_topic(topology.namespace))
    for connector in topology.connectors:
        configured = connector.config.get("errors.deadletterqueue.topic.name")
        wanted.add(dlq_topic(topology.namespace, connector.name, configured if isinstance(configured, str) else None))
    return sorted(t for t in wanted if t in existing)


def read_dead_letters(settings: KafkaSettings, topics: Sequence[str]) -> list[DeadLetter]:
    """Every dead letter of ``topics``, from the beginning to the end offsets of now
    (read by assignment: no group joined, nothing committed; committed transactions only)."""
    if not topics:
        return []
    consumer = Consumer(consumer_config(settings, group_id="bus-dlq-reader", client_id="bus-dlq-reader"))
    letters: list[DeadLetter] = []
    try:
        ends: dict[tuple[str, int], int] = {}
        metadata = consumer.list_topics(timeout=settings.connect_timeout_s).topics
        for topic in topics:
            info = metadata.get(topic)
            if info is None or info.error is not None:
                continue
            for p in info.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=settings.connect_timeout_s)
                if high > low:
                    ends[(topic, p)] = high
        if not ends:
            return []
        consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in ends])
        deadline = time.monotonic() + settings.connect_timeout_s + 60
        quiet_since = time.monotonic()
        while ends:
            now = time.monotonic()
            if now > deadline or now - quiet_since > QUIET_S:
                break  # what is left are transaction markers or aborted records
            msg = consumer.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            quiet_since = time.monotonic()
            letters.append(DeadLetter.from_message(msg))
            tp = (msg.topic(), msg.partition())
            if msg.offset() + 1 >= ends.get(tp, 0):
                ends.pop(tp, None)
    except KafkaException as exc:
        raise KafkaError(f"could not read the dead-letter topics {', '.join(topics)}: {exc.args[0].str()}") from exc
    finally:
        consumer.close()
    letters.sort(key=lambda d: (d.timestamp_ms or 0, d.topic, d.partition, d.offset))
    return letters


class ReplayLog:
    """The dead letters already replayed: ``<ns.>bus-dlq-replayed``, compacted, keyed by
    the dead letter's id; the value says when, by which connector, with what outcome."""

    def __init__(self, settings: KafkaSettings, namespace: str | None) -> None:
        self.settings = settings
        self.topic = CompactedTopic(settings, replayed_topic(namespace))
        self._producer: Producer | None = None

    def load(self) -> dict[str, dict[str, Any]]:
        return self.topic.read_all()

    def mark(self, entries: Iterable[tuple[DeadLetter, str]]) -> None:
        """Remember ``(dead letter, outcome)`` pairs; returns once the broker has them all."""
        if self._producer is None:
            self.topic.ensure()
            self._producer = Producer(producer_config(self.settings, client_id="bus-dlq-replay-log"))
        failures: list[str] = []

        def on_delivery(err: RdKafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures.append(err.str())

        now = _now_iso()
        count = 0
        for letter, outcome in entries:
            doc = {"connector": letter.connector, "ce_id": letter.ce_id, "outcome": outcome, "replayed_at": now}
            _produce(self._producer, self.topic.name, letter.id.encode("utf-8"),
                     json.dumps(doc, sort_keys=True).encode("utf-8"), [], on_delivery)
            count += 1
        left = self._producer.flush(self.settings.connect_timeout_s + 30)
        if failures or left:
            raise DeliveryFailed(
                f"could not record {len(failures) + left} of {count} replay markers on {self.topic.name}"
                f"{': ' + failures[0] if failures else ''}; the next replay may send those records again "
                "(with the same ids)"
            )

    def close(self) -> None:
        if self._producer is not None:
            self._producer.flush(5)
            self._producer = None


def _produce(producer: Producer, topic: str, key: bytes | None, value: bytes | None,
             headers: list[tuple[str, bytes]], on_delivery: Callable[[RdKafkaError | None, Message], None]) -> None:
    while True:
        try:
            producer.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)


def _now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- list ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CountRow:
    connector: str
    original_topic: str
    error_class: str
    dead_letters: int
    replayed: int

    @property
    def pending(self) -> int:
        return self.dead_letters - self.replayed

    def to_json(self) -> dict[str, Any]:
        return {"connector": self.connector, "original_topic": self.original_topic, "error_class": self.error_class,
                "dead_letters": self.dead_letters, "replayed": self.replayed, "pending": self.pending}


def count(letters: Iterable[DeadLetter], replayed: Iterable[str] = ()) -> list[CountRow]:
    """Dead letters by connector, original topic and error class (replayed ones counted apart)."""
    done = set(replayed)
    totals: dict[tuple[str, str, str], list[int]] = {}
    for letter in letters:
        row = totals.setdefault((letter.connector, letter.original_topic or "?", letter.error_class), [0, 0])
        row[0] += 1
        row[1] += letter.id in done
    return [CountRow(*key, total, replays) for key, (total, replays) in sorted(totals.items())]


def render_counts(rows: Sequence[CountRow], topics: Sequence[str]) -> str:
    if not topics:
        return "no dead-letter topics in this namespace: nothing was dead-lettered"
    if not rows:
        return f"no dead letters ({len(topics)} dead-letter topic(s) scanned: {', '.join(topics)})"
    header = ("CONNECTOR", "ORIGINAL TOPIC", "ERROR CLASS", "DEAD LETTERS", "REPLAYED", "PENDING")
    body = [(r.connector, r.original_topic, r.error_class, str(r.dead_letters), str(r.replayed), str(r.pending))
            for r in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    numeric = {3, 4, 5}
    lines = ["  ".join(cell.rjust(w) if i in numeric else cell.ljust(w) for i, (cell, w) in
                       enumerate(zip(line, widths))).rstrip() for line in [header, *body]]
    total = sum(r.dead_letters for r in rows)
    pending = sum(r.pending for r in rows)
    lines.append(f"{total} dead letter(s), {pending} pending replay, in {len(topics)} topic(s)")
    return "\n".join(lines)


# -- show ----------------------------------------------------------------------------------


def describe(letter: DeadLetter, decoder: Decoder | None, replayed: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A dead letter as JSON: context, headers (decoded), key, and the value decoded when
    it is a wire-format record whose schema the registry knows, else raw text or base64."""
    out: dict[str, Any] = {
        "id": letter.id,
        "dead_letter_topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "time": _iso(letter.time),
        "connector": letter.connector,
        "original": {"topic": letter.original_topic, "partition": letter.original_partition,
                     "offset": letter.original_offset},
        "stage": letter.stage,
        "error_class": letter.error_class,
        "error_message": letter.error_message,
        "ce_id": letter.ce_id,
        "replayed": replayed.get(letter.id),
        "key": None if letter.key is None else letter.key.decode("utf-8", "replace"),
        "headers": {k: v.decode("utf-8", "replace") for k, v in letter.headers},
    }
    out.update(decode_value(letter.value, decoder))
    return out


def decode_value(value: bytes | None, decoder: Decoder | None) -> dict[str, Any]:
    if value is None:
        return {"value": None, "value_format": "tombstone"}
    if decoder is not None and len(value) > 5 and value[0] == 0:
        try:
            return {"value": decoder.decode_json(value), "value_format": "avro",
                    "schema_id": int.from_bytes(value[1:5], "big")}
        except Exception as exc:  # any failure means: show it raw, and say why
            why = f"{type(exc).__name__}: {exc}"
            return {**_raw(value), "value_error": why}
    return _raw(value)


def _raw(value: bytes) -> dict[str, Any]:
    try:
        return {"value": value.decode("utf-8"), "value_format": "text"}
    except UnicodeDecodeError:
        return {"value": base64.b64encode(value).decode("ascii"), "value_format": "base64"}


def render_letter(described: dict[str, Any]) -> str:
    d = described
    replayed = d["replayed"]
    state = f"replayed {replayed.get('replayed_at')} ({replayed.get('outcome')})" if replayed else "pending"
    lines = [
        f"{d['dead_letter_topic']}[{d['partition']}]@{d['offset']}  {d['time'] or '?'}  {state}",
        f"  connector: {d['connector']}   stage: {d['stage'] or '?'}",
        f"  original:  {_where(d['original'])}",
        f"  error:     {d['error_class']}: {d['error_message']}",
        f"  key:       {d['key']}",
        "  headers:",
    ]
    for name, value in d["headers"].items():
        if name == HEADER_PREFIX + "exception.stacktrace":
            value = f"({len(value)} characters; --json shows it)"
        lines.append(f"    {name}: {value}")
    what = d["value_format"] + (f", schema id {d['schema_id']}" if "schema_id" in d else "")
    value = d["value"] if isinstance(d["value"], str) else json.dumps(d["value"], ensure_ascii=False)
    lines.append(f"  value ({what}): {value}")
    if "value_error" in d:
        lines.append(f"  (not decoded: {d['value_error']})")
    return "\n".join(lines)


def _where(original: dict[str, Any]) -> str:
    if original["topic"] is None:
        return "?"
    if original["partition"] is None:
        return original["topic"]
    return f"{original['topic']}[{original['partition']}]@{original['offset']}"


def _iso(when: dt.datetime | None) -> str | None:
    return None if when is None else when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# -- replay --------------------------------------------------------------------------------

Outcome = Literal["delivered", "published", "dead-lettered again"]


@dataclass
class ReplayReport:
    connector: str
    side: Literal["source", "sink"]
    dead_letter_topic: str
    dry_run: bool
    #: Dead letters of the connector that match the filters.
    matched: int = 0
    #: Of those, replayed by an earlier replay (skipped).
    already_replayed: int = 0
    sent: int = 0
    failed_again: int = 0
    #: With ``dry_run``: what would be sent, one dict per dead letter.
    planned: list[dict[str, Any]] = field(default_factory=list)

    @property
    def to_send(self) -> int:
        return self.matched - self.already_replayed

    def to_json(self) -> dict[str, Any]:
        out = {"connector": self.connector, "side": self.side, "dead_letter_topic": self.dead_letter_topic,
               "dry_run": self.dry_run, "matched": self.matched, "already_replayed": self.already_replayed,
               "to_send": self.to_send, "sent": self.sent, "failed_again": self.failed_again}
        if self.dry_run:
            out["planned"] = self.planned
        return out

    def render(self) -> str:
        head = (f"connector {self.connector} ({self.side}): {self.matched} dead letter(s) match in "
                f"{self.dead_letter_topic}, {self.already_replayed} already replayed")
        if self.dry_run:
            lines = [head + f"; would send {self.to_send} (dry run: nothing sent)"]
            lines += [f"  {p['id']}  ce_id {p['ce_id'] or '(new, stable)'}  {p['error_class']}  "
                      f"{p['original']} -> {p['to']}" for p in self.planned]
            return "\n".join(lines)
        again = f", {self.failed_again} failed again (new dead letters)" if self.failed_again else ""
        return head + f"; sent {self.sent}{again}"


class _Outcomes(ConnectorMonitor):
    """The connector's monitor, also noting which replayed records were delivered and
    which were dead-lettered again (by their original position)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: dict[tuple[str | None, int | None, int | None], Outcome] = {}
        self._seen = threading.Lock()

    def on_delivered(self, record: RawRecord, **detail: Any) -> None:
        super().on_delivered(record, **detail)
        with self._seen:
            self.outcomes[(record.topic, record.partition, record.offset)] = "delivered"

    def on_dead_letter(self, record: RawRecord, error: BaseException, stage: str, topic: str, **kwargs: Any) -> None:
        super().on_dead_letter(record, error, stage, topic, **kwargs)
        with self._seen:
            self.outcomes[(record.topic, record.partition, record.offset)] = "dead-lettered again"


class Replayer:
    """Replays dead letters of one connector of ``topology`` (see the module docstring).

    ``kind`` overrides the installed connector type; ``entry_points`` replaces the
    installed ones when looking it up.
    """

    def __init__(
        self,
        topology: Topology,
        settings: KafkaSettings,
        connector: str,
        *,
        kind: type[Source] | type[Sink] | None = None,
        entry_points: Iterable[EntryPoint] | None = None,
        batch_size: int = 500,
    ) -> None:
        if connector == ROUTER_GROUP:
            raise DeadLetterError(
                "the router's dead letters cannot be replayed: they are records it could not decode or route. "
                "`bus dlq show --connector bus-router` shows them; fix the publisher and publish them again"
            )
        self.topology = topology
        self.settings = settings
        self.connector: Connector = topology.connector(connector)
        self.batch_size = max(1, batch_size)
        self._kind = kind
        self._entry_points = entry_points
        configured = self.connector.config.get("errors.deadletterqueue.topic.name")
        self.dead_letter_topic = dlq_topic(topology.namespace, self.connector.name,
                                           configured if isinstance(configured, str) else None)

    @property
    def name(self) -> str:
        return self.connector.name

    def pending(self, selection: Selection) -> tuple[list[DeadLetter], int, ReplayLog]:
        """(dead letters to send, count of matching ones already replayed, the replay log)."""
        others = Selection(None, selection.topic, selection.error, selection.since)
        letters = [d for d in read_dead_letters(self.settings, [self.dead_letter_topic])
                   if d.context("connector.name") in (None, self.name) and others.matches(d)]
        log = ReplayLog(self.settings, self.topology.namespace)
        done = log.load()
        todo = [d for d in letters if d.id not in done]
        todo.sort(key=lambda d: (d.original_topic or "", d.original_partition or 0, d.original_offset or 0, d.offset))
        return todo, len(letters) - len(todo), log

    def replay(
        self,
        selection: Selection = Selection(),
        *,
        dry_run: bool = False,
        event_type: str | None = None,
        on_progress: Progress | None = None,
    ) -> ReplayReport:
        """Send the pending dead letters that match ``selection``; ``event_type`` names the
        type of a source's dead letters that carry none."""
        if event_type is not None and self.connector.side == "sink":
            raise DeadLetterError(f"--event-type is for a source's dead letters; {self.name} is a sink, whose "
                                  "dead letters are records of its subscription")
        if event_type is not None and event_type not in (self.connector.publishes or []):
            raise DeadLetterError(f"connector {self.name!r} does not publish {event_type!r}: it publishes "
                                  f"{', '.join(self.connector.publishes or [])}")
        todo, skipped, log = self.pending(selection)
        report = ReplayReport(self.name, self.connector.side, self.dead_letter_topic, dry_run,
                              matched=len(todo) + skipped, already_replayed=skipped)
        try:
            if dry_run:
                report.planned = [self._plan(d, event_type) for d in todo]
            elif todo and self.connector.side == "sink":
                self._replay_sink(todo, log, report, on_progress)
            elif todo:
                self._replay_source(todo, log, report, event_type, on_progress)
        finally:
            log.close()
        return report

    # -- dry run -----------------------------------------------------------------------------

    def _plan(self, letter: DeadLetter, event_type: str | None) -> dict[str, Any]:
        if self.connector.side == "sink":
            to = f"connector {self.name} (delivered again)"
        else:
            try:
                to = self.topology.event_type(self._event_type(letter, event_type)).topic
            except NotReplayable as exc:
                to = f"nothing: {exc}"
        return {"id": letter.id, "ce_id": letter.ce_id, "error_class": letter.error_class,
                "original": letter.original_where, "to": to}

    # -- building the connector --------------------------------------------------------------

    def _kit(self) -> Assembly:
        """The connector, built as the runner builds it; its monitor also notes what became of
        each replayed record."""
        return assemble(self.connector, self.topology, self.settings, kind=self._kind,
                        entry_points=self._entry_points, report_status=False, monitor_class=_Outcomes)

    # -- sinks -------------------------------------------------------------------------------

    def _replay_sink(self, todo: list[DeadLetter], log: ReplayLog, report: ReplayReport,
                     on_progress: Progress | None) -> None:
        kit = self._kit()
        assert issubclass(kit.kind, Sink) and self.connector.subscription is not None
        topic = self.topology.subscription(self.connector.subscription).topic
        sink = kit.sink(topic)
        decoder = Decoder(registry_client(self.settings))
        sink.setup()
        try:
            done = 0
            for batch in _batches(todo, self.batch_size):
                records: list[SinkRecord] = []
                for letter in batch:
                    raw = _tagged(letter.original(), letter)
                    try:
                        records.append(SinkRecord(raw, None if raw.value is None else decoder.decode_json(raw.value)))
                    except RegistryUnreachable:
                        raise
                    except Exception as exc:
                        error = DecodeFailed(raw, f"{type(exc).__name__}: {exc}")
                        error.__cause__ = exc
                        sink.dead_letter(raw, error, stage=STAGE_VALUE_CONVERTER)
                if records:
                    self._write(sink, kit, SinkBatch(records[0].raw.topic or topic,
                                                     records[0].raw.partition or 0, records))
                sink.flush()
                assert isinstance(kit.monitor, _Outcomes)
                outcomes = [(d, kit.monitor.outcomes.get((d.original_topic, d.original_partition, d.original_offset),
                                                         "delivered")) for d in batch]
                log.mark(outcomes)
                report.sent += sum(o == "delivered" for _, o in outcomes)
                report.failed_again += sum(o != "delivered" for _, o in outcomes)
                done += len(batch)
                if on_progress:
                    on_progress(done, len(todo))
        finally:
            try:
                sink.close()
            finally:
                kit.close()

    def _write(self, sink: Sink, kit: Assembly, batch: SinkBatch) -> None:
        """``sink.write``, waiting out backpressure within the connector's retry budget."""
        retries = kit.config.retry_policy().start()
        while True:
            try:
                sink.write(batch)
                return
            except Backpressure as bp:
                if retries.next_delay() is None:
                    raise DeadLetterError(
                        f"connector {self.name!r} kept refusing records ({bp}) beyond its errors.retry.timeout; "
                        "replay again later: what was sent is remembered"
                    ) from bp
                kit.monitor.on_backpressure(bp.topic, bp.partition, bp.retry_after, str(bp))
                time.sleep(max(0.0, bp.retry_after))

    # -- sources -----------------------------------------------------------------------------

    def _replay_source(self, todo: list[DeadLetter], log: ReplayLog, report: ReplayReport,
                       event_type: str | None, on_progress: Progress | None) -> None:
        kit = self._kit()
        decoder = Decoder(registry_client(self.settings))
        publisher = Publisher(self.topology, self.settings, client_id=f"bus-dlq-replay-{self.name}")
        producer = Producer(producer_config(self.settings, client_id=f"bus-dlq-replay-{self.name}"))
        try:
            done = 0
            for batch in _batches(todo, self.batch_size):
                failures: list[str] = []

                def on_delivery(err: RdKafkaError | None, _msg: Message) -> None:
                    if err is not None:
                        failures.append(err.str())

                outcomes: list[tuple[DeadLetter, str]] = []
                for letter in batch:
                    try:
                        kind = self._event_type(letter, event_type)
                        prepared = publisher.prepare(kind, self.connector.department, _source_record(letter, decoder))
                    except (KafkaError, RegistryUnreachable):
                        raise
                    except BusError as exc:
                        kit.errors.report(letter.original(), exc, stage=STAGE_TASK_POLL)
                        outcomes.append((letter, "dead-lettered again"))
                        continue
                    ce_id = letter.ce_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"bus-dlq:{letter.id}"))
                    headers = [(k, ce_id.encode("utf-8") if k == "ce_id" else v) for k, v in prepared.headers]
                    headers.append((REPLAY_HEADER, letter.id.encode("utf-8")))
                    _produce(producer, prepared.topic, prepared.key.encode("utf-8"), prepared.value, headers,
                             on_delivery)
                    outcomes.append((letter, "published"))
                left = producer.flush(self.settings.connect_timeout_s + 60)
                if failures or left:
                    raise DeliveryFailed(
                        f"the broker at {self.settings.bootstrap_servers} did not acknowledge {len(failures) + left} "
                        f"replayed record(s){': ' + failures[0] if failures else ''}; nothing of this batch is "
                        "marked replayed: replay again (the same ids are used)"
                    )
                log.mark(outcomes)
                report.sent += sum(o == "published" for _, o in outcomes)
                report.failed_again += sum(o != "published" for _, o in outcomes)
                done += len(batch)
                if on_progress:
                    on_progress(done, len(todo))
        finally:
            producer.flush(5)
            publisher.close()
            kit.close()

    def _event_type(self, letter: DeadLetter, given: str | None) -> str:
        publishes = self.connector.publishes or []
        if given is not None:
            return given
        carried = letter.header("ce_type")
        if carried is not None:
            return carried
        if len(publishes) == 1:
            return publishes[0]
        raise NotReplayable(
            f"dead letter {letter.id} names no event type and connector {self.name!r} publishes several "
            f"({', '.join(publishes)}): replay it with --event-type"
        )


def _source_record(letter: DeadLetter, decoder: Decoder) -> Any:
    """The record a source's dead letter holds: a wire-format record decoded, or a JSON object."""
    value = letter.value
    if value is None:
        raise NotReplayable(f"dead letter {letter.id} has no value: nothing to publish")
    decoded = decode_value(value, decoder)
    if decoded["value_format"] == "avro":
        return decoded["value"]
    try:
        record = json.loads(value)
    except (UnicodeDecodeError, ValueError) as exc:
        raise NotReplayable(f"dead letter {letter.id}: the value is not JSON ({exc})") from None
    if not isinstance(record, dict):
        raise NotReplayable(f"dead letter {letter.id}: the value is JSON but not an object")
    return record


def _tagged(raw: RawRecord, letter: DeadLetter) -> RawRecord:
    return RawRecord(raw.topic, raw.partition, raw.offset, raw.key, raw.value,
                     (*raw.headers, (REPLAY_HEADER, letter.id.encode("utf-8"))), raw.timestamp_ms)


def _batches(letters: list[DeadLetter], size: int) -> Iterator[list[DeadLetter]]:
    """Runs of at most ``size`` dead letters of the same original topic partition."""
    run: list[DeadLetter] = []
    for letter in letters:
        if run and (len(run) >= size or (run[0].original_topic, run[0].original_partition)
                    != (letter.original_topic, letter.original_partition)):
            yield run
            run = []
        run.append(letter)
    if run:
        yield run
