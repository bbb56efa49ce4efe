"""The conformance harnesses of this repository's connector types: each drives one type with
a real peer through the suite of :mod:`bus.connect.conformance` (``test_conformance.py``
runs them). Adding a type: write its harness here and add it to :data:`HARNESSES` (until
then, name it in :data:`PENDING`)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import random
import uuid
from importlib.metadata import EntryPoint
from typing import Any, ClassVar

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from bus.connect.conformance import BadInput, Harness, SinkHarness, SourceHarness, wait_until
from bus.connect import GROUP, ConnectorRunner
from bus.demo.samples import sample
from tests.connectors.population_table import CREATE, TABLE, insert, person
from tests.connectors.rest_server import CaseServer, iso, to_ms
from tests.connectors.services import Database, mqtt_address
from tests.connectors.support import Endpoint, all_entry_points

#: Types other engineers are writing: their harnesses are still to come.
PENDING: tuple[str, ...] = ()


def conformance_entry_points() -> list[EntryPoint]:
    """The installed connector types and this repository's own (the same target twice is one type)."""
    return [*importlib.metadata.entry_points(group=GROUP), *all_entry_points()]


class DemoSource(SourceHarness):
    """A source harness fed with the demo city's records."""

    def sample(self, rng: random.Random) -> dict[str, Any]:
        return sample(self.event_type, rng)


class DemoSink(SinkHarness):
    """A sink harness fed with the demo city's records."""

    def sample(self, rng: random.Random) -> dict[str, Any]:
        return sample(self.event_type, rng)


class HttpIngestHarness(DemoSource):
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


class MqttSourceHarness(DemoSource):
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


class FileDropHarness(DemoSource):
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


class RestPollerHarness(DemoSource):
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


class PostgresSourceHarness(DemoSource):
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


class WebhookSinkHarness(DemoSink):
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


class PostgresSinkHarness(DemoSink):
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


class JsonlSinkHarness(DemoSink):
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

__all__ = ["HARNESSES", "PENDING", "conformance_entry_points"]
