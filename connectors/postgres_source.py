"""PostgreSQL source: the change feed of a table (the unified population base), by polling.

- **Keyset pagination on a change column.** The table has a column that grows with every
  change (``change_column``: a ``bigserial``/``bigint`` sequence or a ``timestamptz``). Rows
  are read in ``(change_column, tie-breaker)`` order, ``batch_size`` at a time, each batch one
  query ``WHERE (change, id) > (last change, last id) ORDER BY change, id LIMIT n``. The
  tie-breaker (``id_column``, default the primary key) makes the order total when several
  rows share a change value; it is not needed when the change column alone is unique.
  Each batch holds at most ``batch_size`` rows in memory and no transaction stays open
  between batches, so a snapshot of millions of rows neither grows the process nor holds
  back the database's vacuum. An index on ``(change_column, id_column)`` makes each batch an
  index range scan; without one a warning says which index to create.
- **Snapshot, then polling.** The first run reads the whole table (the snapshot), logging
  rows done, the planner's estimate of the total (estimated again when the snapshot passes it:
  rows written meanwhile) and the rate every ``progress_interval_s`` (also in
  ``bus connector status``); once a batch comes back short, the source polls for new rows
  every ``interval_s``.
- **Resumable, at least once.** A batch is published pipelined (:meth:`Source.produce_many`);
  the position (last change value and tie-breaker, rows done) is saved to the offsets topic
  only after the broker acknowledged every record of the batch. A restarted connector
  resumes after that row: a stop between batches repeats nothing, a crash between the
  acknowledgement and the save repeats that one batch, nothing is ever skipped.
- **Rows to records.** Columns map to the event type's fields by name (``columns`` renames);
  columns that are no field are not read. Dates become ``YYYY-MM-DD``, times RFC 3339 (a
  ``timestamp without time zone`` is read in ``timezone``), UUIDs and numerics plain JSON.
  A row that cannot become a valid record goes to the dead-letter topic (its table as
  ``__connect.errors.topic``, the change value and id in the ``pg_*`` headers, the row as
  JSON) and the source goes on; a record the broker did not acknowledge is published again
  alone, with backoff. Neither holds back the position of the rest of the batch (with
  ``errors.tolerance: none`` a bad row stops the connector at its batch instead).
- **The database going away** (connection lost, server restarting) is retried with backoff
  within ``errors.retry.timeout``, reconnecting, from the last acknowledged row; after that
  the connector stops with the error. At start, a database that cannot be reached or a
  table that does not fit the configuration is a clear error at once.

What it cannot see: rows deleted (a delete is no change row), and a row that becomes
visible *after* rows with a higher change value were read: a transaction that took its
sequence value, or its ``DEFAULT now()`` (the transaction's start), long before it
committed, or a clock that went back. A change table written in change order (one writer,
or values assigned at commit, e.g. by a trigger taking a lock) is read completely.
"""

from __future__ import annotations

import datetime as dt
import decimal
import difflib
import json
import threading
import time
import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import psycopg
from psycopg import sql
from pydantic import Field, StringConstraints, field_validator
from pydantic_core import PydanticCustomError

from bus.connect.base import Source, SourceContext
from bus.connect.config import ConnectorConfig, SecretRef
from bus.connect.exceptions import ConnectorError, ConnectorFailed, Interrupted
from bus.connect.offsets import Position
from bus.connect.records import RawRecord
from bus.errors import BusError
from bus.kafka.exceptions import KafkaError
from bus.registry.exceptions import RegistryUnreachable
from bus.schemas.records import to_json
from connectors._postgres import DatabaseUnreachable, scrub_dsn, server_of

_IDENT = r"[A-Za-z_][A-Za-z0-9_$]{0,62}"
Ident = Annotated[str, StringConstraints(pattern=rf"^{_IDENT}$")]


