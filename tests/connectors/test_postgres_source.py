"""The PostgreSQL source against the real PostgreSQL, broker and registry.

Each test has a database of its own (``database`` fixture: ``BUS_TEST_POSTGRES_DSN`` or
the local server) holding a change table shaped like the population base's."""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import threading
import uuid
from collections.abc import Callable, Iterator
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from structlog.testing import capture_logs

from bus.connect import ConnectorRunner
from bus.connect.config import ConnectorConfigInvalid, parse_config
from bus.connect.exceptions import ConnectorError
from bus.connect.registry import config_problems
from bus.consume.tail import tail
from bus.topology.models import Connector
from connectors.postgres_source import PostgresSource, PostgresSourceConfig, json_value, to_position_value
from tests.connectors.population_table import CREATE, TABLE, insert, person
from tests.connectors.services import Database, TcpProxy, database  # noqa: F401 (fixture)
from tests.connectors.support import entry_points, read_all, wait_until
from tests.fixtures.city import City
from bus.topology.names import dlq_topic

def pg_entry_points() -> list[EntryPoint]:
    return [*entry_points(), EntryPoint("postgres_source", "connectors.postgres_source:PostgresSource",
                                        "bus.connectors")]


@pytest.fixture
def source_runner(connector_city: City, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ConnectorRunner]]:
    runners: list[ConnectorRunner] = []

    def make(dsn: str, *, kind: type[PostgresSource] | None = None, **config: Any) -> ConnectorRunner:
        monkeypatch.setenv("TEST_POPULATION_DSN", dsn)
        connector = Connector.model_validate({
            "name": "population-base-cdc", "type": "postgres_source", "department": "civil_affairs",
            "publishes": ["population_change"],
            "config": {"dsn": "env:TEST_POPULATION_DSN", "table": TABLE, "columns": {"person_no": "person_id"},
                       "batch_size": 100, "interval_s": 0.1, "progress_interval_s": 0.2, "connect_timeout_s": 3,
                       "errors.retry.delay.max.ms": 500, **config},
        })
        runner = ConnectorRunner(connector, connector_city.topology, connector_city.settings, kind=kind,
                                 entry_points=pg_entry_points(), status_interval_s=1.0)
        runners.append(runner)
        return runner

    yield make
    for runner in runners:
        runner.stop()


def published(city: City) -> list[Any]:
    """Every record on the population_change topic (decoded)."""
    return list(tail(city.settings, [city.topology.event_type("population_change").topic], exit_at_end=True))


def keys_on_topic(city: City) -> collections.Counter[str]:
    return collections.Counter(r.value["person_id"] for r in published(city))


def count(runner: ConnectorRunner, name: str = "published") -> int:
    return int(runner.status().counts.get(name, 0))


def test_a_snapshot_of_5000_rows_is_published_once_in_bounded_batches_then_new_rows_follow(
    connector_city: City, database: Database, source_runner: Callable[..., ConnectorRunner],
) -> None:
    database.execute(CREATE)
    insert(database, 1, 5_000)
    with capture_logs() as logs:
        runner = source_runner(database.dsn, batch_size=250).start()
        wait_until(lambda: count(runner) == 5_000 and runner.status().detail["phase"] == "streaming", 120,
                   "the snapshot")
    detail = runner.status().detail
    # bounded memory: one query per batch, never more than batch_size rows held
    assert detail["max_rows_held"] == 250
    assert detail["fetches"] >= 20
    assert detail["rows_done"] == 5_000
    done = [e for e in logs if e["event"] == "snapshot done"]
    assert len(done) == 1 and done[0]["rows_done"] == 5_000
    print(f"\nsnapshot of 5,000 rows: {done[0]['seconds']} s, {done[0]['rate_per_s']} rows/s "
          f"({detail['fetches']} queries)")
    ready = next(e for e in logs if e["event"] == "postgres source ready")
    assert ready["order"] == "change_seq, id" and ready["server"].startswith("postgres@")
    assert not [e for e in logs if "no index" in e["event"]]

    keys = keys_on_topic(connector_city)
    assert len(keys) == 5_000 and set(keys.values()) == {1}  # every row, exactly once
    record = next(r.value for r in published(connector_city) if r.value["person_id"] == person(7))
    assert record["change_type"] == "BIRTH"
    assert record["effective_date"] == "2026-01-08"
    assert record["recorded_at"] == "2026-03-01T00:00:07.000Z"  # 08:00:07+08 in UTC
    assert record["birth_date"] == "1990-01-08"
    assert record["district"] == "CHENGZHONG" and record["name"] == "Name 7"
    assert runner.status().position["after"] == [5_000, 5_000]

    # new changes after the snapshot are polled
    insert(database, 5_001, 5)
    wait_until(lambda: count(runner) == 5_005, 30, "the new rows")
    wait_until(lambda: runner.status().position.get("after") == [5_005, 5_005], 10, "the position")
    keys = keys_on_topic(connector_city)
    assert len(keys) == 5_005 and set(keys.values()) == {1}
    assert count(runner, "dead_lettered") == 0


