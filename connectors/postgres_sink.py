"""PostgreSQL upsert sink: keeps a table equal to the latest record of each key of a
subscription (the unified population base database and its departmental copies).

- **Upsert by key.** Each record is written with ``INSERT ... ON CONFLICT (key) DO UPDATE``
  setting every column (a field the record lacks becomes NULL), so the row of a key is the
  last record of that key, whatever was written before: replaying the subscription, from
  any offset, leaves the same table. The key column is the event type's ``key`` in
  ``topology.yaml`` (``person_id`` for ``population_change``); its value is taken from the
  record's value (or, for a tombstone, the Kafka key).
- **Deletes.** Only a *tombstone* (a record whose value is null) deletes the row of its
  key. A record is never a delete because of its content: a ``population_change`` with
  ``change_type: DEATH`` is an ordinary upsert (the person's row records the death).
- **Batched.** The records of one partition's batch are reduced to the last record per key
  and written with ``executemany`` in one transaction; the runner commits the Kafka offsets
  only after ``write`` returns, i.e. after the transaction committed. A row the database
  refuses (a value that does not fit its column) is retried alone and dead-lettered.
- **The table follows the schema.** Missing schema and table are created from the
  subscription's Avro schema (masked fields are text); every field of every writer schema
  seen on the topic gets its column (``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``, nullable),
  so a new optional field becomes a new nullable column. Columns are never dropped or
  retyped.
- **The database going away** (connection lost, server restarting) is retried with
  backoff within ``errors.retry.timeout``, reconnecting; after that the partition is
  paused (backpressure) and the batch delivered again later. Such batches are never
  dead-lettered: it is not the records' fault.

Avro -> PostgreSQL column types: string/enum -> text, int -> integer, long -> bigint,
float -> real, double -> double precision, boolean -> boolean, bytes/fixed -> bytea,
date -> date, timestamp-millis/micros -> timestamptz, uuid -> uuid, decimal -> numeric,
records, arrays, maps and other unions -> jsonb; ``["null", T]`` is T, nullable.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any, ClassVar

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import Field

from bus.connect.base import Sink, SinkContext
from bus.connect.config import ConnectorConfig, SecretRef
from bus.connect.exceptions import Backpressure, ConnectorError, Interrupted, RecordFailed
from bus.connect.records import SinkBatch, SinkRecord
from bus.registry.client import registry_call, registry_client
from bus.routing.plan import derive_schema
from bus.schemas import wire
from connectors._postgres import DatabaseUnreachable, scrub_dsn, server_of

_IDENT = r"[A-Za-z_][A-Za-z0-9_$]{0,62}"


class PostgresSinkConfig(ConnectorConfig):
    """Settings of a `postgres_sink`."""

    dsn: SecretRef = Field(
        description="Connection string of the database as a reference, env:NAME or file:PATH (never in clear); "
        "the secret is a libpq string (`host=db1 dbname=pop user=stats password=...`) or a `postgresql://` URL.",
        examples=["env:STATS_POPULATION_DSN", "file:/run/secrets/population-base-dsn"],
    )
    table: str = Field(
        pattern=rf"^{_IDENT}\.{_IDENT}$",
        description="Schema-qualified table the subscription is kept in; created (with its schema) if missing.",
        examples=["stats.population_change"],
    )
    key_column: str | None = Field(
        None,
        pattern=rf"^{_IDENT}$",
        description="Column of the upsert key. Default: the event type's `key` in topology.yaml.",
        examples=["person_id"],
    )
    connect_timeout_s: int = Field(
        10, ge=1, le=300, description="Seconds to wait for a connection to the database.", examples=[10]
    )
    statement_timeout_ms: int = Field(
        60_000, ge=0, description="Longest a write may take before it is abandoned and retried (0 = no limit).",
        examples=[60000],
    )


class RowRefused(RecordFailed):
    """The database refused one record's row (a value that does not fit its column)."""


# -- Avro -> columns --------------------------------------------------------------------

_PRIMITIVE = {
    "string": "text", "int": "integer", "long": "bigint", "float": "real", "double": "double precision",
    "boolean": "boolean", "bytes": "bytea", "null": "text",
}
_LOGICAL = {
    "date": "date", "timestamp-millis": "timestamptz", "timestamp-micros": "timestamptz",
    "local-timestamp-millis": "timestamp", "local-timestamp-micros": "timestamp",
    "time-millis": "time", "time-micros": "time", "uuid": "uuid", "decimal": "numeric",
}


