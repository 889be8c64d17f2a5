"""The agent registry's data-access layer, shared by the registry API and the enricher.

No web-framework imports here: callers get plain dataclasses and domain errors.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from registry_api.store.identity import AgentIdentity
from registry_api.store.schema import agents

log = logging.getLogger(__name__)

SortField = Literal["name", "created_at", "last_used_at"]
SORT_FIELDS: tuple[str, ...] = ("name", "created_at", "last_used_at")
UPDATABLE_FIELDS = frozenset({"name", "monitoring_enabled", "status", "config"})

# MySQL/MariaDB error codes worth retrying: deadlock, lock wait timeout.
_MYSQL_RETRYABLE = {1213, 1205}


class RegistryError(Exception):
    """Base of the registry's domain errors."""


class AgentNameTaken(RegistryError):
    def __init__(self, name: str, project_id: str) -> None:
        super().__init__(f"an agent named {name!r} already exists in project {project_id!r}")


class RegistryUnavailable(RegistryError):
    """The registry database cannot be reached or keeps refusing the operation."""


@dataclass(frozen=True, slots=True)
class Agent:
    id: str
    name: str
    type: str
    project_id: str
    external_id: str | None
    config: dict[str, Any] | None
    monitoring_enabled: bool
    status: str
    created_at: datetime | None
    last_used_at: datetime | None

    @property
    def is_monitored(self) -> bool:
        return self.monitoring_enabled and self.status == "active"

    @classmethod
    def from_row(cls, row: RowMapping) -> Agent:
        return cls(
            id=row["id"],
            name=row["name"],
            type=row["type"],
            project_id=row["project_id"],
            external_id=row["external_id"],
            config=row["config"],
            monitoring_enabled=bool(row["monitoring_enabled"]),
            status=row["status"],
            created_at=_as_utc(row["created_at"]),
            last_used_at=_as_utc(row["last_used_at"]),
        )


@dataclass(frozen=True, slots=True)
class AgentFilter:
    type: str | None = None
    project_id: str | None = None
    status: str | None = None
    monitoring_enabled: bool | None = None
    name_contains: str | None = None


@dataclass(frozen=True, slots=True)
class AgentPage:
    items: list[Agent]
    total: int


def _as_utc(value: datetime | None) -> datetime | None:
    # Both databases hand back naive datetimes; the registry stores UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _utc_naive(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value
    return value.astimezone(UTC).replace(tzinfo=None)


def _is_retryable(error: DBAPIError) -> bool:
    if isinstance(error, IntegrityError):
        return False
    code = error.orig.args[0] if error.orig is not None and error.orig.args else None
    if code in _MYSQL_RETRYABLE:
        return True
    return "database is locked" in str(error.orig)


def _qualified(name: str, qualifier: str) -> str:
    suffix = f" ({qualifier})"
    return name[: 255 - len(suffix)] + suffix


