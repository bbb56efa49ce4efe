"""What the PostgreSQL connectors (sink and source) share: naming the server of a DSN and
removing the DSN and its password from a driver's error text."""

from __future__ import annotations

import re

from psycopg.conninfo import conninfo_to_dict

from bus.connect.exceptions import ConnectorError


class DatabaseUnreachable(ConnectorError):
    """The database cannot be reached or refused the connection (the message names the
    server, never the password)."""


def server_of(dsn: str) -> str:
    """The server a DSN names, as messages show it: user@host:port/dbname (never the password)."""
    try:
        info = conninfo_to_dict(dsn)
    except Exception:
        return "the server of its dsn (which cannot be parsed)"
    host = info.get("host") or info.get("hostaddr") or "localhost"
    user, db = info.get("user"), info.get("dbname")
    return f"{user + '@' if user else ''}{host}:{info.get('port') or '5432'}{'/' + str(db) if db else ''}"


def scrub_dsn(text: str, dsn: str) -> str:
    """``text`` (a driver's error) without the DSN or its password."""
    text = text.replace(dsn, "<dsn>")
    try:
        password = conninfo_to_dict(dsn).get("password")
    except Exception:
        password = None
    if password:
        text = text.replace(str(password), "***")
    return re.sub(r"(password\s*=\s*)\S+", r"\1***", text)