def test_a_table_that_grows_during_the_snapshot_is_estimated_again_and_never_shown_done_early(
    connector_city: City, database: Database, source_runner: Callable[..., ConnectorRunner],
) -> None:
    """As in `bus up --demo`, where the registry's bulk load is still being written while the
    snapshot reads it: the first estimate is passed long before the end."""
    database.execute(CREATE)
    insert(database, 1, 1000)
    taken, grown = threading.Event(), threading.Event()

    class HeldAfterItsFirstBatch(PostgresSource):
        """Waits, once its first batch is out (the estimate is taken), for the table to grow:
        a snapshot of 1,000 rows may otherwise end before the test writes the next 9,000."""

        def flush(self) -> None:
            super().flush()
            if not taken.is_set():
                taken.set()
                assert grown.wait(60), "the test did not write the new rows"

    with capture_logs() as logs:
        # a progress line after every full batch: one lands past the first 1,000 rows whatever the speed
        runner = source_runner(database.dsn, kind=HeldAfterItsFirstBatch, progress_interval_s=1e-6).start()
        assert taken.wait(60), "the snapshot did not start"
        insert(database, 1001, 9000)
        grown.set()
        wait_until(lambda: runner.status().detail["phase"] == "streaming", 60, "the end of the snapshot")
    assert count(runner) == 10_000
    progress = [e for e in logs if e["event"] == "snapshot progress"]
    assert any(e["rows_done"] > 1000 for e in progress), "no progress line past the first 1,000 rows"
    for line in progress:
        assert line["percent"] is None or line["percent"] < 100, line
        assert line["total_estimate"] is None or line["total_estimate"] > line["rows_done"], line
    assert max(e["total_estimate"] or 0 for e in progress) > 5000  # estimated again, with the new rows


def test_a_snapshot_stopped_half_way_resumes_where_it_stopped_without_repeats_or_gaps(
    connector_city: City, database: Database, source_runner: Callable[..., ConnectorRunner],
) -> None:
    database.execute(CREATE)
    insert(database, 1, 20_000)
    with capture_logs() as logs:
        first = source_runner(database.dsn).start()
        wait_until(lambda: count(first) >= 1000 and any(e["event"] == "snapshot progress" for e in logs), 60,
                   "part of the snapshot and a progress line")
        first.stop()
    stopped_at = count(first)
    assert stopped_at < 20_000, "the snapshot ended before the stop: make the table bigger"
    assert first.status().position["snapshot"] is True and first.status().position["rows"] == stopped_at
    progress = [e for e in logs if e["event"] == "snapshot progress"]
    assert progress, "no progress line"
    assert progress[-1]["total_estimate"] > 0 and progress[-1]["rate_per_s"] > 0
    assert 0 < progress[-1]["rows_done"] <= stopped_at

    second = source_runner(database.dsn).start()
    wait_until(lambda: second.status().detail["phase"] == "streaming", 60, "the rest of the snapshot")
    assert count(second) == 20_000 - stopped_at
    assert second.status().detail["rows_done"] == 20_000  # progress went on from the saved count, not from 0
    keys = keys_on_topic(connector_city)
    assert set(keys) == {person(n) for n in range(1, 20_001)}
    assert set(keys.values()) == {1}


