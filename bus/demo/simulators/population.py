"""The unified population base: a change table the ``postgres_source`` connector reads,
or, when PostgreSQL cannot be reached, CSV exports for the ``file_drop`` connector.

The registry keeps its people in memory (seeded): a bulk initial load of
``initial_rows`` changes, one per person (how a department's history arrives when it is
first connected), then a trickle of ``change_rate`` changes per second of every kind
(births and move-ins add a person, deaths and move-outs remove one, address, household
and ID document changes keep the person's identity). One writer appends the changes, so
the change column grows in commit order, as the connector needs.

- :class:`ChangeTable`: ``<schema>.<table>`` with ``change_seq bigserial PRIMARY KEY``
  (the change column, unique alone) and one column per field of population_change,
  written with COPY.
- :class:`CsvExports`: each export a CSV file (header of field names, empty cells for
  nulls) written as ``*.part`` and renamed when complete, so the connector never reads a
  half-written file.
"""

from __future__ import annotations

import csv
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import psycopg
from psycopg import sql

from bus.demo.samples import population_change
from bus.demo.simulators.base import Simulator, now_iso
from bus.demo.simulators.exceptions import PeerUnreachable, SimulatorError

#: The fields of population_change, in the order of the table's columns and CSV headers.
FIELDS = (
    "change_id", "person_id", "change_type", "effective_date", "recorded_at", "name", "national_id", "gender",
    "birth_date", "phone", "address", "district", "previous_district", "household_id", "id_document_type",
    "id_document_expires_on", "cause_of_death_category",
)
IDENTITY = ("person_id", "name", "national_id", "gender", "birth_date", "phone", "address", "district",
            "household_id")
_TYPES = {"change_id": "uuid NOT NULL", "person_id": "text NOT NULL", "change_type": "text NOT NULL",
          "effective_date": "date NOT NULL", "recorded_at": "timestamptz NOT NULL", "birth_date": "date",
          "id_document_expires_on": "date"}
#: Rows written per COPY or per CSV file of the initial load.
CHUNK = 5000


class ChangeStore(Protocol):
    """Where the registry's changes go."""

    #: Seconds between two writes of the trickle (changes are written together).
    flush_every_s: float

    def open(self) -> None: ...

    def write(self, rows: list[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...

    def describe(self) -> str: ...


class ChangeTable:
    """The change table in PostgreSQL (created if missing)."""

    flush_every_s = 0.5

    def __init__(self, dsn: str, table: str = "population.person_change") -> None:
        schema_name, _, table_name = table.partition(".")
        if not table_name:
            raise SimulatorError(f"table {table!r}: write it schema-qualified, e.g. population.person_change")
        self.dsn = dsn
        self.table = table
        self._schema = sql.Identifier(schema_name)
        self._ident = sql.Identifier(schema_name, table_name)
        self._conn: psycopg.Connection[Any] | None = None

    def open(self) -> None:
        try:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5,
                                         application_name="population-registry-simulator")
        except psycopg.OperationalError as exc:
            raise PeerUnreachable(f"the population registry cannot reach PostgreSQL: {' '.join(str(exc).split())}"
                                  ) from None
        columns = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(f), sql.SQL(_TYPES.get(f, "text"))) for f in FIELDS)
        self._conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(self._schema))
        self._conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (change_seq bigserial PRIMARY KEY, {})").format(
            self._ident, columns))

    def write(self, rows: list[dict[str, Any]]) -> None:
        assert self._conn is not None
        statement = sql.SQL("COPY {} ({}) FROM STDIN").format(
            self._ident, sql.SQL(", ").join(sql.Identifier(f) for f in FIELDS))
        with self._conn.transaction(), self._conn.cursor() as cursor, cursor.copy(statement) as copy:
            for row in rows:
                copy.write_row(tuple(row.get(f) for f in FIELDS))

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def describe(self) -> str:
        return f"PostgreSQL table {self.table}"


