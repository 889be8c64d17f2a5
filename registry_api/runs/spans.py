"""The OTLP spans of a run reported through the API, and the checks on what callers send.

A run becomes one ``invoke_agent {name}`` span that names its agent explicitly
(``metadata.agent_id`` and friends: the enricher's explicit-metadata rule), exported when
the run ends. At its start an *announcement* goes out: the same trace and span id and the
same identity, marked ``agentmon.announce``, which the enricher learns from and never
forwards, so the run's LLM calls (children of that span id) are attributed at once.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

import agentmon
from enricher.enrichment import RUN_ANNOUNCE_KEY

MAX_TEXT = 4096  # characters of input, output and error kept on the span
MAX_ATTRIBUTES = 64  # user attributes per call (start and end each)
MAX_ATTRIBUTE_KEY = 255
MAX_ATTRIBUTE_TEXT = 1024  # characters of a string attribute value; longer ones are clipped
SCOPE_NAME = "agentmon.runs"
SERVICE_NAME = "agentmon-api"

# Keys the API sets itself: a caller's attributes may not set them (the identity must
# stay the registry's, and a run must stay a run, not an LLM call).
RESERVED_KEYS = frozenset(
    {
        "gen_ai.operation.name",
        "gen_ai.agent.name",
        "gen_ai.agent.id",
        "metadata.project_id",
        "input.value",
        "output.value",
        "error.type",
    }
)
RESERVED_PREFIXES = ("metadata.agent_", "agentmon.")

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_HEX = re.compile(r"^[0-9a-f]+$")
_INT64 = (-(2**63), 2**63 - 1)


# ---- what callers send ------------------------------------------------------------


def parse_traceparent(text: str) -> tuple[bytes, bytes]:
    """(trace id, parent span id) of a W3C traceparent header value; ValueError if malformed."""
    match = _TRACEPARENT.match(text.strip().lower())
    if match is None:
        raise ValueError("traceparent must look like 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>")
    version, trace_id, span_id, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        raise ValueError(f"traceparent version {version} is not valid here")
    return parse_id(trace_id, 16, "trace id"), parse_id(span_id, 8, "span id")


def parse_id(text: str, size: int, what: str) -> bytes:
    """A trace id (16 bytes) or span id (8 bytes) from hex; ValueError if malformed or all zero."""
    text = text.strip().lower()
    if len(text) != 2 * size or not _HEX.match(text):
        raise ValueError(f"{what} must be {2 * size} hex characters")
    raw = bytes.fromhex(text)
    if not any(raw):
        raise ValueError(f"{what} must not be all zeros")
    return raw


def check_attributes(attributes: dict[str, Any] | None) -> dict[str, Any] | None:
    """Caller attributes: bounded in number and key size, scalar values, no reserved key.
    Long strings are clipped. Raises ValueError (the API answers 422)."""
    if attributes is None:
        return None
    if len(attributes) > MAX_ATTRIBUTES:
        raise ValueError(f"at most {MAX_ATTRIBUTES} attributes")
    checked: dict[str, Any] = {}
    for key, value in attributes.items():
        if not key or len(key) > MAX_ATTRIBUTE_KEY:
            raise ValueError(f"attribute keys must be 1 to {MAX_ATTRIBUTE_KEY} characters")
        if key in RESERVED_KEYS or key.startswith(RESERVED_PREFIXES):
            raise ValueError(f"attribute {key!r} is set by agentmon and cannot be given")
        if isinstance(value, bool):
            pass
        elif isinstance(value, int):
            if not _INT64[0] <= value <= _INT64[1]:
                raise ValueError(f"attribute {key!r}: integers must fit in 64 bits")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError(f"attribute {key!r}: numbers must be finite")
        elif isinstance(value, str):
            value = clip(value, MAX_ATTRIBUTE_TEXT)
        else:
            raise ValueError(f"attribute {key!r}: values must be a string, number or boolean")
        checked[key] = value
    return checked


def clip(text: str, limit: int = MAX_TEXT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def as_text(value: Any) -> str | None:
    """An input or output as span text: strings as they are, other JSON as JSON, clipped."""
    if value is None:
        return None
    if not isinstance(value, str):
        value = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return clip(value)


# ---- ids ---------------------------------------------------------------------------


def new_trace_id() -> bytes:
    while True:
        raw = secrets.token_bytes(16)
        if any(raw):
            return raw


def new_span_id() -> bytes:
    while True:
        raw = secrets.token_bytes(8)
        if any(raw):
            return raw


def traceparent(trace_id: bytes, span_id: bytes) -> str:
    """The W3C traceparent of a run's span (sampled): pass it on so that calls become its children."""
    return f"00-{trace_id.hex()}-{span_id.hex()}-01"