class CrashingSource(PostgresSource):
    """Dies (as a killed process would) after its third batch was acknowledged, before
    the position of that batch is saved."""

    def flush(self) -> None:
        if self.rows_done >= 300:
            raise RuntimeError("simulated crash before the position was saved")
        super().flush()


def test_a_crash_between_acknowledgement_and_saved_position_repeats_only_that_batch(
    connector_city: City, database: Database, source_runner: Callable[..., ConnectorRunner],
) -> None:
    database.execute(CREATE)
    insert(database, 1, 1000)
    crashing = source_runner(database.dsn, kind=CrashingSource).start()
    assert crashing.wait(30) == "failed"
    assert crashing.status().position["after"] == [200, 200]  # batches 1 and 2 were saved
    source_runner(database.dsn).start()
    wait_until(lambda: sum(keys_on_topic(connector_city).values()) == 1100, 60, "the restart")
    keys = keys_on_topic(connector_city)
    assert set(keys) == {person(n) for n in range(1, 1001)}  # no gap
    assert {k for k, n in keys.items() if n > 1} == {person(n) for n in range(201, 301)}  # batch 3 only


def test_a_saved_position_in_another_order_is_a_clear_error_not_a_silent_rescan(
    database: Database, source_runner: Callable[..., ConnectorRunner],
) -> None:
    database.execute(CREATE)
    insert(database, 1, 20)
    first = source_runner(database.dsn).start()
    wait_until(lambda: first.status().position.get("after") == [20, 20], 30, "the position")
    first.stop()
    with pytest.raises(ConnectorError) as caught:
        source_runner(database.dsn, change_column="id").start()
    assert "order of ['change_seq', 'id']" in str(caught.value) and "new name" in str(caught.value)


def test_rows_sharing_a_change_value_across_batches_are_each_published_once(
    connector_city: City, database: Database, source_runner: Callable[..., ConnectorRunner],
) -> None:
    database.execute(CREATE)
    insert(database, 1, 250, seq="g / 60")  # runs of 60 equal values over batches of 7
    runner = source_runner(database.dsn, batch_size=7).start()
    wait_until(lambda: count(runner) == 250, 60, "every row")
    insert(database, 251, 30, seq="4")  # late rows with the last change value seen: after it by id
    wait_until(lambda: count(runner) == 280, 30, "the rows sharing the last value")
    keys = keys_on_topic(connector_city)
    assert set(keys) == {person(n) for n in range(1, 281)} and set(keys.values()) == {1}


def test_a_timestamp_change_column_with_ties_and_local_times(
    connector_city: City, database: Database, source_runner: Callable[..., ConnectorRunner],
) -> None:
    database.execute(
        "CREATE SCHEMA population; CREATE TABLE population.person_change (change_id uuid PRIMARY KEY, "
        "changed_at timestamp(6) NOT NULL, person_id text NOT NULL, change_type text NOT NULL, "
        "effective_date date NOT NULL, recorded_at timestamp NOT NULL)")
    database.execute(
        "INSERT INTO population.person_change SELECT gen_random_uuid(), "
        "timestamp '2026-05-01 10:00:00' + (g / 3) * interval '1 microsecond', 'P' || lpad(g::text, 10, '0'), "
        "'MOVE_IN', date '2026-05-01', timestamp '2026-05-01 10:00:00' FROM generate_series(1, 40) AS g")
    runner = source_runner(database.dsn, change_column="changed_at", columns={}, batch_size=4,
                           timezone="Asia/Shanghai").start()
    wait_until(lambda: count(runner) == 40, 30, "every row")
    records = published(connector_city)
    assert sorted(r.value["person_id"] for r in records) == [person(n) for n in range(1, 41)]
    assert {r.value["recorded_at"] for r in records} == {"2026-05-01T02:00:00.000Z"}  # 10:00 in Shanghai
    assert runner.status().position["order"] == ["changed_at", "change_id"]
    assert runner.status().position["after"][0] == "2026-05-01T10:00:00.000013"


