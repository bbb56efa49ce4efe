"""The connector conformance suite: what every connector type must do, whatever its peer
(Redpanda Connect runs all its connectors through one ``integration.StreamTests``).

The checks (run by ``test_conformance.py`` for every type in :data:`HARNESSES`):

- :func:`check_config_model`: every setting (nested ones too) has a description and an
  example, a valid config has no problem, an unknown key (top level and inside nested
  settings) is refused by name;
- :func:`check_live`, one live session per type (every start of a sink costs a consumer
  group join, so the steps share them):
  start -> ``running``; good inputs are delivered; a bad input goes to the connector's
  dead-letter topic with Kafka Connect's context headers (and the harness's own: file and
  line, MQTT topic, original topic/offset...) and the connector goes on with the next good
  input (a type whose peer is told at once instead, as HTTP ingest answers 400, publishes
  and dead-letters nothing); stop -> ``stopped`` within the harness's ``stop_within_s``;
  inputs given while it is down (where the peer keeps them) and after the restart are all
  delivered, none twice, and the restarted connector handles only the new ones; no secret
  of the config appears in a log line (structlog and stdlib logging) or in its status.

A connector type takes part by contributing a :class:`Harness`: a valid config with a
real peer, how to feed one good and one bad input, and how to see what was delivered.
Sources are seen on their event type's canonical topic (:class:`SourceHarness`); sinks
are fed on a topic of the test in the wire format, as the router fills a subscription
topic (:class:`SinkHarness`).

Adding a type: write its harness below, add it to :data:`HARNESSES` (until then, name it
in :data:`PENDING`).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import random
import time
import uuid
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import BaseModel
from structlog.testing import capture_logs

from bus.connectors import ConnectorRunner, dlq_topic
from bus.connectors.config import config_problems
from bus.connectors.registry import GROUP, load_connector_class
from bus.consume.tail import tail
from bus.demo.samples import GENERATORS
from bus.topology.models import Connector
from tests.connectors.rest_server import CaseServer, iso, to_ms
from tests.connectors.services import Database, mqtt_address
from tests.connectors.support import (
    Endpoint,
    WireFeeder,
    all_entry_points,
    committed,
    read_all,
    text_headers,
    wait_until,
)
from tests.connectors.population_table import CREATE, TABLE, insert, person
from tests.fixtures.city import City

#: Types other engineers are writing: their harnesses are still to come.
PENDING: tuple[str, ...] = ()

#: Kafka Connect's context headers every dead letter carries.
CONTEXT_HEADERS = ("topic", "connector.name", "task.id", "stage", "class.name", "exception.class.name",
                   "exception.message", "exception.stacktrace")


def conformance_entry_points() -> list[EntryPoint]:
    """The installed connector types and this repository's own (the same target twice is one type)."""
    return [*importlib.metadata.entry_points(group=GROUP), *all_entry_points()]


# -- what a harness is given and gives ------------------------------------------------------


@dataclass
class Env:
    """What a harness may use: the test's city, a folder of its own, the environment and
    (lazily, so a type's peer is only set up for that type) any pytest fixture."""

    city: City
    tmp_path: Path
    monkeypatch: pytest.MonkeyPatch
    request: pytest.FixtureRequest
    unique: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    def fixture(self, name: str) -> Any:
        return self.request.getfixturevalue(name)


@dataclass(frozen=True)
class BadInput:
    """A bad input that was fed, and what its dead letter must show.

    ``headers``: headers the dead letter must have with these values (beyond the context
    headers every dead letter has); ``value``: the dead letter's value, when known;
    ``dead_lettered`` False: the peer was refused at once (checked by the harness) and
    nothing may reach the bus or the dead-letter topic."""

    stage: str = "TASK_POLL"
    headers: dict[str, str] = field(default_factory=dict)
    value: bytes | None = None
    dead_lettered: bool = True


