"""The registry's tables, as SQLAlchemy Core metadata.

The migrations in ``migrations/`` build the same schema; ``tests/registry_api/store``
checks that the two agree.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from registry_api.store.identity import AGENT_STATUSES, AGENT_TYPES, DEFAULT_PROJECT

def _identity_text() -> sa.types.TypeEngine:
    # MariaDB compares case-insensitively by default; SQLite does not. Identities must
    # match exactly on both, so MariaDB gets a binary collation.
    return sa.String(255).with_variant(mysql.VARCHAR(255, collation="utf8mb4_bin"), "mysql", "mariadb")


metadata = sa.MetaData()

agents = sa.Table(
    "agents",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", _identity_text(), nullable=False),
    sa.Column(
        "type",
        sa.Enum(*AGENT_TYPES, name="agent_type", create_constraint=True),
        nullable=False,
    ),
    sa.Column("project_id", _identity_text(), server_default=DEFAULT_PROJECT),
    sa.Column("external_id", _identity_text(), nullable=True),
    sa.Column("config", sa.JSON, nullable=True),
    sa.Column("monitoring_enabled", sa.Boolean(create_constraint=True), server_default=sa.true()),
    sa.Column(
        "status",
        sa.Enum(*AGENT_STATUSES, name="agent_status", create_constraint=True),
        server_default="active",
    ),
    sa.Column("created_at", sa.TIMESTAMP, server_default=sa.func.current_timestamp()),
    sa.Column("last_used_at", sa.TIMESTAMP, nullable=True),
    sa.UniqueConstraint("name", "project_id", name="uq_agents_name_project"),
    sa.Index("ix_agents_external_id", "external_id"),
)