def _collect_named(node: Any, named: dict[str, Any], namespace: str | None = None) -> None:
    if isinstance(node, list):
        for n in node:
            _collect_named(n, named, namespace)
    elif isinstance(node, dict):
        kind = node.get("type")
        if kind in ("record", "enum", "fixed", "error") and "name" in node:
            ns = node.get("namespace", namespace)
            name = node["name"]
            full = name if "." in name or not ns else f"{ns}.{name}"
            named[full] = node
            named.setdefault(name, node)
            namespace = ns
            for f in node.get("fields", []):
                _collect_named(f.get("type"), named, namespace)
        elif kind in ("array", "map"):
            _collect_named(node.get("items", node.get("values")), named, namespace)
        elif isinstance(kind, (dict, list)):
            _collect_named(kind, named, namespace)


def column_type(avro: Any, named: dict[str, Any]) -> tuple[str, bool]:
    """(PostgreSQL type, is JSON) of an Avro type; a nullable union is its other branch."""
    if isinstance(avro, list):
        branches = [b for b in avro if b != "null"]
        return column_type(branches[0], named) if len(branches) == 1 else ("jsonb", True)
    if isinstance(avro, str):
        if avro in _PRIMITIVE:
            return _PRIMITIVE[avro], False
        definition = named.get(avro) or named.get(avro.rsplit(".", 1)[-1])
        return column_type(definition, named) if definition is not None else ("text", False)
    if isinstance(avro, dict):
        logical = avro.get("logicalType")
        if logical in _LOGICAL:
            return _LOGICAL[logical], False
        kind = avro.get("type")
        if kind == "enum":
            return "text", False
        if kind == "fixed":
            return "bytea", False
        if kind in ("record", "error", "array", "map"):
            return "jsonb", True
        return column_type(kind, named)
    return "text", False