class Harness(ABC):
    """One connector type with a real peer, as the suite drives it."""

    type: ClassVar[str]
    side: ClassVar[Literal["source", "sink"]]
    #: Inputs given while the connector is stopped wait at the peer (a folder, a topic, an
    #: MQTT session); False for a peer that pushes and is refused meanwhile (HTTP ingest).
    feeds_while_down: ClassVar[bool] = True
    #: Longest a stop may take.
    stop_within_s: ClassVar[float] = 5.0

    def __init__(self, env: Env) -> None:
        self.env = env
        self.city = env.city
        #: Secret values of the config: never in a log line or the status.
        self.secrets: list[str] = []
        self._seed = random.Random(env.unique).getrandbits(32)

    @classmethod
    @abstractmethod
    def static_config(cls) -> dict[str, Any]:
        """A valid ``config`` without a peer, for the config checks (secrets as references)."""

    @abstractmethod
    def entry(self) -> dict[str, Any]:
        """The connector's entry of topology.yaml (name, type, department, publishes or
        subscription, config) pointing at the live peer."""

    def open(self) -> None:
        """Start the peer (before the first start)."""

    def close(self) -> None:
        """Stop what ``open`` started."""

    def attach(self, runner: ConnectorRunner) -> None:
        """Called after each start (a listening source learns its new address here)."""

    @abstractmethod
    def feed_good(self, n: int) -> list[str]:
        """Give the connector ``n`` good inputs; their identities, as :meth:`delivered` shows them."""

    @abstractmethod
    def feed_bad(self) -> BadInput:
        """Give the connector one input it cannot deliver."""

    @abstractmethod
    def delivered(self) -> list[str]:
        """Identities of what reached the far side, once per delivery (a repeat shows twice)."""

    def settle(self, runner: ConnectorRunner) -> None:
        """Wait until what was delivered is also committed (a clean stop then repeats nothing)."""

    @property
    def topic(self) -> str | None:
        """A sink's subscription topic (the runner's override)."""
        return None

    def named(self, base: str) -> str:
        """A connector name of this test alone (its group, dead-letter topic and position)."""
        return f"{base}-{self.env.unique}"

    def next_seed(self) -> int:
        self._seed += 1
        return self._seed


class SourceHarness(Harness):
    """A source: what it publishes is read back from the canonical topic of its event type."""

    side: ClassVar[Literal["source", "sink"]] = "source"
    event_type: ClassVar[str] = "camera_alarm"
    identity: ClassVar[str] = "alarm_id"

    def __init__(self, env: Env) -> None:
        super().__init__(env)
        self.fed: set[str] = set()

    def record(self) -> dict[str, Any]:
        record = GENERATORS[self.event_type](random.Random(self.next_seed()))
        self.fed.add(str(record[self.identity]))
        return record

    def delivered(self) -> list[str]:
        """What this harness fed, as found on the canonical topic (which other tests share)."""
        topic = self.city.topology.event_type(self.event_type).topic
        try:
            found = [str(r.value[self.identity]) for r in tail(self.city.settings, [topic], exit_at_end=True)]
            return [i for i in found if i in self.fed]
        except Exception as exc:  # the topic is created by the first record
            if "do not exist yet" in str(exc):
                return []
            raise


