"""The PostgreSQL upsert sink against the real broker, registry and PostgreSQL.

Records are put on a topic of the test in the wire format with CloudEvents headers, as
the router puts them on a subscription topic; each test has a database of its own."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from typing import Any

import fastavro
import pytest
from confluent_kafka import Producer
from structlog.testing import capture_logs

from bus.connect import ConnectorRunner
from bus.connect.exceptions import ConnectorError
from bus.demo.samples import GENERATORS
from bus.kafka.config import producer_config
from bus.registry.client import registry_client
from bus.schemas import wire
from bus.registry.registration import ensure_registered
from bus.topology.models import Connector
from connectors.postgres_sink import columns_of
from bus.routing.plan import derive_schema
from tests.connectors.services import Database, TcpProxy, database  # noqa: F401 (fixture)
from tests.connectors.support import committed, entry_points, produce_wire_records, read_all, wait_until
from tests.fixtures.city import REPO, City
from bus.topology.names import dlq_topic
from bus.topology.validate import load_topology

TABLE = "stats.population_change"
PEOPLE = [f"P{n:010d}" for n in range(1, 6)]


def sink_entry_points() -> list[EntryPoint]:
    return [*entry_points(), EntryPoint("postgres_sink", "connectors.postgres_sink:PostgresSink", "bus.connectors")]


def changes(n: int, seed: int = 3) -> list[dict[str, Any]]:
    """``n`` population changes over a few people (keys), each with a counter in its address."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        change = GENERATORS["population_change"](rng)
        out.append(change | {"person_id": PEOPLE[i % len(PEOPLE)], "address": f"{i} Test Road"})
    return out


def last_per_person(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["person_id"]: r for r in records}


@pytest.fixture
def pg_runner(connector_city: City, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ConnectorRunner]]:
    runners: list[ConnectorRunner] = []

    def make(dsn: str, topic: str, *, name: str = "statistics-population-base", **config: Any) -> ConnectorRunner:
        monkeypatch.setenv("TEST_POSTGRES_DSN", dsn)
        connector = Connector.model_validate({
            "name": name, "type": "postgres_sink", "department": "statistics", "subscription": "population-statistics",
            "config": {"dsn": "env:TEST_POSTGRES_DSN", "table": TABLE, "connect_timeout_s": 3,
                       "errors.retry.delay.max.ms": 500, **config},
        })
        runner = ConnectorRunner(connector, connector_city.topology, connector_city.settings, topic=topic,
                                 entry_points=sink_entry_points(), status_interval_s=1.0)
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.stop()


def produce(city: City, topic: str, records: list[dict[str, Any]]) -> None:
    produce_wire_records(city.settings, city.topology, topic, records, event_type="population_change",
                         department="civil_affairs")


def tombstone(city: City, topic: str, key: str) -> None:
    producer = Producer(producer_config(city.settings, client_id="test-tombstone"))
    producer.produce(topic, key=key.encode(), value=None)
    assert producer.flush(30) == 0


def table_state(db: Database) -> list[tuple]:
    return db.query(f"SELECT * FROM {TABLE} ORDER BY person_id")


def rows_by_person(db: Database) -> dict[str, dict[str, Any]]:
    with db.connect() as conn:
        cur = conn.execute(f"SELECT * FROM {TABLE}")
        names = [c.name for c in cur.description]
        return {row[names.index("person_id")]: dict(zip(names, row)) for row in cur.fetchall()}


def test_the_table_is_created_from_the_schema_holds_the_last_record_of_each_key_and_a_replay_changes_nothing(
    connector_city: City, topic_factory: Callable[..., str], database: Database,
    pg_runner: Callable[..., ConnectorRunner],
) -> None:
    topic = topic_factory("sub", partitions=2)
    records = changes(23)
    records[7]["change_type"] = "DEATH"  # a death is an upsert, not a delete
    records[7]["person_id"] = "P-DEATH"
    produce(connector_city, topic, records)
    tombstone(connector_city, topic, PEOPLE[1])  # deletes the row of PEOPLE[1]
    runner = pg_runner(database.dsn, topic).start()
    expected = last_per_person(records)
    del expected[PEOPLE[1]]
    wait_until(lambda: database.query(f"SELECT count(*) FROM {TABLE}")[0][0] == len(expected)
               and {r["address"] for r in rows_by_person(database).values()} == {r["address"] for r in expected.values()},
               30, "the last record of each person in the table")
    wait_until(lambda: sum(committed(connector_city.settings, runner.group_id, topic, 2)) == 24, 10, "commits")
    assert runner.status().counts.get("dead_lettered", 0) == 0

    types = dict(database.query(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = 'stats' "
        "AND table_name = 'population_change'"))
    assert types["effective_date"] == "date"
    assert types["recorded_at"] == "timestamp with time zone"
    assert types["change_id"] == "uuid"
    assert types["birth_date"] == "text"  # masked (generalised) for statistics: text
    assert types["district"] == "text"
    pk = database.query("SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                        "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'stats.population_change'::regclass "
                        "AND i.indisprimary")
    assert pk == [("person_id",)]
    rows = rows_by_person(database)
    assert rows["P-DEATH"]["change_type"] == "DEATH"
    assert PEOPLE[1] not in rows  # the tombstone deleted it
    for person, record in expected.items():
        assert rows[person]["change_id"].hex == record["change_id"].replace("-", "")
        assert rows[person]["effective_date"].isoformat() == record["effective_date"]
    before = table_state(database)
    runner.stop()

    # A replay of the whole subscription (a new consumer group) leaves the same table.
    replay = pg_runner(database.dsn, topic, name="statistics-population-base-replay").start()
    wait_until(lambda: sum(committed(connector_city.settings, replay.group_id, topic, 2)) == 24, 30, "the replay")
    assert table_state(database) == before