class PostgresSourceConfig(ConnectorConfig):
    """Settings of a `postgres_source`."""

    dsn: SecretRef = Field(
        description="Connection string of the database as a reference, env:NAME or file:PATH (never in clear); "
        "the secret is a libpq string (`host=db1 dbname=pop user=cdc password=...`) or a `postgresql://` URL. "
        "The user needs SELECT on the table.",
        examples=["env:POPULATION_BASE_DSN", "file:/run/secrets/population-base-dsn"],
    )
    table: str = Field(
        pattern=rf"^{_IDENT}\.{_IDENT}$",
        description="Schema-qualified table whose rows are the changes.",
        examples=["population.person_change"],
    )
    change_column: Ident = Field(
        "change_seq",
        description="Column that grows with every change (bigserial/bigint sequence or timestamptz); rows are "
        "read in its order and the position is the last value read.",
        examples=["change_seq", "changed_at"],
    )
    id_column: Ident | None = Field(
        None,
        description="Unique NOT NULL column that orders rows sharing a change value. Default: the table's primary "
        "key (not needed when change_column alone is unique).",
        examples=["id"],
    )
    columns: dict[Ident, Ident] = Field(
        default_factory=dict,
        description="Table column -> record field, for columns not named like their field.",
        examples=[{"person_no": "person_id", "kind": "change_type"}],
    )
    event_type: str | None = Field(
        None, description="Event type the rows become. Default: the connector's only `publishes` type.",
        examples=["population_change"],
    )
    batch_size: int = Field(
        1000, ge=1, le=50_000,
        description="Rows read (and held in memory) per query, and published per pipelined batch.",
        examples=[1000],
    )
    interval_s: float = Field(
        5.0, gt=0, le=86_400, description="Seconds between two polls for new changes once caught up.",
        examples=[5, 0.5],
    )
    progress_interval_s: float = Field(
        10.0, gt=0, description="Seconds between two progress lines (rows done, estimated total, rate) of a "
        "snapshot.", examples=[10],
    )
    timezone: str | None = Field(
        None,
        description="IANA time zone of `timestamp without time zone` columns. Default: the server's TimeZone.",
        examples=["Asia/Shanghai"],
    )
    connect_timeout_s: int = Field(
        10, ge=1, le=300, description="Seconds to wait for a connection to the database.", examples=[10]
    )
    statement_timeout_ms: int = Field(
        60_000, ge=0, description="Longest one batch query may take before it is abandoned and retried "
        "(0 = no limit).", examples=[60000],
    )

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise PydanticCustomError(
                    "connector_timezone", "unknown time zone '{zone}'; write an IANA name such as Asia/Shanghai "
                    "or UTC", {"zone": value},
                ) from None
        return value


class TableMismatch(ConnectorError):
    """The table does not fit the connector's configuration (missing, a column missing or unusable)."""


class RowInvalid(ConnectorError):
    """A row that cannot become a record (dead-lettered with its table and change value)."""


# -- the server, without secrets ------------------------------------------------------------


def scrub(text: str, dsn: str) -> str:
    """``text`` (a driver's error) without the DSN or its password, on one line."""
    return " ".join(scrub_dsn(text, dsn).split())


# -- the table -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # format_type(): usable as a cast
    category: str  # pg_type.typcategory: N numeric, D date/time, S string...
    not_null: bool
    attnum: int


@dataclass(frozen=True)
class Plan:
    """What the queries read: ``selected`` columns (the mapped ones, then the order columns)."""

    selected: tuple[str, ...]
    fields: tuple[tuple[int, str], ...]  # (index in a row, record field)
    order: tuple[Column, ...]  # change column, then the tie-breakers
    order_index: tuple[int, ...]


def to_position_value(value: Any) -> Any:
    """A change or id value as JSON that casts back to exactly the same value."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()  # full precision (microseconds), with its offset
    return str(value)


def json_value(value: Any, zone: dt.tzinfo) -> Any:
    """A column's value as the JSON a department system would send: times RFC 3339 (a time
    without zone is in ``zone``), dates ISO, numerics numbers, UUIDs and bytes as text."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, dt.datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=zone)
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (dt.time, dt.timedelta)):
        return str(value)
    return to_json(value)