class SinkHarness(Harness):
    """A sink: fed on a topic of the test (wire format, CloudEvents headers)."""

    side: ClassVar[Literal["source", "sink"]] = "sink"
    event_type: ClassVar[str] = "camera_alarm"
    department: ClassVar[str] = "police"
    identity: ClassVar[str] = "alarm_id"

    def open(self) -> None:
        self._topic = self.env.fixture("topic_factory")("sub")
        self.feeder = WireFeeder(self.city.settings, self.city.topology, self._topic)
        self.produced = 0

    def close(self) -> None:
        self.feeder.close()

    @property
    def topic(self) -> str | None:
        return self._topic

    def record(self) -> dict[str, Any]:
        return GENERATORS[self.event_type](random.Random(self.next_seed()))

    def feed_good(self, n: int) -> list[str]:
        records = [self.record() for _ in range(n)]
        self.feeder.records(self.event_type, self.department, records)
        self.produced += n
        return [str(r[self.identity]) for r in records]

    def feed_bad(self) -> BadInput:
        """A value that is not the wire format: every sink dead-letters it (VALUE_CONVERTER)."""
        value = b"not the wire format " + self.env.unique.encode()
        partition, offset = self.feeder.raw(b"bad-key", value)
        self.produced += 1
        return BadInput(stage="VALUE_CONVERTER", value=value, headers={
            "__connect.errors.topic": self._topic, "__connect.errors.partition": str(partition),
            "__connect.errors.offset": str(offset)})

    def settle(self, runner: ConnectorRunner) -> None:
        wait_until(lambda: committed(self.city.settings, runner.group_id, self._topic) == [self.produced], 20,
                   "the sink's offsets committed")


# -- the harnesses ---------------------------------------------------------------------------


class HttpIngestHarness(SourceHarness):
    """Bad input is answered 400 to the caller (nothing published, nothing dead-lettered);
    while it is stopped callers are refused, so nothing is fed while down."""

    type: ClassVar[str] = "http_ingest"
    feeds_while_down: ClassVar[bool] = False

    @classmethod
    def static_config(cls) -> dict[str, Any]:
        return {"port": 0, "auth": {"token": "env:CONFORMANCE_INGEST_TOKEN"}}

    def entry(self) -> dict[str, Any]:
        self.token = f"tok-{uuid.uuid4().hex}"
        self.hmac_key = f"hmac-{uuid.uuid4().hex}"
        self.secrets = [self.token, self.hmac_key]
        self.env.monkeypatch.setenv("CONFORMANCE_INGEST_TOKEN", self.token)
        self.env.monkeypatch.setenv("CONFORMANCE_INGEST_HMAC", self.hmac_key)
        return {"name": self.named("conformance-ingest"), "type": self.type, "department": "police",
                "publishes": ["camera_alarm"],
                "config": {"port": 0, "auth": {"token": "env:CONFORMANCE_INGEST_TOKEN",
                                               "hmac_key": "env:CONFORMANCE_INGEST_HMAC"}}}

    def attach(self, runner: ConnectorRunner) -> None:
        self.url = runner.instance.url  # type: ignore[union-attr]

    def _post(self, body: bytes) -> httpx.Response:
        return httpx.post(f"{self.url}/{self.event_type}", content=body, timeout=30,
                          headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})

    def feed_good(self, n: int) -> list[str]:
        records = [self.record() for _ in range(n)]
        for record in records:
            answer = self._post(json.dumps(record).encode())
            assert answer.status_code == 202, answer.text
        return [r[self.identity] for r in records]

    def feed_bad(self) -> BadInput:
        answer = self._post(json.dumps(self.record() | {"severity": "APOCALYPTIC"}).encode())
        assert answer.status_code == 400, answer.text
        assert any(p["path"] == "severity" for p in answer.json()["problems"])
        return BadInput(dead_lettered=False)


