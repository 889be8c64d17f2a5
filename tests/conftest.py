"""Shared fixtures: registry databases on SQLite and on the real MariaDB server.

MariaDB tests skip when the server is unreachable on a developer's machine, and FAIL
in CI (CI=true): a missing service must never look like a green run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from registry_api.store import AgentStore, create_registry_engine
from registry_api.store.migrate import upgrade_registry

MARIADB_ADMIN_URL = os.environ.get("AGENTMON_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _mariadb_missing(reason: str) -> None:
    message = f"MariaDB is not reachable at {MARIADB_ADMIN_URL}: {reason}"
    if _in_ci():
        pytest.fail(message + " (required in CI)", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def mariadb_server_url() -> Iterator[str]:
    """A fresh, empty database on the MariaDB server for this test session."""
    admin = sa.create_engine(MARIADB_ADMIN_URL, connect_args={"connect_timeout": 3})
    name = f"agentmon_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    except sa.exc.OperationalError as error:
        admin.dispose()
        _mariadb_missing(str(error.orig))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    upgrade_registry(url)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("mariadb", marks=pytest.mark.mariadb)])
def registry_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """A migrated, empty registry on each backend."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'registry.db'}"
        upgrade_registry(url)
        yield url
        return
    url = request.getfixturevalue("mariadb_server_url")
    yield url
    engine = create_registry_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM agents"))
    engine.dispose()


@pytest.fixture
def store(registry_url: str) -> Iterator[AgentStore]:
    engine = create_registry_engine(registry_url)
    yield AgentStore(engine)
    engine.dispose()


@pytest.fixture(scope="session")
def chdb_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The one chDB directory of this test session: chDB opens a single path per process."""
    return f"chdb://{tmp_path_factory.mktemp('chdb')}"


@pytest.fixture
def clickhouse_database() -> str:
    """A database of its own for each test inside the shared chDB."""
    return f"t_{uuid.uuid4().hex[:12]}"
