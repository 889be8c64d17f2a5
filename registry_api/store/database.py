"""Engines for the registry database: SQLite (embedded default) or MariaDB/MySQL."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url


def create_registry_engine(url: str) -> Engine:
    """An engine tuned for the registry's access pattern: many short transactions from
    several threads (API workers, the enricher's registrar) and several processes."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        return sa.create_engine(
            parsed,
            pool_pre_ping=True,
            pool_recycle=3600,
            pool_size=5,
            max_overflow=10,
            # The registry stores UTC; TIMESTAMP columns convert through the session time zone.
            connect_args={"init_command": "SET time_zone = '+00:00'", "connect_timeout": 5},
        )
    raise ValueError(f"unsupported registry database {parsed.get_backend_name()!r}: use sqlite or mysql+pymysql")


def _sqlite_engine(url: sa.URL) -> Engine:
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    # timeout: wait for another process's write lock instead of failing at once.
    engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001 - DB-API connection
        cursor = dbapi_connection.cursor()
        # WAL lets readers (the API) run while the enricher writes.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"