class MqttSourceHarness(SourceHarness):
    """Messages sent while it is down wait in its persistent session."""

    type: ClassVar[str] = "mqtt_source"

    @classmethod
    def static_config(cls) -> dict[str, Any]:
        return {"topics": ["cameras/+/alarm"], "event_type": "camera_alarm", "password": "env:CONFORMANCE_MQTT_PW",
                "username": "citybus", "routes": [{"topic": "cameras/+/alarm", "event_type": "camera_alarm"}]}

    def entry(self) -> dict[str, Any]:
        host, port = mqtt_address()
        self.prefix = f"bus-conformance-{self.env.unique}"
        self.client_id = f"citybus-{self.prefix}"
        self.password = f"pw-{uuid.uuid4().hex}"
        self.secrets = [self.password]
        self.env.monkeypatch.setenv("CONFORMANCE_MQTT_PW", self.password)
        return {"name": self.named("conformance-mqtt"), "type": self.type, "department": "police",
                "publishes": ["camera_alarm"],
                "config": {"host": host, "port": port, "topics": [f"{self.prefix}/cameras/+/alarm"],
                           "client_id": self.client_id, "session_expiry_s": 60, "event_type": "camera_alarm",
                           "username": "citybus", "password": "env:CONFORMANCE_MQTT_PW"}}

    def open(self) -> None:
        host, port = mqtt_address()
        self.device = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"device-{self.env.unique}")
        self.device.connect(host, port)
        self.device.loop_start()

    def close(self) -> None:
        self.device.disconnect()
        self.device.loop_stop()
        host, port = mqtt_address()
        cleaner = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        try:  # ends the persistent session, so the broker forgets it
            cleaner.connect(host, port)
            cleaner.loop_start()
            cleaner.disconnect()
            cleaner.loop_stop()
        except OSError:
            pass

    def _send(self, camera: str, payload: bytes) -> str:
        topic = f"{self.prefix}/cameras/{camera}/alarm"
        info = self.device.publish(topic, payload, qos=1)
        info.wait_for_publish(10)
        assert info.is_published()
        return topic

    def feed_good(self, n: int) -> list[str]:
        records = [self.record() for _ in range(n)]
        for record in records:
            self._send(record["camera_id"], json.dumps(record).encode())
        return [r[self.identity] for r in records]

    def feed_bad(self) -> BadInput:
        payload = b"not json {"
        topic = self._send("CAM-BAD", payload)
        return BadInput(value=payload, headers={"mqtt_topic": topic, "__connect.errors.topic": topic})


class FileDropHarness(SourceHarness):
    """Each good feed is a new file (written under a temporary name, then renamed)."""

    type: ClassVar[str] = "file_drop"

    @classmethod
    def static_config(cls) -> dict[str, Any]:
        return {"path": "/srv/exports", "pattern": "*.jsonl", "event_type": "camera_alarm",
                "columns": {"CAM": "camera_id"}}

    def entry(self) -> dict[str, Any]:
        self.folder = self.env.tmp_path / "drop"
        self.folder.mkdir(exist_ok=True)
        return {"name": self.named("conformance-file-drop"), "type": self.type, "department": "police",
                "publishes": ["camera_alarm"],
                "config": {"path": str(self.folder), "pattern": "*.jsonl", "event_type": "camera_alarm",
                           "settle_s": 0, "poll_interval_s": 0.1}}

    def _drop(self, lines: list[str]) -> str:
        name = f"export-{self.next_seed()}.jsonl"
        partial = self.folder / f"{name}.part"
        partial.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        os.replace(partial, self.folder / name)
        return name

    def feed_good(self, n: int) -> list[str]:
        records = [self.record() for _ in range(n)]
        self._drop([json.dumps(r) for r in records])
        return [r[self.identity] for r in records]

    def feed_bad(self) -> BadInput:
        name = self._drop(["{not json"])
        return BadInput(value=b"{not json", headers={"file_drop_file": name, "file_drop_line": "1",
                                                     "__connect.errors.topic": name, "__connect.errors.offset": "1"})