def test_a_row_that_cannot_become_a_record_is_dead_lettered_with_its_table_and_change_value(
    connector_city: City, database: Database, source_runner: Callable[..., ConnectorRunner],
) -> None:
    database.execute(CREATE)
    insert(database, 1, 30)
    database.execute("UPDATE population.person_change SET change_type = 'MARRIAGE' WHERE id = 12")
    database.execute("UPDATE population.person_change SET district = 'ATLANTIS' WHERE id = 30")  # last of a batch
    runner = source_runner(database.dsn, batch_size=10).start()
    letters = read_all(connector_city.settings, dlq_topic(connector_city.topology.namespace, runner.name), 2)
    assert len(letters) == 2, (runner.state, runner.error, runner.status())
    letters.sort(key=lambda m: int(dict(m.headers())["pg_change_value"]))
    first = {k: v.decode() for k, v in letters[0].headers()}
    assert first["__connect.errors.topic"] == TABLE
    assert first["__connect.errors.stage"] == "TASK_POLL"
    assert first["__connect.errors.exception.class.name"] == "connectors.postgres_source.RowInvalid"
    assert "change_seq=12, id=12" in first["__connect.errors.exception.message"]
    assert "MARRIAGE" in first["__connect.errors.exception.message"]
    assert (first["pg_table"], first["pg_change_column"], first["pg_change_value"], first["pg_id"]) == (
        TABLE, "change_seq", "12", "12")
    assert b'"change_type": "MARRIAGE"' in letters[0].value()
    wait_until(lambda: count(runner) == 28, 30, "the good rows")
    wait_until(lambda: runner.status().position.get("after") == [30, 30], 10, "the position past the bad rows")
    assert runner.state == "running"
    assert set(keys_on_topic(connector_city)) == {person(n) for n in range(1, 31)} - {person(12), person(30)}


@pytest.mark.parametrize(
    ("setup", "config", "expected"),
    [
        ("", {}, ["table population.person_change does not exist", "set `table`"]),
        ("CREATE SCHEMA population; CREATE TABLE population.person_changes (id int)", {},
         ["did you mean population.person_changes?"]),
        (CREATE, {"change_column": "change_sequence"}, ["change_column 'change_sequence' is no column",
                                                        "did you mean 'change_seq'?"]),
        (CREATE, {"change_column": "person_no"}, ["change_column person_no", "is text", "bigserial"]),
        (CREATE, {"columns": {}}, ["required field(s) person_id", "`columns:"]),
        (CREATE, {"columns": {"person_nr": "person_id"}}, ["renames 'person_nr', which is no column"]),
        (CREATE, {"columns": {"person_no": "person"}}, ["'person', which is no field of population_change"]),
        (CREATE, {"id_column": "name"}, ["id_column name must be a NOT NULL unique column"]),
        ("CREATE SCHEMA population; CREATE TABLE population.person_change (change_seq bigint, person_no text, "
         "change_id uuid, change_type text, effective_date date, recorded_at timestamptz)", {},
         ["is not unique and the table has no primary key", "set `id_column`"]),
    ],
)
def test_a_table_that_does_not_fit_is_a_clear_error_naming_what_to_fix(
    database: Database, source_runner: Callable[..., ConnectorRunner], setup: str, config: dict[str, Any],
    expected: list[str],
) -> None:
    if setup:
        database.execute(setup)
    runner = source_runner(database.dsn, **config)
    with pytest.raises(ConnectorError) as caught:
        runner.start()
    for text in expected:
        assert text in str(caught.value)
    assert runner.state == "failed"