# ---- spans ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunAgent:
    """The registry identity a run's spans carry."""

    id: str
    name: str
    type: str
    project_id: str
    external_id: str | None = None

    def identity_attributes(self) -> dict[str, str]:
        attributes = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": self.name,
            "gen_ai.agent.id": self.id,
            "metadata.agent_id": self.id,
            "metadata.agent_name": self.name,
            "metadata.agent_type": self.type,
            "metadata.project_id": self.project_id,
        }
        if self.external_id:
            attributes["metadata.agent_external_id"] = self.external_id
        return attributes


def _utf8(text: str) -> str:
    """``text`` as protobuf takes it: JSON may spell lone UTF-16 surrogates, which UTF-8 cannot
    encode; they become '?' (as Go's JSON decoder would replace them) instead of failing the span."""
    return text if text.isascii() else text.encode("utf-8", "replace").decode("utf-8")


def _any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=_utf8(str(value)))


def _span(agent: RunAgent, trace_id: bytes, span_id: bytes, parent_span_id: bytes,
          start_ns: int, end_ns: int, attributes: dict[str, Any]) -> Span:
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        name=f"invoke_agent {agent.name}",
        kind=Span.SPAN_KIND_INTERNAL,
        start_time_unix_nano=start_ns,
        end_time_unix_nano=end_ns,
        attributes=[KeyValue(key=_utf8(key), value=_any_value(value)) for key, value in attributes.items()],
    )


def announcement_span(agent: RunAgent, trace_id: bytes, span_id: bytes, parent_span_id: bytes,
                      start_ns: int) -> Span:
    """Tells the enricher that this span id is a run of ``agent``; never stored."""
    return _span(agent, trace_id, span_id, parent_span_id, start_ns, start_ns,
                 {**agent.identity_attributes(), RUN_ANNOUNCE_KEY: "run"})


def run_span(
    agent: RunAgent,
    trace_id: bytes,
    span_id: bytes,
    parent_span_id: bytes,
    start_ns: int,
    end_ns: int,
    *,
    attributes: dict[str, Any],
    input_text: str | None,
    output_text: str | None,
    error: str | None,
    error_type: str | None = None,
) -> Span:
    """The run's span. Caller attributes come first: the identity and texts cannot be overridden."""
    values: dict[str, Any] = {**attributes, **agent.identity_attributes()}
    if input_text is not None:
        values["input.value"] = input_text
    if output_text is not None:
        values["output.value"] = output_text
    if error_type is not None:
        values["error.type"] = error_type
    span = _span(agent, trace_id, span_id, parent_span_id, start_ns, end_ns, values)
    if error is not None:
        span.status.CopyFrom(Status(code=Status.STATUS_CODE_ERROR, message=_utf8(clip(error))))
    return span


def resource_spans(spans: list[Span]) -> ResourceSpans:
    """``spans`` under agentmon's own resource and scope."""
    return ResourceSpans(
        resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=SERVICE_NAME))]),
        scope_spans=[
            ScopeSpans(scope=InstrumentationScope(name=SCOPE_NAME, version=agentmon.__version__), spans=spans)
        ],
    )