class RestPollerHarness(SourceHarness):
    """The case system's changes endpoint on loopback (``rest_server.CaseServer``), with a
    token: each case fed is one millisecond after the last, and waits there while the poller
    is down. A bad input is an item without ``updated_at``, dead-lettered with its page's URL."""

    type: ClassVar[str] = "rest_poller"
    event_type: ClassVar[str] = "city_case"
    identity: ClassVar[str] = "case_id"

    @classmethod
    def static_config(cls) -> dict[str, Any]:
        return {"url": "https://chengguan.example.gov.cn/api/cases/changes", "interval_s": 10,
                "bearer_token": "env:CONFORMANCE_REST_TOKEN"}

    def entry(self) -> dict[str, Any]:
        token = f"tok-{uuid.uuid4().hex}"
        self.secrets = [token]
        self.env.monkeypatch.setenv("CONFORMANCE_REST_TOKEN", token)
        self.server = CaseServer(token=token).start()  # its URL goes into the entry
        self.at_ms = to_ms("2026-11-23T08:30:00.000+08:00")
        return {"name": self.named("conformance-rest"), "type": self.type, "department": "city_management",
                "publishes": [self.event_type],
                "config": {"url": self.server.url, "interval_s": 0.1, "timeout_s": 2,
                           "bearer_token": "env:CONFORMANCE_REST_TOKEN", "errors.retry.delay.max.ms": 100}}

    def close(self) -> None:
        self.server.stop()

    def _next_at(self) -> int:
        self.at_ms += 1
        return self.at_ms

    def feed_good(self, n: int) -> list[str]:
        records = [self.record() | {"updated_at": iso(self._next_at())} for _ in range(n)]
        self.server.put(*records)
        return [r[self.identity] for r in records]

    def feed_bad(self) -> BadInput:
        """The page that serves the bad item is the one asked for by the first request after
        it was put: every poll until the next good case asks for the same page."""
        item = {self.identity: str(uuid.uuid4()), "title": "a case without updated_at"}
        asked = len(self.server.requests())
        self.server.put_raw(item, self._next_at(), item[self.identity])
        wait_until(lambda: len(self.server.requests()) > asked, 10, "a poll after the bad item")
        page = self.server.base + self.server.requests()[asked].target
        return BadInput(headers={"__connect.errors.topic": page, "rest_url": page})


class PostgresSourceHarness(SourceHarness):
    """The population base's change table (``population_table.py``) in a database of
    the test; rows wait there while the source is down. A bad input is a row whose
    change_type is no value of the schema's enum."""

    type: ClassVar[str] = "postgres_source"
    event_type: ClassVar[str] = "population_change"
    identity: ClassVar[str] = "person_id"

    @classmethod
    def static_config(cls) -> dict[str, Any]:
        return {"dsn": "env:CONFORMANCE_PG_SOURCE_DSN", "table": TABLE, "columns": {"person_no": "person_id"}}

    def entry(self) -> dict[str, Any]:
        self.database: Database = self.env.fixture("database")
        self.database.execute(CREATE)
        self.rows = 0
        password = f"pw-{uuid.uuid4().hex}"
        self.secrets = [password]
        # The server trusts loopback: a password it ignores still must never show.
        self.env.monkeypatch.setenv("CONFORMANCE_PG_SOURCE_DSN", f"{self.database.dsn} password={password}")
        return {"name": self.named("conformance-pg-source"), "type": self.type, "department": "civil_affairs",
                "publishes": [self.event_type],
                "config": {"dsn": "env:CONFORMANCE_PG_SOURCE_DSN", "table": TABLE,
                           "columns": {"person_no": "person_id"}, "interval_s": 0.1, "connect_timeout_s": 3}}

    def _insert(self, n: int, change_type: str = "'BIRTH'") -> list[int]:
        """``n`` rows, each with the next change_seq (and person number)."""
        first = self.rows + 1
        insert(self.database, first, n, change_type=change_type)
        self.rows += n
        return list(range(first, first + n))

    def feed_good(self, n: int) -> list[str]:
        ids = [person(g) for g in self._insert(n)]
        self.fed.update(ids)
        return ids

    def feed_bad(self) -> BadInput:
        (seq,) = self._insert(1, change_type="'MARRIAGE'")
        ((row_id,),) = self.database.query(f"SELECT id FROM {TABLE} WHERE change_seq = %s", (seq,))
        return BadInput(headers={"__connect.errors.topic": TABLE, "pg_table": TABLE, "pg_change_column": "change_seq",
                                 "pg_change_value": str(seq), "pg_id": str(row_id)})


