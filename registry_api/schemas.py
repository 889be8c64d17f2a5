"""Request and response bodies of the registry API."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    StringConstraints,
    field_validator,
    model_validator,
)

from registry_api.runs import spans as run_spans
from registry_api.store import DEFAULT_PROJECT, Agent

AgentType = Literal["vanna", "langflow", "flowise", "autogen", "custom"]
AgentStatus = Literal["active", "inactive"]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _no_control_characters(value: str) -> str:
    # U+001F separates the fields an agent id is derived from (store/identity.py): inside a
    # field it would let two different identities share one id. NUL and the rest are no
    # part of a name either (SQLite's LIKE and lower() even stop at a NUL).
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (U+0000 to U+001F, U+007F)")
    return value


Text255 = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=255), AfterValidator(_no_control_characters)
]

MAX_CONFIG_BYTES = 64 * 1024
MAX_CONFIG_DEPTH = 64  # JSON responses are serialised to a bounded depth: a deeper config could never be read back


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            item = item.values()
        elif not isinstance(item, list):
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in item)
    return deepest


def _bounded_config(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return value
    if _depth(value) > MAX_CONFIG_DEPTH:
        raise ValueError(f"config must nest at most {MAX_CONFIG_DEPTH} levels of objects and arrays")
    if len(json.dumps(value, separators=(",", ":"))) > MAX_CONFIG_BYTES:
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


# ---- runs reported through the API (trace/start, trace/end) ----------------------------

AttributeValue = StrictBool | StrictInt | StrictFloat | StrictStr
TraceIdHex = Annotated[str, Field(description="32 hex characters, as returned by trace/start.")]
SpanIdHex = Annotated[str, Field(description="16 hex characters, as returned by trace/start.")]


def _check_attributes(value: dict[str, Any] | None) -> dict[str, Any] | None:
    return run_spans.check_attributes(value)


class RunStart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input: Any = Field(default=None, description="The run's input: text, or any JSON (kept as JSON text), "
                       f"clipped to {run_spans.MAX_TEXT} characters.")
    attributes: dict[str, AttributeValue] | None = Field(
        default=None,
        description=f"Span attributes: at most {run_spans.MAX_ATTRIBUTES}, scalar values; keys agentmon sets "
        "(metadata.agent_*, agentmon.*, gen_ai.operation.name, gen_ai.agent.*, input.value, ...) are refused.",
    )
    traceparent: str | None = Field(
        default=None,
        description="W3C traceparent of the caller's span: the run becomes its child, in its trace. "
        "Default: a new trace.",
    )

    _check_attributes = field_validator("attributes")(_check_attributes)

    @field_validator("traceparent")
    @classmethod
    def _valid_traceparent(cls, value: str | None) -> str | None:
        if value is not None:
            run_spans.parse_traceparent(value)
        return value

    def parent(self) -> tuple[bytes, bytes] | None:
        return run_spans.parse_traceparent(self.traceparent) if self.traceparent else None


class RunStarted(BaseModel):
    trace_id: str
    span_id: str
    traceparent: str = Field(description="Pass it on (e.g. to LiteLLM) so that calls become children of the run.")
    expires_at: datetime = Field(description="When the run is closed as an error unless ended before.")


class RunEnd(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trace_id: TraceIdHex
    span_id: SpanIdHex
    output: Any = Field(default=None, description=f"The run's output, clipped to {run_spans.MAX_TEXT} characters.")
    error: Annotated[str, StringConstraints(min_length=1)] | None = Field(
        default=None, description="Given: the run failed with this message (an ERROR span)."
    )
    attributes: dict[str, AttributeValue] | None = Field(
        default=None, description="More span attributes, added to (and overriding) those given at start."
    )

    _check_attributes = field_validator("attributes")(_check_attributes)

    @field_validator("trace_id")
    @classmethod
    def _valid_trace_id(cls, value: str) -> str:
        run_spans.parse_id(value, 16, "trace_id")
        return value.strip().lower()

    @field_validator("span_id")
    @classmethod
    def _valid_span_id(cls, value: str) -> str:
        run_spans.parse_id(value, 8, "span_id")
        return value.strip().lower()


class RunEnded(BaseModel):
    trace_id: str
    span_id: str
    duration_ms: float
    status: Literal["ok", "error"]