def columns_of(schema: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Column name -> (PostgreSQL type, is JSON) for every top-level field (masked fields text)."""
    named: dict[str, Any] = {}
    _collect_named(schema, named)
    out: dict[str, tuple[str, bool]] = {}
    for f in schema.get("fields", []):
        out[f["name"]] = ("text", False) if f.get("masked") else column_type(f["type"], named)
    return out


# -- the sink ----------------------------------------------------------------------------


def _is_connection_error(exc: BaseException) -> bool:
    if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
        return True
    return False


class PostgresSink(Sink):
    """Keeps a PostgreSQL table equal to the latest record of each key of a subscription."""

    config_model: ClassVar[type[ConnectorConfig]] = PostgresSinkConfig

    def __init__(self, config: ConnectorConfig, context: SinkContext) -> None:
        super().__init__(config, context)
        assert isinstance(config, PostgresSinkConfig)
        self.config: PostgresSinkConfig = config
        schema_name, _, table_name = config.table.partition(".")
        self.table = sql.Identifier(schema_name, table_name)
        self._schema_name, self._table_name = schema_name, table_name
        self._local = threading.local()
        self._connections: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._columns: dict[str, tuple[str, bool]] = {}
        self._seen_schema_ids: set[int] = set()
        self._registry: Any = None
        self.key_column = config.key_column or ""

    # -- connections ------------------------------------------------------------------

    def _where(self) -> str:
        """The server as the message names it: user@host:port/dbname (never the password)."""
        return server_of(self.config.dsn.get_secret_value())

    def _scrub(self, text: str) -> str:
        """An error text without the DSN or its password in it."""
        return scrub_dsn(text, self.config.dsn.get_secret_value())

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            options = f"-c statement_timeout={self.config.statement_timeout_ms}"
            conn = psycopg.connect(
                self.config.dsn.get_secret_value(), connect_timeout=self.config.connect_timeout_s,
                application_name=f"citybus-{self.name}"[:63], options=options, autocommit=True,
            )
        except psycopg.Error as exc:
            reason = " ".join(self._scrub(str(exc)).split())
            raise DatabaseUnreachable(
                f"connector {self.name!r} cannot connect to PostgreSQL at {self._where()}: {reason}. Check the "
                f"server and the dsn ({self.config.dsn.ref})"
            ) from None
        with self._lock:
            self._connections.append(conn)
        return conn

    def _conn(self) -> psycopg.Connection[Any]:
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            if conn is not None:
                self._drop(conn)
            conn = self._connect()
            self._local.conn = conn
        return conn

    def _drop(self, conn: psycopg.Connection[Any]) -> None:
        try:
            conn.close()
        except Exception:
            pass
        with self._lock:
            if conn in self._connections:
                self._connections.remove(conn)
        if getattr(self._local, "conn", None) is conn:
            self._local.conn = None

    # -- lifecycle -----------------------------------------------------------------------

    def setup(self) -> None:
        topology = self.context.topology
        subscription = topology.subscription(self.context.connector.subscription or "")
        event = topology.schema_for(subscription.event_type)
        if not self.key_column:
            self.key_column = topology.event_type(subscription.event_type).key
        schema = derive_schema(event, topology.selection(subscription.name), dict(topology.treatments(subscription.name)))
        wanted = columns_of(schema)
        if self.key_column not in wanted:
            raise ConnectorError(
                f"connector {self.name!r}: the key column {self.key_column!r} is not a field of subscription "
                f"{subscription.name!r} ({', '.join(wanted)}); set key_column to one of them"
            )
        self._registry = registry_client(self.context.settings)
        conn = self._conn()
        self._create_table(conn, wanted)
        self.log.info("postgres sink ready", table=self.config.table, server=self._where(), key=self.key_column)

    def stop(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.cancel_safe(timeout=2)  # a statement in flight ends now; its transaction is rolled back
            except Exception:
                pass

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except Exception:
                pass

    def status_detail(self) -> dict[str, Any]:
        return {"table": self.config.table, "server": self._where(), "columns": len(self._columns)}

    # -- the table -------------------------------------------------------------------------

    def _create_table(self, conn: psycopg.Connection[Any], wanted: dict[str, tuple[str, bool]]) -> None:
        key_type = wanted[self.key_column][0]
        with self._lock, conn.transaction():
            # CREATE ... IF NOT EXISTS is not safe against a concurrent one (two sinks starting at
            # once into a new schema: UniqueViolation): sinks creating in one schema take turns.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"citybus-schema:{self._schema_name}",))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self._schema_name)))
            conn.execute(
                sql.SQL("CREATE TABLE IF NOT EXISTS {} ({} {} PRIMARY KEY)").format(
                    self.table, sql.Identifier(self.key_column), sql.SQL(key_type))
            )
            self._add_columns(conn, wanted)
            self._check_key(conn)

    def _add_columns(self, conn: psycopg.Connection[Any], wanted: dict[str, tuple[str, bool]]) -> None:
        """Add (nullable) the columns the table lacks; learn the table's columns. Under self._lock."""
        self._columns = self._read_columns(conn)
        for name, (pg_type, _) in wanted.items():
            if name in self._columns:
                continue
            conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                self.table, sql.Identifier(name), sql.SQL(pg_type)))
        self._columns = self._read_columns(conn)

    def _read_columns(self, conn: psycopg.Connection[Any]) -> dict[str, tuple[str, bool]]:
        rows = conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (f'"{self._schema_name}"."{self._table_name}"',),
        ).fetchall()
        return {name: (pg_type, pg_type in ("jsonb", "json")) for name, pg_type in rows}

    def _check_key(self, conn: psycopg.Connection[Any]) -> None:
        """ConnectorError unless the key column alone is the primary key or a unique index (ON CONFLICT needs it)."""
        unique = conn.execute(
            "SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
            "WHERE i.indrelid = %s::regclass AND i.indisunique AND i.indnatts = 1 AND i.indpred IS NULL "
            "AND a.attname = %s",
            (f'"{self._schema_name}"."{self._table_name}"', self.key_column),
        ).fetchone()
        if unique is None:
            raise ConnectorError(
                f"connector {self.name!r}: table {self.config.table} exists but {self.key_column!r} is not its primary "
                f"key or a unique column, so records cannot be upserted by key; add "
                f"`ALTER TABLE {self.config.table} ADD PRIMARY KEY ({self.key_column})` or set key_column"
            )

    def _evolve(self, batch: SinkBatch) -> None:
        """Columns for every field of the writer schemas of ``batch`` not seen before."""
        new_ids: set[int] = set()
        for record in batch.records:
            if record.raw.value is None:
                continue
            try:
                schema_id = wire.schema_id_of(record.raw.value)
            except Exception:
                continue
            if schema_id not in self._seen_schema_ids:
                new_ids.add(schema_id)
        for schema_id in sorted(new_ids):
            registered = registry_call(self._registry, lambda: self._registry.get_schema(schema_id))
            wanted = columns_of(json.loads(registered.schema_str))
            if any(name not in self._columns for name in wanted):
                conn = self._conn()
                with self._lock, conn.transaction():
                    self._add_columns(conn, wanted)
                self.log.info("table columns follow schema", table=self.config.table, schema_id=schema_id,
                              columns=sorted(self._columns))
            self._seen_schema_ids.add(schema_id)

    # -- writing -------------------------------------------------------------------------

    def write(self, batch: SinkBatch) -> None:
        self.check_running()
        latest: dict[str, SinkRecord] = {}
        for record in batch.records:
            key = self._key_of(record)
            if key is None:
                continue
            latest.pop(key, None)  # keep batch order of last occurrences
            latest[key] = record
        if not latest:
            return
        retries = self.context.retry.start()
        while True:
            try:
                self._evolve(batch)
                self._write_rows(latest)
                break
            except Interrupted:
                raise
            except (psycopg.OperationalError, psycopg.InterfaceError, DatabaseUnreachable) as exc:
                if not self.running:
                    raise Interrupted(f"connector {self.name!r} is stopping") from exc
                conn = getattr(self._local, "conn", None)
                if conn is not None and (conn.broken or conn.closed):
                    self._drop(conn)
                error = DatabaseUnreachable(self._scrub(str(exc))) if not isinstance(exc, DatabaseUnreachable) else exc
                delay = retries.next_delay()
                if delay is None:
                    raise Backpressure(self.context.retry.backoff.max_s, batch.topic, batch.partition,
                                       f"PostgreSQL at {self._where()} unavailable: {error}") from exc
                self.context.monitor.on_retry(batch.records[0].raw, error, delay)
                if self.context.stopping.wait(delay):
                    raise Interrupted(f"connector {self.name!r} is stopping") from exc
        for record in latest.values():
            self.context.monitor.on_delivered(record.raw, table=self.config.table)

    def _key_of(self, record: SinkRecord) -> str | None:
        """The upsert key of a record, or None after dead-lettering a record that has none."""
        value = record.value
        if value is None:
            key = record.key
        elif isinstance(value, dict):
            key = value.get(self.key_column)
            key = record.key if key is None else key
        else:
            self.dead_letter(record, RowRefused(
                f"{record.raw.where}: the value is not a record, cannot become a row of {self.config.table}",
                record.raw, retriable=False))
            return None
        if key is None:
            self.dead_letter(record, RowRefused(
                f"{record.raw.where}: no {self.key_column!r} in the value and no Kafka key: it has no row in "
                f"{self.config.table}", record.raw, retriable=False))
            return None
        return str(key)

    def _write_rows(self, latest: dict[str, SinkRecord]) -> None:
        conn = self._conn()
        columns = list(self._columns)
        upserts = [(k, r) for k, r in latest.items() if r.value is not None]
        deletes = [k for k, r in latest.items() if r.value is None]
        statement = self._upsert_statement(columns)
        delete = sql.SQL("DELETE FROM {} WHERE {} = %s").format(self.table, sql.Identifier(self.key_column))
        try:
            with conn.transaction():
                with conn.cursor() as cur:
                    if upserts:
                        cur.executemany(statement, [self._row(columns, k, r) for k, r in upserts])
                    if deletes:
                        cur.executemany(delete, [(k,) for k in deletes])
            return
        except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as exc:
            self.log.info("batch refused, writing its rows one by one", table=self.config.table,
                          error=self._scrub(str(exc)).splitlines()[0])
        # One row at a time, each in its own savepoint: the refused ones are dead-lettered.
        refused: list[tuple[SinkRecord, BaseException]] = []
        with conn.transaction():
            with conn.cursor() as cur:
                for key, record in latest.items():
                    try:
                        with conn.transaction():
                            if record.value is None:
                                cur.execute(delete, (key,))
                            else:
                                cur.execute(statement, self._row(columns, key, record))
                    except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as exc:
                        refused.append((record, exc))
        for record, exc in refused:
            self.dead_letter(record, RowRefused(
                f"{self.config.table} refused the row of {record.raw.where}: {self._scrub(str(exc)).splitlines()[0]}",
                record.raw, retriable=False))

    def _upsert_statement(self, columns: list[str]) -> sql.Composed:
        others = [c for c in columns if c != self.key_column]
        names = sql.SQL(", ").join(sql.Identifier(c) for c in columns)
        values = sql.SQL(", ").join(sql.Placeholder() for _ in columns)
        if others:
            action = sql.SQL("DO UPDATE SET ") + sql.SQL(", ").join(
                sql.SQL("{} = EXCLUDED.{}").format(sql.Identifier(c), sql.Identifier(c)) for c in others)
        else:
            action = sql.SQL("DO NOTHING")
        return sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) ").format(
            self.table, names, values, sql.Identifier(self.key_column)) + action

    def _row(self, columns: list[str], key: str, record: SinkRecord) -> list[Any]:
        value = record.value
        row: list[Any] = []
        for name in columns:
            if name == self.key_column:
                row.append(key)
                continue
            item = value.get(name)
            pg_type, is_json = self._columns[name]
            if item is None:
                row.append(None)
            elif is_json:
                row.append(Jsonb(item))
            elif pg_type == "bytea" and isinstance(item, str):
                row.append(base64.b64decode(item))
            elif isinstance(item, (dict, list)):
                row.append(json.dumps(item, ensure_ascii=False))
            else:
                row.append(item)
        return row


__all__ = ["PostgresSink", "PostgresSinkConfig", "DatabaseUnreachable", "RowRefused", "columns_of"]