class WebhookSinkHarness(SinkHarness):
    type: ClassVar[str] = "http_webhook_sink"

    @classmethod
    def static_config(cls) -> dict[str, Any]:
        return {"url": "https://dispatch.example.gov.cn/bus", "hmac_key": "env:CONFORMANCE_WEBHOOK_KEY"}

    def entry(self) -> dict[str, Any]:
        key = f"hmac-{uuid.uuid4().hex}"
        self.secrets = [key]
        self.env.monkeypatch.setenv("CONFORMANCE_WEBHOOK_KEY", key)
        self.endpoint: Endpoint = self.env.fixture("make_endpoint")(hmac_key=key)
        return {"name": self.named("conformance-webhook"), "type": self.type, "department": "fire_brigade",
                "subscription": "fire-alarms",
                "config": {"url": self.endpoint.url, "hmac_key": "env:CONFORMANCE_WEBHOOK_KEY", "timeout_s": 5}}

    def delivered(self) -> list[str]:
        return [r.json()[self.identity] for r in self.endpoint.accepted()]


class PostgresSinkHarness(SinkHarness):
    """Every upsert is seen through a trigger that appends the row's change id to an audit table."""

    type: ClassVar[str] = "postgres_sink"
    event_type: ClassVar[str] = "population_change"
    department: ClassVar[str] = "civil_affairs"
    identity: ClassVar[str] = "change_id"

    @classmethod
    def static_config(cls) -> dict[str, Any]:
        return {"dsn": "env:CONFORMANCE_PG_DSN", "table": "stats.population_change"}

    def entry(self) -> dict[str, Any]:
        self.database: Database = self.env.fixture("database")
        self.password = f"pw-{uuid.uuid4().hex}"
        self.secrets = [self.password]
        # The server trusts loopback: a password it ignores still must never show.
        self.env.monkeypatch.setenv("CONFORMANCE_PG_DSN", f"{self.database.dsn} password={self.password}")
        self.database.execute(
            "CREATE SCHEMA stats; CREATE TABLE stats.population_change (person_id text PRIMARY KEY);"
            "CREATE TABLE audit (n bigserial PRIMARY KEY, change_id text);"
            "CREATE FUNCTION audit_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO audit (change_id) VALUES (to_jsonb(NEW)->>'change_id'); RETURN NEW; END $$;"
            "CREATE TRIGGER audit AFTER INSERT OR UPDATE ON stats.population_change "
            "FOR EACH ROW EXECUTE FUNCTION audit_row();"
        )
        return {"name": self.named("conformance-postgres"), "type": self.type, "department": "statistics",
                "subscription": "population-statistics",
                "config": {"dsn": "env:CONFORMANCE_PG_DSN", "table": "stats.population_change",
                           "connect_timeout_s": 3}}

    def record(self) -> dict[str, Any]:
        return super().record() | {"person_id": f"P-{uuid.uuid4().hex[:12]}"}  # one row per record

    def delivered(self) -> list[str]:
        return [row[0] for row in self.database.query("SELECT change_id FROM audit ORDER BY n")]


class JsonlSinkHarness(SinkHarness):
    type: ClassVar[str] = "jsonl_file_sink"

    @classmethod
    def static_config(cls) -> dict[str, Any]:
        return {"path": "/srv/archive", "max_bytes": 1048576}

    def entry(self) -> dict[str, Any]:
        self.folder = self.env.tmp_path / "archive"
        return {"name": self.named("conformance-archive"), "type": self.type, "department": "fire_brigade",
                "subscription": "fire-alarms", "config": {"path": str(self.folder), "max_bytes": 4096}}

    def delivered(self) -> list[str]:
        out: list[str] = []
        for path in sorted(self.folder.glob("*.jsonl")):
            out += [json.loads(line)["value"][self.identity] for line in path.read_text().splitlines()]
        return out