def test_a_new_optional_field_becomes_a_nullable_column(
    connector_city: City, topic_factory: Callable[..., str], database: Database,
    pg_runner: Callable[..., ConnectorRunner],
) -> None:
    topic = topic_factory("sub")
    produce(connector_city, topic, changes(3))
    runner = pg_runner(database.dsn, topic).start()
    wait_until(lambda: committed(connector_city.settings, runner.group_id, topic) == [3], 30, "the first records")

    event = connector_city.topology.schema_for("population_change")
    evolved = json.loads(json.dumps(event.schema))
    evolved["fields"].append({"name": "marital_status", "type": ["null", "string"], "default": None,
                              "doc": "Added later."})
    client = registry_client(connector_city.settings)
    schema_id = ensure_registered(client, f"{topic}-value", json.dumps(evolved), "NONE")
    parsed = fastavro.parse_schema(evolved)
    datum = {f["name"]: None for f in evolved["fields"]} | {
        "change_id": "8e7c1a10-0000-4000-8000-000000000001", "person_id": "P-NEW", "change_type": "BIRTH",
        "effective_date": dt.date(2026, 1, 2), "recorded_at": dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.timezone.utc),
        "marital_status": "SINGLE",
    }
    producer = Producer(producer_config(connector_city.settings, client_id="test-evolved"))
    producer.produce(topic, key=b"P-NEW", value=wire.encode(schema_id, parsed, datum))
    assert producer.flush(30) == 0

    wait_until(lambda: committed(connector_city.settings, runner.group_id, topic) == [4], 30, "the evolved record")
    nullable = database.query("SELECT is_nullable, data_type FROM information_schema.columns WHERE "
                              "table_schema = 'stats' AND table_name = 'population_change' "
                              "AND column_name = 'marital_status'")
    assert nullable == [("YES", "text")]
    rows = rows_by_person(database)
    assert rows["P-NEW"]["marital_status"] == "SINGLE"
    assert sum(1 for r in rows.values() if r["marital_status"] is None) == 3  # older rows: NULL


def test_a_bad_dsn_is_a_clear_error_naming_the_host_without_the_password(
    connector_city: City, topic_factory: Callable[..., str], pg_runner: Callable[..., ConnectorRunner],
) -> None:
    topic = topic_factory("sub")
    secret = "s3cret-Pw-4711"
    for dsn in (f"host=127.0.0.1 port=1 user=stats password={secret} dbname=population",
                f"postgresql://stats:{secret}@127.0.0.1:1/population"):
        runner = pg_runner(dsn, topic)
        with capture_logs() as logs, pytest.raises(ConnectorError) as caught:
            runner.start()
        message = str(caught.value)
        assert "127.0.0.1:1" in message and "stats@" in message and "cannot connect to PostgreSQL" in message
        assert secret not in message
        assert secret not in repr(logs)
        assert runner.state == "failed"
    with pytest.raises(ConnectorError) as caught:
        pg_runner(f"host=127.0.0.1 port=1 user=stats password={secret} dbname=x", topic,
                  table="no_schema_qualifier").start()
    assert "table" in str(caught.value) and secret not in str(caught.value)