class CsvExports:
    """Exports dropped as CSV files into ``folder`` (created if missing)."""

    flush_every_s = 5.0

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._numbers = itertools.count(1)

    def open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def write(self, rows: list[dict[str, Any]]) -> None:
        name = f"population-{time.strftime('%Y%m%d-%H%M%S')}-{next(self._numbers):05d}.csv"
        part = self.folder / (name + ".part")
        with part.open("w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(FIELDS)
            writer.writerows([("" if row.get(f) is None else row[f]) for f in FIELDS] for row in rows)
        part.rename(self.folder / name)

    def close(self) -> None:
        pass

    def describe(self) -> str:
        return f"CSV exports in {self.folder}"


class PopulationRegistry(Simulator):
    """The population base: the initial load, then ``change_rate`` changes per second."""

    name = "population-registry"

    def __init__(self, store: ChangeStore, *, seed: int = 0, initial_rows: int = 50_000,
                 change_rate: float = 2.0) -> None:
        super().__init__(seed=seed)
        self.store = store
        self.initial_rows = initial_rows
        self.change_rate = change_rate
        self.people: list[dict[str, Any]] = []
        self._person_numbers = itertools.count(1)
        self._loaded = False

    def open(self) -> None:
        self.store.open()

    def close(self) -> None:
        self.store.close()

    def loops(self) -> list[Callable[[], None]]:
        return [self._run]

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "people": len(self.people), "store": self.store.describe()}

    def _run(self) -> None:
        if not self._loaded:
            self.load()
        pending: list[dict[str, Any]] = []
        due = 0.0
        last = time.monotonic()
        while not self.stopping.wait(self.store.flush_every_s):
            now = time.monotonic()
            due = min(due + (now - last) * self.change_rate, max(1.0, self.change_rate * self.store.flush_every_s))
            last = now
            pending += [self.change() for _ in range(int(due))]
            due -= int(due)
            if pending:
                self.store.write(pending)
                self.count("changes_written", len(pending))
                pending = []

    def load(self) -> None:
        """The initial load: one change per new person, written in chunks."""
        written = 0
        while written < self.initial_rows and not self.stopping.is_set():
            rows = [self.newcomer() for _ in range(min(CHUNK, self.initial_rows - written))]
            self.store.write(rows)
            written += len(rows)
            self.count("initial_rows_written", len(rows))
        self._loaded = written >= self.initial_rows

    # -- the people --------------------------------------------------------------------------

    def newcomer(self) -> dict[str, Any]:
        """A change of the initial load: a person new to the base, with the sample's history
        (a person whose last change is a death or a move out is not kept as living here)."""
        return self._admit(population_change(self.rng))

    def change(self) -> dict[str, Any]:
        """One change of the trickle, of a kind drawn as the samples draw it."""
        row = population_change(self.rng)
        kind = row["change_type"]
        self.count("changes_" + kind.lower())
        if kind in ("BIRTH", "MOVE_IN") or not self.people:
            return self._admit(row)
        index = self.rng.randrange(len(self.people))
        person = self.people[index]
        if kind in ("DEATH", "MOVE_OUT"):
            self.people[index] = self.people[-1]
            self.people.pop()
        if kind in ("ADDRESS_CHANGE", "MOVE_OUT"):
            row["previous_district"] = person["district"]
        if kind == "ADDRESS_CHANGE":
            person["address"], person["district"] = row["address"], row["district"]
        elif kind == "HOUSEHOLD_CHANGE":
            person["household_id"] = row["household_id"]
        row.update(person)  # the same person: identity as registered, after this change
        row["recorded_at"] = now_iso()
        return row

    def _admit(self, row: dict[str, Any]) -> dict[str, Any]:
        row["person_id"] = f"P{4502_000000 + next(self._person_numbers):010d}"
        row["recorded_at"] = now_iso()
        if row["change_type"] not in ("DEATH", "MOVE_OUT"):
            self.people.append({f: row.get(f) for f in IDENTITY})
        return row