#: Every connector type's harness.
HARNESSES: dict[str, type[Harness]] = {h.type: h for h in (
    HttpIngestHarness, MqttSourceHarness, FileDropHarness, RestPollerHarness, PostgresSourceHarness,
    WebhookSinkHarness, PostgresSinkHarness, JsonlSinkHarness,
)}


# -- the checks ------------------------------------------------------------------------------


def _models(model: type[BaseModel], seen: set[type[BaseModel]] | None = None) -> list[type[BaseModel]]:
    """``model`` and every model nested in its fields (also inside lists and dicts)."""
    seen = seen if seen is not None else set()
    if model in seen:
        return []
    seen.add(model)
    found = [model]

    def walk(annotation: Any) -> None:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            found.extend(_models(annotation, seen))
        for arg in getattr(annotation, "__args__", ()) or ():
            walk(arg)

    for info in model.model_fields.values():
        walk(info.annotation)
    return found


def check_config_model(harness: type[Harness]) -> None:
    kind = load_connector_class(harness.type, entry_points=conformance_entry_points())
    assert kind.side == harness.side, f"{harness.type} is a {kind.side}, its harness says {harness.side}"
    for model in _models(kind.config_model):
        assert model.model_config.get("extra") == "forbid", f"{model.__name__} must forbid unknown keys"
        for name, info in model.model_fields.items():
            where = f"{harness.type}: {model.__name__}.{info.alias or name}"
            assert (info.description or "").strip(), f"{where} has no description"
            assert info.examples, f"{where} has no example"

    valid = harness.static_config()
    assert config_problems(harness.type, valid, entry_points=conformance_entry_points()) == []
    fields = {info.alias or name: info for name, info in kind.config_model.model_fields.items()}
    wrong = [{**valid, "no_such_setting": 1}]
    for key, value in valid.items():  # inside nested settings too (auth, routes[0]...)
        if key not in fields or not _is_model_field(fields[key].annotation):
            continue
        if isinstance(value, dict):
            wrong.append({**valid, key: {**value, "no_such_setting": 1}})
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            wrong.append({**valid, key: [{**value[0], "no_such_setting": 1}, *value[1:]]})
    for config in wrong:
        problems = config_problems(harness.type, config, entry_points=conformance_entry_points())
        assert len(problems) == 1, problems
        loc, message = problems[0]
        assert loc[0] == "config" and loc[-1] == "no_such_setting", problems
        assert "unknown key 'no_such_setting'" in message and "the keys allowed here are" in message


def _is_model_field(annotation: Any) -> bool:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return True
    return any(_is_model_field(a) for a in getattr(annotation, "__args__", ()) or ())


@dataclass
class Live:
    """A harness with its peer open, and the runners made for it."""

    harness: Harness
    runners: list[ConnectorRunner] = field(default_factory=list)

    def runner(self) -> ConnectorRunner:
        h = self.harness
        connector = Connector.model_validate(self._entry)
        runner = ConnectorRunner(connector, h.city.topology, h.city.settings, topic=h.topic,
                                 entry_points=conformance_entry_points(), status_interval_s=1.0)
        self.runners.append(runner)
        return runner

    def start(self) -> ConnectorRunner:
        runner = self.runner().start()
        assert runner.state == "running" and runner.status().state == "running", runner.status()
        self.harness.attach(runner)
        return runner

    def __enter__(self) -> "Live":
        self.harness.env.fixture("caplog").set_level(logging.INFO)  # stdlib logs (uvicorn, psycopg...) too
        self._entry = self.harness.entry()
        self.harness.open()
        return self

    def __exit__(self, *exc: object) -> None:
        for runner in self.runners:
            runner.stop()
        self.harness.close()


def _until_delivered(harness: Harness, ids: list[str], what: str) -> None:
    wanted = set(ids)
    wait_until(lambda: wanted <= set(harness.delivered()), 20, what)


