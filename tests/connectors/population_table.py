"""The population base's change table, as the case system's DBA would set it up: shared by the
PostgreSQL source's tests and the connector conformance suite."""

from __future__ import annotations

from tests.connectors.services import Database

TABLE = "population.person_change"

#: The change table: a bigint change sequence that is NOT unique (ties), the id as
#: tie-breaker, the person's id in a column named differently from its field.
CREATE = """
CREATE SCHEMA population;
CREATE TABLE population.person_change (
    id bigserial PRIMARY KEY,
    change_seq bigint NOT NULL,
    change_id uuid NOT NULL DEFAULT gen_random_uuid(),
    person_no text NOT NULL,
    change_type text NOT NULL,
    effective_date date NOT NULL,
    recorded_at timestamptz NOT NULL,
    name text,
    birth_date date,
    district text,
    internal_note text
);
CREATE INDEX ON population.person_change (change_seq, id);
"""


def insert(db: Database, first: int, count: int, *, seq: str = "g", change_type: str = "'BIRTH'") -> None:
    """``count`` rows for people P<first>..; ``seq`` (SQL over g) is their change_seq."""
    db.execute(
        "INSERT INTO population.person_change (change_seq, person_no, change_type, effective_date, recorded_at, "
        "name, birth_date, district, internal_note) "
        f"SELECT {seq}, 'P' || lpad(g::text, 10, '0'), {change_type}, date '2026-01-01' + (g % 300), "
        "timestamptz '2026-03-01 08:00:00+08' + g * interval '1 second', 'Name ' || g, "
        "date '1990-01-01' + (g % 9000), 'CHENGZHONG', 'not a field' "
        f"FROM generate_series({first}, {first + count - 1}) AS g"
    )


def person(n: int) -> str:
    return f"P{n:010d}"
