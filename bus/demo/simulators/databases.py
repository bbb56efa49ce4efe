"""The demo's own PostgreSQL databases: the population base and the departments' copies
(the ``postgres_sink`` connectors' targets), created per run and dropped at the end."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bus.demo.simulators.exceptions import PeerUnreachable

DEFAULT_ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


class DemoDatabases:
    """Databases named ``<prefix>_<name>`` on the server of ``admin_dsn`` (a user that may
    create databases)."""

    def __init__(self, admin_dsn: str = DEFAULT_ADMIN_DSN, *, prefix: str) -> None:
        self.admin_dsn = admin_dsn
        self.prefix = prefix
        self.created: dict[str, str] = {}  # database name -> DSN

    def reachable(self) -> bool:
        try:
            with psycopg.connect(self.admin_dsn, connect_timeout=3):
                return True
        except psycopg.Error:
            return False

    def create(self, name: str) -> str:
        """A new empty database; returns its DSN."""
        database = f"{self.prefix}_{name}"
        try:
            with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        except psycopg.Error as exc:
            raise PeerUnreachable(f"cannot create the demo database {database}: {' '.join(str(exc).split())}; the "
                                  "demo's PostgreSQL user must be allowed to create databases") from None
        dsn = make_conninfo(self.admin_dsn, dbname=database)
        self.created[database] = dsn
        return dsn

    def drop_all(self) -> None:
        if not self.created:
            return
        with psycopg.connect(self.admin_dsn, autocommit=True, connect_timeout=5) as conn:
            for database in list(self.created):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
                del self.created[database]


def row_count(dsn: str, table: str) -> int | None:
    """Rows of ``schema.table`` now (None while the table does not exist yet)."""
    schema_name, _, table_name = table.partition(".")
    with psycopg.connect(dsn, connect_timeout=3) as conn:
        exists: Any = conn.execute("SELECT to_regclass(%s)", (f'"{schema_name}"."{table_name}"',)).fetchone()
        if exists is None or exists[0] is None:
            return None
        counted = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema_name, table_name)))
        row = counted.fetchone()
        return int(row[0]) if row else 0
