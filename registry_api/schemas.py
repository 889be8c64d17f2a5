"""Request and response bodies of the registry API."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from registry_api.store import DEFAULT_PROJECT, Agent

AgentType = Literal["vanna", "langflow", "flowise", "autogen", "custom"]
AgentStatus = Literal["active", "inactive"]
Text255 = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255)]

MAX_CONFIG_BYTES = 64 * 1024


def _bounded_config(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is not None and len(json.dumps(value, separators=(",", ":"))) > MAX_CONFIG_BYTES:
        raise ValueError(f"config must serialise to at most {MAX_CONFIG_BYTES} bytes of JSON")
    return value


class AgentRegister(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text255
    type: AgentType
    project_id: Text255 = DEFAULT_PROJECT
    external_id: Text255 | None = None
    config: dict[str, Any] | None = None

    _check_config = field_validator("config")(_bounded_config)


class AgentUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Text255 | None = None
    monitoring_enabled: bool | None = None
    status: AgentStatus | None = None
    config: dict[str, Any] | None = None

    _check_config = field_validator("config")(_bounded_config)

    @model_validator(mode="after")
    def _only_config_may_be_null(self) -> AgentUpdate:
        for field in ("name", "monitoring_enabled", "status"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        return self.model_dump(exclude_unset=True)


class AgentOut(BaseModel):
    id: str
    name: str
    type: AgentType
    project_id: str
    external_id: str | None
    config: dict[str, Any] | None
    monitoring_enabled: bool
    status: AgentStatus
    created_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def of(cls, agent: Agent) -> AgentOut:
        return cls(
            id=agent.id,
            name=agent.name,
            type=agent.type,
            project_id=agent.project_id,
            external_id=agent.external_id,
            config=agent.config,
            monitoring_enabled=agent.monitoring_enabled,
            status=agent.status,
            created_at=agent.created_at,
            last_used_at=agent.last_used_at,
        )


class AgentList(BaseModel):
    items: list[AgentOut]
    total: int = Field(description="Agents matching the filters, over all pages.")
    limit: int
    offset: int


class ErrorOut(BaseModel):
    detail: str


class HealthOut(BaseModel):
    status: Literal["ok", "unavailable"]
    registry: str
