from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from registry_api.store import create_registry_engine
from registry_api.store.schema import metadata


def test_migrations_build_exactly_the_schema_the_code_uses(registry_url: str) -> None:
    engine = create_registry_engine(registry_url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
        columns = {c["name"]: c for c in sa.inspect(conn).get_columns("agents")}
        uniques = sa.inspect(conn).get_unique_constraints("agents")
        indexes = sa.inspect(conn).get_indexes("agents")
    engine.dispose()
    assert diff == []
    assert list(columns) == [
        "id", "name", "type", "project_id", "external_id", "config",
        "monitoring_enabled", "status", "created_at", "last_used_at",
    ]
    assert not columns["name"]["nullable"] and not columns["type"]["nullable"]
    assert [sorted(u["column_names"]) for u in uniques] == [["name", "project_id"]]
    assert any(i["column_names"] == ["external_id"] for i in indexes)


def test_the_database_rejects_an_unknown_type(registry_url: str) -> None:
    engine = create_registry_engine(registry_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO agents (id, name, type) VALUES ('x', 'x', 'crewai')"))
        raised = False
    except sa.exc.DBAPIError:
        raised = True
    engine.dispose()
    assert raised