def _check_no_secret_shown(harness: Harness, logs: list[dict[str, Any]], runners: list[ConnectorRunner]) -> None:
    shown = json.dumps(logs, default=str) + harness.env.fixture("caplog").text
    shown += "".join(json.dumps(r.status().as_dict(), default=str) for r in runners)
    for secret in harness.secrets:
        assert secret not in shown, f"{harness.type}: a secret of its config was logged or shown in its status"


def check_live(harness: Harness) -> None:
    """Start, a bad input among good ones, stop, restart: one live session per type (each
    start of a sink costs a consumer group join, so the steps share them)."""
    with capture_logs() as logs, Live(harness) as live:
        first = live.start()
        before = harness.feed_good(2)
        _until_delivered(harness, before, "the first inputs delivered")
        bad = harness.feed_bad()
        before += harness.feed_good(1)
        _until_delivered(harness, before, "the good input after the bad one")
        harness.settle(first)
        _check_dead_letter(harness, first, bad)
        _check_stop(harness, first)

        while_down = harness.feed_good(2) if harness.feeds_while_down else []
        second = live.start()
        after = harness.feed_good(2)
        _until_delivered(harness, before + while_down + after, "every input delivered after the restart")
        harness.settle(second)

        seen = Counter(harness.delivered())
        repeated = {i: n for i, n in seen.items() if n > 1}
        assert not repeated, f"{harness.type} delivered these twice: {repeated}"
        assert set(seen) == set(before + while_down + after)
        handled = second.status().counts["published" if harness.side == "source" else "delivered"]
        assert handled == len(while_down + after), f"the restarted {harness.type} handled {handled} inputs, " \
            f"not the {len(while_down + after)} given since it stopped"
        assert second.status().counts["dead_lettered"] == 0, "the bad input was dead-lettered again after the restart"
        _check_no_secret_shown(harness, logs, live.runners)


def _check_stop(harness: Harness, runner: ConnectorRunner) -> None:
    began = time.monotonic()
    runner.stop()
    took = time.monotonic() - began
    assert runner.state == "stopped" and runner.status().state == "stopped", runner.status()
    assert took < harness.stop_within_s, f"{harness.type} took {took:.1f} s to stop"


def _check_dead_letter(harness: Harness, runner: ConnectorRunner, bad: BadInput) -> None:
    dead_topic = dlq_topic(harness.city.topology.namespace, runner.name)
    status = runner.status()
    assert status.state == "running", f"{harness.type} did not go on after the bad input: {status}"
    if not bad.dead_lettered:
        assert read_all(harness.city.settings, dead_topic, 1, timeout_s=1.0) == []
        assert status.counts["dead_lettered"] == 0
        return
    letters = read_all(harness.city.settings, dead_topic, 1)
    assert len(letters) == 1, f"{harness.type}: no dead letter on {dead_topic}"
    assert status.counts["dead_lettered"] == 1, status
    headers = text_headers(letters[0])
    for name in CONTEXT_HEADERS:
        assert headers.get(f"__connect.errors.{name}"), f"{harness.type}: dead letter without {name}: {headers}"
    assert headers["__connect.errors.connector.name"] == runner.name
    assert headers["__connect.errors.stage"] == bad.stage
    assert headers["__connect.errors.class.name"].endswith(type(runner.instance).__name__)
    error_class = headers["__connect.errors.exception.class.name"].rsplit(".", 1)[-1]
    assert error_class in headers["__connect.errors.exception.stacktrace"]
    for name, value in bad.headers.items():
        assert headers.get(name) == value, f"{harness.type}: dead letter header {name}: {headers.get(name)!r}"
    if bad.value is not None:
        assert letters[0].value() == bad.value


__all__ = [
    "HARNESSES", "PENDING", "BadInput", "Env", "Harness", "SinkHarness", "SourceHarness", "check_config_model",
    "check_live", "conformance_entry_points",
]