def _disambiguated(identity: AgentIdentity) -> str:
    return _qualified(identity.name, identity.external_id or "")


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class AgentStore:
    """Reads and writes the ``agents`` table."""

    def __init__(self, engine: Engine, *, attempts: int = 8) -> None:
        self._engine = engine
        self._attempts = attempts

    @property
    def engine(self) -> Engine:
        return self._engine

    # ---- reads -----------------------------------------------------------------

    def get(self, agent_id: str) -> Agent | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(agents).where(agents.c.id == agent_id)).mappings().first()
        return Agent.from_row(row) if row else None

    def all(self) -> list[Agent]:
        """Every agent; the enricher keeps them in memory (the table is small)."""
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(agents)).mappings().all()
        return [Agent.from_row(row) for row in rows]

    def list(
        self,
        filters: AgentFilter = AgentFilter(),
        *,
        sort: SortField = "created_at",
        descending: bool = True,
        limit: int = 50,
        offset: int = 0,
    ) -> AgentPage:
        if sort not in SORT_FIELDS:
            raise ValueError(f"sort must be one of {', '.join(SORT_FIELDS)}")
        conditions = []
        if filters.type is not None:
            conditions.append(agents.c.type == filters.type)
        if filters.project_id is not None:
            conditions.append(agents.c.project_id == filters.project_id)
        if filters.status is not None:
            conditions.append(agents.c.status == filters.status)
        if filters.monitoring_enabled is not None:
            conditions.append(agents.c.monitoring_enabled == filters.monitoring_enabled)
        if filters.name_contains:
            pattern = f"%{_escape_like(filters.name_contains.lower())}%"
            conditions.append(sa.func.lower(agents.c.name).like(pattern, escape="\\"))

        column = agents.c[sort]
        order = column.desc() if descending else column.asc()
        # id breaks ties so that pages never overlap or skip rows.
        query = sa.select(agents).where(*conditions).order_by(order, agents.c.id).limit(limit).offset(offset)
        count = sa.select(sa.func.count()).select_from(agents).where(*conditions)
        with self._engine.connect() as conn:
            total = conn.execute(count).scalar_one()
            rows = conn.execute(query).mappings().all()
        return AgentPage(items=[Agent.from_row(row) for row in rows], total=total)

    def ping(self) -> None:
        with self._engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    # ---- writes ----------------------------------------------------------------

    def resolve_or_create(
        self, identity: AgentIdentity, *, config: Mapping[str, Any] | None = None
    ) -> tuple[Agent, bool]:
        """The agent for ``identity``, created if missing. Returns (agent, created).

        Idempotent and race-free across threads and processes: the insert uses the
        identity's deterministic id, so concurrent creators collide on the primary key
        or the (name, project_id) key; the loser reads the winner's row.
        """
        for attempt in range(self._attempts):
            try:
                existing = self._find(identity)
                if existing is not None:
                    return self._reconcile(existing, identity), False
                created = self._insert(identity, config)
                if created is not None:
                    return created, True
            except OperationalError as error:
                if not _is_retryable(error):
                    raise RegistryUnavailable(str(error.orig)) from error
            # Lost a race or hit a lock: back off a little and read again.
            time.sleep(min(0.2, 0.005 * 2**attempt) * random.random())
        raise RegistryUnavailable(f"could not resolve agent {identity.name!r} after {self._attempts} attempts")

    def update(self, agent_id: str, changes: Mapping[str, Any]) -> Agent | None:
        """Apply ``changes`` (a subset of name, monitoring_enabled, status, config)."""
        unknown = set(changes) - UPDATABLE_FIELDS
        if unknown:
            raise ValueError(f"cannot update {', '.join(sorted(unknown))}")
        try:
            with self._engine.begin() as conn:
                if changes:
                    conn.execute(agents.update().where(agents.c.id == agent_id).values(**changes))
                # Read back rather than trust rowcount: MariaDB counts only rows that changed.
                row = conn.execute(sa.select(agents).where(agents.c.id == agent_id)).mappings().first()
        except IntegrityError as error:
            current = self.get(agent_id)
            raise AgentNameTaken(changes.get("name", ""), current.project_id if current else "") from error
        return Agent.from_row(row) if row else None

    def record_last_used(self, last_used: Mapping[str, datetime]) -> None:
        """Set last_used_at for many agents in one statement batch; never moves it backwards."""
        if not last_used:
            return
        statement = (
            agents.update()
            .where(agents.c.id == sa.bindparam("agent_id"))
            .where(sa.or_(agents.c.last_used_at.is_(None), agents.c.last_used_at < sa.bindparam("seen")))
            .values(last_used_at=sa.bindparam("seen"))
        )
        params = [{"agent_id": agent_id, "seen": _utc_naive(seen)} for agent_id, seen in last_used.items()]
        with self._engine.begin() as conn:
            conn.execute(statement, params)

    # ---- internals -------------------------------------------------------------

    def _find(self, identity: AgentIdentity) -> Agent | None:
        with self._engine.connect() as conn:
            if identity.external_id is not None:
                row = (
                    conn.execute(
                        sa.select(agents)
                        .where(
                            agents.c.external_id == identity.external_id,
                            agents.c.project_id == identity.project_id,
                            agents.c.type == identity.type,
                        )
                        .order_by(agents.c.created_at, agents.c.id)
                        .limit(1)
                    )
                    .mappings()
                    .first()
                )
                if row is not None:
                    return Agent.from_row(row)
            row = (
                conn.execute(
                    sa.select(agents).where(agents.c.name == identity.name, agents.c.project_id == identity.project_id)
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        agent = Agent.from_row(row)
        if identity.external_id is not None and agent.external_id not in (None, identity.external_id):
            # The name belongs to another agent (another flow with the same name): this one is new.
            return None
        return agent

    def _name_for(self, identity: AgentIdentity) -> str:
        """The display name for a new row: the identity's name, or, when another agent owns
        it (another flow with the same name), the name qualified by the external id, then by
        the agent id, which no other agent can own."""
        candidates = [identity.name]
        if identity.external_id is not None:
            candidates.append(_disambiguated(identity))
        candidates.append(_qualified(identity.name, identity.agent_id[:8]))
        with self._engine.connect() as conn:
            taken = set(
                conn.execute(
                    sa.select(agents.c.name).where(
                        agents.c.name.in_(candidates), agents.c.project_id == identity.project_id
                    )
                ).scalars()
            )
        return next((name for name in candidates if name not in taken), candidates[-1])

    def _insert(self, identity: AgentIdentity, config: Mapping[str, Any] | None) -> Agent | None:
        values = {
            "id": identity.agent_id,
            "name": self._name_for(identity),
            "type": identity.type,
            "project_id": identity.project_id,
            "external_id": identity.external_id,
            "config": dict(config) if config is not None else None,
        }
        try:
            with self._engine.begin() as conn:
                conn.execute(agents.insert().values(**values))
                row = conn.execute(sa.select(agents).where(agents.c.id == values["id"])).mappings().one()
        except IntegrityError:
            return None  # another writer created it first
        return Agent.from_row(row)

    def _reconcile(self, agent: Agent, identity: AgentIdentity) -> Agent:
        """Bring a found row up to date with what the caller now knows about the agent."""
        changes: dict[str, Any] = {}
        if identity.external_id is not None and agent.external_id is None:
            changes["external_id"] = identity.external_id  # first time we learn it
        elif (
            identity.external_id is not None
            and not identity.name_is_placeholder
            and agent.name not in (identity.name, _disambiguated(identity))
        ):
            changes["name"] = identity.name  # the flow was renamed; the row follows
        if not changes:
            return agent
        try:
            with self._engine.begin() as conn:
                conn.execute(agents.update().where(agents.c.id == agent.id).values(**changes))
        except IntegrityError:
            return agent  # the new name is taken by another agent: keep the old one
        return self.get(agent.id) or agent