def test_an_unreachable_database_at_start_is_a_bounded_clear_error_and_no_password_is_ever_logged(
    database: Database, source_runner: Callable[..., ConnectorRunner],
) -> None:
    secret = "s3cret-Pw-4711"
    for dsn in (f"host=127.0.0.1 port=1 user=cdc password={secret} dbname=population",
                f"postgresql://cdc:{secret}@127.0.0.1:1/population"):
        runner = source_runner(dsn)
        with capture_logs() as logs, pytest.raises(ConnectorError) as caught:
            runner.start()
        message = str(caught.value)
        assert "cannot connect to PostgreSQL at cdc@127.0.0.1:1/population" in message
        assert "env:TEST_POPULATION_DSN" in message
        assert secret not in message and secret not in repr(logs)
        assert runner.state == "failed"
    # a password in a working dsn (trust auth ignores it) appears in no log line or status either
    database.execute(CREATE)
    insert(database, 1, 5)
    with capture_logs() as logs:
        runner = source_runner(f"{database.dsn} password={secret}").start()
        wait_until(lambda: count(runner) == 5, 30, "the rows")
        status = runner.status()
    assert secret not in repr(logs) and secret not in repr(status.as_dict())


def test_the_database_going_away_is_retried_and_reading_resumes_after_the_last_row(
    connector_city: City, database: Database, source_runner: Callable[..., ConnectorRunner],
) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    info = conninfo_to_dict(database.dsn)
    proxy = TcpProxy((str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432))).start()
    try:
        database.execute(CREATE)
        insert(database, 1, 50)
        runner = source_runner(make_conninfo(database.dsn, host="127.0.0.1", port=str(proxy.port))).start()
        wait_until(lambda: count(runner) == 50, 30, "the first rows")
        proxy.cut()
        insert(database, 51, 50)
        wait_until(lambda: count(runner, "retries") >= 2, 20, "retries while the database is away")
        assert count(runner) == 50
        proxy.restore()
        wait_until(lambda: count(runner) == 100, 30, "the rows written meanwhile")
        keys = keys_on_topic(connector_city)
        assert set(keys) == {person(n) for n in range(1, 101)} and set(keys.values()) == {1}
        assert runner.state == "running"
    finally:
        proxy.stop()


def test_the_config_checks_its_settings_and_the_shipped_entry_needs_only_a_dsn() -> None:
    good = {"dsn": "env:POPULATION_BASE_DSN", "table": TABLE}
    parsed = parse_config(PostgresSourceConfig, "population-base-cdc", good, resolve=False)
    assert isinstance(parsed, PostgresSourceConfig)
    assert (parsed.change_column, parsed.batch_size, parsed.interval_s) == ("change_seq", 1000, 5.0)
    for bad, wanted in [
        ({"dsn": "postgresql://u:pw@db/pop"}, "never written in clear"),
        ({"table": "person_change"}, "table"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"batch_size": 0}, "batch_size"),
        ({"columns": {"person no": "person_id"}}, "columns"),
        ({"change_colum": "x"}, "did you mean 'change_column'?"),
    ]:
        with pytest.raises(ConnectorConfigInvalid) as caught:
            parse_config(PostgresSourceConfig, "population-base-cdc", good | bad, resolve=False)
        assert wanted in str(caught.value), str(caught.value)
    assert config_problems("postgres_source", good, entry_points=pg_entry_points()) == []
    problems = config_problems("postgres_source", {"table": TABLE}, entry_points=pg_entry_points())
    assert [loc for loc, _ in problems] == [("config", "dsn")]


def test_column_values_become_json_the_schema_accepts() -> None:
    shanghai = dt.timezone(dt.timedelta(hours=8))
    assert json_value(dt.datetime(2026, 1, 2, 3, 4, 5, 678000), shanghai) == "2026-01-01T19:04:05.678Z"
    assert json_value(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc), shanghai) == "2026-01-02T03:04:05.000Z"
    assert json_value(dt.date(2026, 2, 28), shanghai) == "2026-02-28"
    assert json_value(decimal.Decimal("42"), shanghai) == 42
    assert json_value(decimal.Decimal("1.5"), shanghai) == 1.5
    assert json_value(uuid.UUID(int=1), shanghai) == "00000000-0000-0000-0000-000000000001"
    assert json_value(b"\x00\x01", shanghai) == "AAE="
    assert json_value(None, shanghai) is None
    # positions keep full precision, to cast back to exactly the value read
    assert to_position_value(dt.datetime(2026, 1, 2, 3, 4, 5, 123456)) == "2026-01-02T03:04:05.123456"
    assert to_position_value(10**15) == 10**15