def test_the_database_going_away_mid_stream_is_retried_then_every_record_is_written(
    connector_city: City, topic_factory: Callable[..., str], database: Database,
    pg_runner: Callable[..., ConnectorRunner],
) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    info = conninfo_to_dict(database.dsn)
    proxy = TcpProxy((str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432))).start()
    try:
        topic = topic_factory("sub")
        first = changes(10, seed=1)
        produce(connector_city, topic, first)
        runner = pg_runner(make_conninfo(database.dsn, host="127.0.0.1", port=str(proxy.port)), topic).start()
        wait_until(lambda: committed(connector_city.settings, runner.group_id, topic) == [10], 30, "the first records")

        proxy.cut()  # the database is gone for the sink
        second = changes(10, seed=2)
        produce(connector_city, topic, second)
        wait_until(lambda: runner.status().counts.get("retries", 0) >= 2, 20, "retries while the database is away")
        assert committed(connector_city.settings, runner.group_id, topic) == [10]  # nothing committed meanwhile
        proxy.restore()

        wait_until(lambda: committed(connector_city.settings, runner.group_id, topic) == [20], 30, "the rest")
        rows = rows_by_person(database)
        assert {p: r["address"] for p, r in rows.items()} == {p: r["address"] for p, r in last_per_person(first + second).items()}
        assert runner.state == "running"
        assert runner.status().counts.get("dead_lettered", 0) == 0
    finally:
        proxy.stop()


def test_column_types_follow_avro_types_and_masked_fields_are_text() -> None:
    topology = load_topology(REPO / "topology.yaml")
    event = topology.schema_for("population_change")
    clear = columns_of(derive_schema(event, topology.selection("population-registry"),
                                     dict(topology.treatments("population-registry"))))
    assert clear["birth_date"] == ("date", False)
    assert clear["gender"] == ("text", False)
    assert clear["recorded_at"] == ("timestamptz", False)
    masked = columns_of(derive_schema(event, topology.selection("population-statistics"),
                                      dict(topology.treatments("population-statistics"))))
    assert masked["birth_date"] == ("text", False)
    assert columns_of({"type": "record", "name": "X", "fields": [
        {"name": "a", "type": "long"}, {"name": "b", "type": ["null", "double"]},
        {"name": "c", "type": {"type": "array", "items": "string"}}, {"name": "d", "type": ["int", "string"]},
        {"name": "e", "type": "boolean"}, {"name": "f", "type": "bytes"},
    ]}) == {"a": ("bigint", False), "b": ("double precision", False), "c": ("jsonb", True), "d": ("jsonb", True),
            "e": ("boolean", False), "f": ("bytea", False)}


def test_a_row_the_database_refuses_is_dead_lettered_and_the_others_are_written(
    connector_city: City, topic_factory: Callable[..., str], database: Database,
    pg_runner: Callable[..., ConnectorRunner],
) -> None:
    database.execute("CREATE SCHEMA stats; CREATE TABLE stats.population_change (person_id text PRIMARY KEY, "
                     "address text CHECK (address <> '2 Test Road'))")
    topic = topic_factory("sub")
    produce(connector_city, topic, changes(5))
    runner = pg_runner(database.dsn, topic).start()
    letters = read_all(connector_city.settings, dlq_topic(connector_city.topology.namespace, runner.name), 1)
    assert len(letters) == 1
    headers = {k: v.decode() for k, v in letters[0].headers()}
    assert headers["__connect.errors.exception.class.name"] == "connectors.postgres_sink.RowRefused"
    assert "refused the row" in headers["__connect.errors.exception.message"]
    wait_until(lambda: committed(connector_city.settings, runner.group_id, topic) == [5], 20, "commits past it")
    assert sorted(rows_by_person(database)) == sorted(set(PEOPLE) - {PEOPLE[2]})


def test_an_existing_table_without_a_unique_key_is_a_clear_error(
    connector_city: City, topic_factory: Callable[..., str], database: Database,
    pg_runner: Callable[..., ConnectorRunner],
) -> None:
    database.execute("CREATE SCHEMA stats; CREATE TABLE stats.population_change (person_id text)")
    with pytest.raises(ConnectorError) as caught:
        pg_runner(database.dsn, topic_factory("sub")).start()
    assert "ADD PRIMARY KEY (person_id)" in str(caught.value)


def test_sinks_starting_at_once_into_one_new_schema_all_start(
    pg_runner: Callable[..., ConnectorRunner], database: Database, topic_factory: Callable[..., str],
) -> None:
    """CREATE SCHEMA IF NOT EXISTS is not safe against a concurrent one: without the schema
    lock, one of these failed to start (UniqueViolation) in most runs."""
    from concurrent.futures import ThreadPoolExecutor

    runners = [pg_runner(database.dsn, topic_factory("pg-race"), name=f"stats-sink-{i}", table=f"fresh.t{i}")
               for i in range(4)]
    with ThreadPoolExecutor(len(runners)) as pool:
        list(pool.map(lambda runner: runner.start(30), runners))
    assert [runner.state for runner in runners] == ["running"] * len(runners)
