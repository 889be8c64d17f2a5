"""The agents table.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies: a migration must keep building the same schema when the code moves on.
AGENT_TYPES = ("vanna", "langflow", "flowise", "autogen", "custom")
AGENT_STATUSES = ("active", "inactive")


def _identity_text() -> sa.types.TypeEngine:
    # MariaDB compares case-insensitively by default; SQLite does not. Identities must
    # match exactly on both, so MariaDB gets a binary collation.
    return sa.String(255).with_variant(mysql.VARCHAR(255, collation="utf8mb4_bin"), "mysql", "mariadb")


def upgrade() -> None:
    op.create_table(
        "agents",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", _identity_text(), nullable=False),
        sa.Column("type", sa.Enum(*AGENT_TYPES, name="agent_type", create_constraint=True), nullable=False),
        sa.Column("project_id", _identity_text(), server_default="default-project"),
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
    )
    op.create_index("ix_agents_external_id", "agents", ["external_id"])


def downgrade() -> None:
    op.drop_index("ix_agents_external_id", table_name="agents")
    op.drop_table("agents")