class PostgresSource(Source):
    """Publishes the rows of a change table, snapshot first, then polling for new rows."""

    config_model: ClassVar[type[ConnectorConfig]] = PostgresSourceConfig

    def __init__(self, config: ConnectorConfig, context: SourceContext) -> None:
        super().__init__(config, context)
        assert isinstance(config, PostgresSourceConfig)
        self.config: PostgresSourceConfig = config
        schema_name, _, table_name = config.table.partition(".")
        self.table = sql.Identifier(schema_name, table_name)
        publishes = context.connector.publishes or []
        self.event_type = config.event_type or (publishes[0] if len(publishes) == 1 else "")
        self._conn: psycopg.Connection[Any] | None = None
        self._conn_lock = threading.Lock()
        self._plan: Plan | None = None
        self._where_first: sql.Composable = sql.SQL("")
        self._where_after: sql.Composable = sql.SQL("")
        self._query_first: sql.Composable = sql.SQL("")
        self._query_after: sql.Composable = sql.SQL("")
        self._zone: dt.tzinfo = dt.timezone.utc
        self._after: tuple[Any, ...] | None = None
        # progress (read by status_detail from other threads)
        self.phase = "snapshot"
        self.rows_done = 0
        self.total_estimate: int | None = None
        self.fetches = 0
        self.max_rows_held = 0
        self._run_rows = 0
        self._run_started = time.monotonic()
        self._last_progress = 0.0

    @property
    def server(self) -> str:
        return server_of(self.config.dsn.get_secret_value())

    # -- connection ----------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        dsn = self.config.dsn.get_secret_value()
        try:
            conn = psycopg.connect(
                dsn, connect_timeout=self.config.connect_timeout_s, autocommit=True,
                application_name=f"citybus-{self.name}"[:63],
                options=f"-c statement_timeout={self.config.statement_timeout_ms}",
            )
        except psycopg.Error as exc:
            raise DatabaseUnreachable(
                f"connector {self.name!r} cannot connect to PostgreSQL at {self.server}: {scrub(str(exc), dsn)}. "
                f"Check the server and the dsn ({self.config.dsn.ref})"
            ) from None
        with self._conn_lock:
            self._conn = conn
        return conn

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            self._disconnect()
            conn = self._connect()
        return conn

    def _disconnect(self) -> None:
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    # -- lifecycle -----------------------------------------------------------------------

    def setup(self) -> None:
        if not self.event_type:
            raise ConnectorError(
                f"connector {self.name!r} publishes {', '.join(self.context.connector.publishes or []) or 'nothing'}: "
                "set `event_type` in its config to the one its rows become"
            )
        self.check_publishes(self.event_type)
        conn = self._connect()
        try:
            self._zone = zoneinfo.ZoneInfo(self.config.timezone) if self.config.timezone else conn.info.timezone
            self._plan = self._make_plan(conn)
        except psycopg.Error as exc:
            raise TableMismatch(
                f"connector {self.name!r} cannot read table {self.config.table} at {self.server}: "
                f"{scrub(str(exc), self.config.dsn.get_secret_value())}"
            ) from None
        self._prepare_queries()
        self._resume(conn)
        order = ", ".join(c.name for c in self._plan.order)
        self.log.info("postgres source ready", table=self.config.table, server=self.server, order=order,
                      fields=len(self._plan.fields), phase=self.phase, resume_after=self.position)

    def stop(self) -> None:
        conn = self._conn
        if conn is not None:
            try:
                conn.cancel_safe(timeout=2)  # a batch query in flight ends now
            except Exception:
                pass

    def close(self) -> None:
        self._disconnect()

    def status_detail(self) -> dict[str, Any]:
        plan = self._plan
        return {
            "table": self.config.table, "server": self.server, "event_type": self.event_type,
            "order": [c.name for c in plan.order] if plan else [], "phase": self.phase,
            "rows_done": self.rows_done, "total_estimate": self.total_estimate, "rate_per_s": round(self._rate(), 1),
            "batch_size": self.config.batch_size, "fetches": self.fetches, "max_rows_held": self.max_rows_held,
        }

    # -- checking the table against the config -------------------------------------------

    def _make_plan(self, conn: psycopg.Connection[Any]) -> Plan:
        config = self.config
        oid = conn.execute("SELECT to_regclass(%s)::oid", (self.table.as_string(conn),)).fetchone()
        if oid is None or oid[0] is None:
            raise TableMismatch(f"connector {self.name!r}: table {config.table} does not exist at {self.server}"
                                f"{self._table_hint(conn)}; set `table` to the change table (schema.table)")
        table_oid = oid[0]
        columns = {
            name: Column(name, pg_type, category, not_null, attnum)
            for name, pg_type, category, not_null, attnum in conn.execute(
                "SELECT a.attname, format_type(a.atttypid, a.atttypmod), t.typcategory, a.attnotnull, a.attnum "
                "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                "WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", (table_oid,),
            ).fetchall()
        }
        conn.execute(sql.SQL("SELECT 1 FROM {} LIMIT 0").format(self.table))  # SELECT granted?
        change = self._column(columns, config.change_column, "change_column")
        if change.category not in ("N", "D"):
            raise TableMismatch(
                f"connector {self.name!r}: change_column {change.name} of {config.table} is {change.type}; it must "
                "be a number or a time that grows with every change (bigserial/bigint or timestamptz)"
            )
        order = (change, *self._tie_breakers(conn, table_oid, columns, change))
        if not self._has_index(conn, table_oid, change):
            self.log.warning(
                "no index starts with the change column: every batch scans the table", table=config.table,
                create=f"CREATE INDEX ON {config.table} ({', '.join(c.name for c in order)})",
            )
        fields = {f["name"]: f for f in self.context.topology.schema_for(self.event_type).schema["fields"]}
        problems = []
        for column, field in config.columns.items():
            if column not in columns:
                problems.append(f"`columns` renames {column!r}, which is no column of {config.table}")
            if field not in fields:
                problems.append(f"`columns` maps {column!r} to {field!r}, which is no field of {self.event_type}")
        mapped: dict[str, str] = {}
        for column in columns:
            field = config.columns.get(column, column)
            if field not in fields:
                continue
            if field in mapped.values():
                other = next(c for c, f in mapped.items() if f == field)
                problems.append(f"columns {other!r} and {column!r} both become field {field!r}; rename one in "
                                "`columns`")
            mapped[column] = field
        missing = [n for n, f in fields.items() if "default" not in f and n not in mapped.values()]
        if missing:
            problems.append(
                f"no column for the required field(s) {', '.join(missing)} of {self.event_type}; add them to the "
                f"table, or map columns to them with `columns: {{table_column: field}}`"
            )
        if problems:
            listed = "\n".join(f"  - {p}" for p in problems)
            raise TableMismatch(
                f"connector {self.name!r}: table {config.table} does not fit {self.event_type} "
                f"(its columns: {', '.join(columns)}):\n{listed}"
            )
        selected = list(mapped)
        selected += [c.name for c in order if c.name not in mapped]
        return Plan(
            selected=tuple(selected),
            fields=tuple((selected.index(c), f) for c, f in mapped.items()),
            order=order,
            order_index=tuple(selected.index(c.name) for c in order),
        )

    def _column(self, columns: dict[str, Column], name: str, key: str) -> Column:
        if name in columns:
            return columns[name]
        close = difflib.get_close_matches(name, list(columns), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TableMismatch(f"connector {self.name!r}: {key} {name!r} is no column of {self.config.table}{hint}; "
                            f"its columns are: {', '.join(columns)}")

    def _tie_breakers(
        self, conn: psycopg.Connection[Any], table_oid: int, columns: dict[str, Column], change: Column
    ) -> list[Column]:
        if self.config.id_column is not None:
            tie = self._column(columns, self.config.id_column, "id_column")
            if tie.name == change.name or not tie.not_null:
                raise TableMismatch(
                    f"connector {self.name!r}: id_column {tie.name} must be a NOT NULL unique column other than "
                    f"change_column (e.g. the primary key)"
                )
            return [tie]
        unique_alone = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = %s AND indisunique AND indnkeyatts = 1 "
            "AND indkey[0] = %s AND indpred IS NULL)", (table_oid, change.attnum),
        ).fetchone()
        if unique_alone and unique_alone[0]:
            return []
        primary = [name for (name,) in conn.execute(
            "SELECT a.attname FROM pg_index i CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = %s AND i.indisprimary ORDER BY k.n", (table_oid,),
        ).fetchall()]
        if not primary:
            raise TableMismatch(
                f"connector {self.name!r}: change_column {change.name} of {self.config.table} is not unique and the "
                "table has no primary key to order rows that share a change value; set `id_column` to a unique "
                "NOT NULL column"
            )
        return [columns[name] for name in primary if name != change.name]

    @staticmethod
    def _has_index(conn: psycopg.Connection[Any], table_oid: int, change: Column) -> bool:
        found = conn.execute("SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = %s AND indkey[0] = %s)",
                             (table_oid, change.attnum)).fetchone()
        return bool(found and found[0])

    def _table_hint(self, conn: psycopg.Connection[Any]) -> str:
        tables = [f"{s}.{t}" for s, t in conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2 LIMIT 1000"
        ).fetchall()]
        close = difflib.get_close_matches(self.config.table, tables, n=3, cutoff=0.5)
        return f" (did you mean {', '.join(close)}?)" if close else ""

    # -- queries ---------------------------------------------------------------------------

    def _prepare_queries(self) -> None:
        assert self._plan is not None
        order = self._plan.order
        select = sql.SQL("SELECT {} FROM {} ").format(
            sql.SQL(", ").join(sql.Identifier(c) for c in self._plan.selected), self.table)
        order_by = sql.SQL(" ORDER BY {} LIMIT %s").format(sql.SQL(", ").join(sql.Identifier(c.name) for c in order))
        self._where_first = sql.SQL("WHERE {} IS NOT NULL").format(sql.Identifier(order[0].name))
        self._where_after = sql.SQL("WHERE ({}) > ({})").format(
            sql.SQL(", ").join(sql.Identifier(c.name) for c in order),
            sql.SQL(", ").join(sql.SQL("%s::") + sql.SQL(c.type) for c in order),
        )
        self._query_first = select + self._where_first + order_by
        self._query_after = select + self._where_after + order_by

    def _resume(self, conn: psycopg.Connection[Any]) -> None:
        """Take up the saved position: where to read from, and how far the snapshot got."""
        assert self._plan is not None
        position = self.position or {}
        after = position.get("after")
        names = [c.name for c in self._plan.order]
        if after is not None and position.get("order") != names:
            raise ConnectorError(
                f"connector {self.name!r}: its saved position is in the order of {position.get('order')}, but it "
                f"now reads in the order of {names}; restore change_column/id_column, or give the connector a new "
                "name (positions are kept by name) to read the table again from the start"
            )
        self._after = tuple(after) if after is not None else None
        self.phase = "snapshot" if position.get("snapshot", True) else "streaming"
        self.rows_done = int(position.get("rows", 0))
        if self.phase == "snapshot":
            remaining = self._estimate(conn)
            self.total_estimate = None if remaining is None else self.rows_done + remaining

    def _estimate(self, conn: psycopg.Connection[Any]) -> int | None:
        """The planner's estimate of the rows left to read (free, unlike count(*))."""
        where = self._where_first if self._after is None else self._where_after
        query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {} ").format(self.table) + where
        try:
            plan = conn.execute(query, self._after or ()).fetchone()
        except psycopg.Error:
            return None
        return int(plan[0][0]["Plan"]["Plan Rows"]) if plan else None

    def _estimate_again(self) -> int | None:
        """The snapshot passed its estimate (rows were written to the table since it was
        taken, as during a bulk load): rows done plus the planner's estimate of those left."""
        try:
            remaining = self._estimate(self._connection())
        except (psycopg.Error, DatabaseUnreachable):
            return None  # the next fetch reports the database; the progress line goes without a total
        return None if remaining is None else self.rows_done + max(remaining, 1)

    def _fetch(self) -> list[tuple[Any, ...]]:
        """The next batch, reconnecting and retrying while the database is away."""
        retries = self.context.retry.start()
        while True:
            self.check_running()
            try:
                conn = self._connection()
                if self._after is None:
                    rows = conn.execute(self._query_first, (self.config.batch_size,)).fetchall()
                else:
                    rows = conn.execute(self._query_after, (*self._after, self.config.batch_size)).fetchall()
                self.fetches += 1
                self.max_rows_held = max(self.max_rows_held, len(rows))
                return rows
            except (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnreachable) as exc:
                self.check_running()
                self._disconnect()
                error = exc if isinstance(exc, DatabaseUnreachable) else DatabaseUnreachable(
                    f"lost PostgreSQL at {self.server}: {scrub(str(exc), self.config.dsn.get_secret_value())}"
                )
                delay = retries.next_delay()
                if delay is None:
                    raise ConnectorFailed(self.name, f"{error}; it resumes after the last acknowledged row when "
                                          "restarted") from None
                self.context.monitor.on_retry(None, error, delay)
                if self.context.stopping.wait(delay):
                    raise Interrupted(f"connector {self.name!r} is stopping") from None
            except psycopg.Error as exc:
                raise ConnectorFailed(
                    self.name, f"reading {self.config.table} failed: "
                    f"{scrub(str(exc), self.config.dsn.get_secret_value())} (did the table change?)"
                ) from None

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        self.mark_ready()
        self._run_started = self._last_progress = time.monotonic()
        while self.running:
            self.wait_while_paused()
            if not self.running:
                return
            rows = self._fetch()
            if rows:
                self._publish(rows)
                self.flush()
            if len(rows) < self.config.batch_size:
                if self.phase == "snapshot":
                    self._end_snapshot()
                self.context.stopping.wait(self.config.interval_s)
            elif self.phase == "snapshot" and time.monotonic() - self._last_progress >= self.config.progress_interval_s:
                self._progress()

    def _rate(self) -> float:
        elapsed = time.monotonic() - self._run_started
        return self._run_rows / elapsed if elapsed > 0 else 0.0

    def _progress(self) -> None:
        self._last_progress = time.monotonic()
        if self.total_estimate is not None and self.rows_done >= self.total_estimate:
            self.total_estimate = self._estimate_again()
        percent = None
        if self.total_estimate:
            # never 100 before the snapshot is done: rows may still be arriving
            percent = round(min(99.9, 100.0 * self.rows_done / self.total_estimate), 1)
        self.log.info("snapshot progress", table=self.config.table, rows_done=self.rows_done,
                      total_estimate=self.total_estimate, percent=percent, rate_per_s=round(self._rate(), 1))

    def _end_snapshot(self) -> None:
        self.log.info("snapshot done", table=self.config.table, rows_done=self.rows_done,
                      seconds=round(time.monotonic() - self._run_started, 1), rate_per_s=round(self._rate(), 1))
        self.phase = "streaming"
        self.total_estimate = None
        self._save_position()  # a restart now polls instead of calling itself a snapshot

    def _position(self, after: Sequence[Any]) -> Position:
        assert self._plan is not None
        return {"after": list(after), "order": [c.name for c in self._plan.order],
                "snapshot": self.phase == "snapshot", "rows": self.rows_done}

    def _save_position(self) -> None:
        if self._after is not None:
            self._advance(self._position(self._after))
            self.flush()

    # -- publishing ------------------------------------------------------------------------------

    def _publish(self, rows: list[tuple[Any, ...]]) -> None:
        """Publish a batch, pipelined; its last row becomes the position once every record
        was acknowledged or dead-lettered (produce_many would hold the position back for a
        single bad row, so its rejections are settled here, one by one)."""
        assert self._plan is not None
        good: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        for row in rows:
            try:
                good.append((row, self.to_record(row)))
            except (ValueError, TypeError, OverflowError) as exc:
                self._dead_letter_row(row, exc)
        if good:
            summary = self.produce_many(self.event_type, [record for _, record in good])
            for number, reason in summary.rejected:  # invalid, or not acknowledged: settle each
                row, record = good[number - 1]
                self._produce_again(row, record, reason)
        after = tuple(to_position_value(rows[-1][i]) for i in self._plan.order_index)
        self._after = after
        self.rows_done += len(rows)
        self._run_rows += len(rows)
        self._advance(self._position(after))

    def _produce_again(self, row: tuple[Any, ...], record: dict[str, Any], reason: str) -> None:
        """One rejected record: dead-lettered if it is invalid, else published again while the
        bus comes back (within errors.retry.timeout)."""
        retries = self.context.retry.start()
        while True:
            try:
                self.produce(self.event_type, record)
                return
            except (KafkaError, RegistryUnreachable) as exc:  # the bus is away: keep the row, retry
                delay = retries.next_delay()
                if delay is None:
                    raise ConnectorFailed(self.name, f"the bus did not take the row at {self._describe(row)} "
                                          f"({reason}; then {exc}); it resumes at that batch when restarted") from exc
                self.context.monitor.on_retry(self._raw(row), exc, delay)
                if self.context.stopping.wait(delay):
                    raise Interrupted(f"connector {self.name!r} is stopping; the batch is read again") from exc
            except BusError as exc:  # RecordInvalid, RecordTooLarge
                self._dead_letter_row(row, exc)
                return

    def _dead_letter_row(self, row: tuple[Any, ...], error: Exception) -> None:
        self.dead_letter(self._raw(row), RowInvalid(
            f"the row of {self.config.table} at {self._describe(row)} cannot become a {self.event_type} record: "
            f"{error}"))

    def to_record(self, row: Sequence[Any]) -> dict[str, Any]:
        """The JSON record of a row (as a department system would send it)."""
        assert self._plan is not None
        return {field: json_value(row[index], self._zone) for index, field in self._plan.fields}

    def _describe(self, row: Sequence[Any]) -> str:
        assert self._plan is not None
        return ", ".join(f"{c.name}={to_position_value(row[i])}" for c, i in zip(self._plan.order, self._plan.order_index))

    def _raw(self, row: Sequence[Any]) -> RawRecord:
        """A row as a dead letter: the row as JSON, its table, change value and id in headers."""
        assert self._plan is not None
        order = self._plan.order
        values = [to_position_value(row[i]) for i in self._plan.order_index]
        document = {name: json_value(value, self._zone) for name, value in zip(self._plan.selected, row)}
        headers = [("pg_table", self.config.table), ("pg_change_column", order[0].name),
                   ("pg_change_value", str(values[0]))]
        if len(order) > 1:
            headers += [("pg_id_columns", ",".join(c.name for c in order[1:])),
                        ("pg_id", ",".join(str(v) for v in values[1:]))]
        return RawRecord(
            topic=self.config.table, partition=None, offset=None,
            key=",".join(str(v) for v in values).encode("utf-8"),
            value=json.dumps(document, ensure_ascii=False, default=str).encode("utf-8"),
            headers=tuple((k, v.encode("utf-8")) for k, v in headers),
            timestamp_ms=int(time.time() * 1000),
        )


__all__ = ["PostgresSource", "PostgresSourceConfig", "RowInvalid", "TableMismatch", "scrub"]
