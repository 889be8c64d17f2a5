"""Stamp agent attributes onto spans and rebuild requests for spans that were held.

Both work on protobuf bytes where they can: a span's attributes are a repeated field,
so appending serialized KeyValues (``AgentRef.stamp``) to a span adds attributes
without decoding it, and held spans are kept serialized and re-wrapped by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans

from enricher.agents import AGENT_ID_KEY, STAMP_KEYS, AgentRef
from enricher.identify.rules import any_value_text

STAMP_KEY_SET = frozenset(STAMP_KEYS)


@dataclass(frozen=True, slots=True)
class SpanContext:
    """The resource and scope a held span was sent with, serialized once per ScopeSpans."""

    resource: bytes
    resource_schema_url: str
    scope: bytes
    scope_schema_url: str

    @classmethod
    def of(cls, resource_spans: ResourceSpans, scope_spans: ScopeSpans) -> SpanContext:
        return cls(
            resource_spans.resource.SerializeToString(),
            resource_spans.schema_url,
            scope_spans.scope.SerializeToString(),
            scope_spans.schema_url,
        )


def existing_stamp(attributes: Mapping[str, Any]) -> dict[str, str | None] | None:
    """The stamp attributes a span already carries, as text (None when it has none, the
    common case). Plain strings only, so a held span never keeps its request alive."""
    present = [key for key in STAMP_KEYS if key in attributes]  # lookups: any Mapping is fast
    if not present:
        return None
    return {key: any_value_text(attributes[key]) for key in present}


def stamp_for(owner: AgentRef, existing: dict[str, str | None] | None) -> bytes | None:
    """The bytes to merge into a span for ``owner``; None when the span already names a
    different agent id (kept as sent: the caller counts the conflict)."""
    if not existing:
        return owner.stamp
    if AGENT_ID_KEY in existing and existing[AGENT_ID_KEY] != owner.id:
        return None
    return owner.stamp_without(frozenset(existing))


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(payload)) + payload


def encode_request(groups: Iterable[tuple[SpanContext, list[bytes]]]) -> bytes:
    """A serialized ExportTraceServiceRequest holding ``spans`` (serialized, already
    stamped) under their resource and scope. Spans of one resource share a ResourceSpans."""
    by_resource: dict[tuple[bytes, str], list[bytes]] = {}
    for context, spans in groups:
        scope_spans = _field(1, context.scope) + b"".join(_field(2, span) for span in spans)
        if context.scope_schema_url:
            scope_spans += _field(3, context.scope_schema_url.encode())
        by_resource.setdefault((context.resource, context.resource_schema_url), []).append(scope_spans)
    out = []
    for (resource, schema_url), scope_spans_list in by_resource.items():
        body = _field(1, resource) + b"".join(_field(2, ss) for ss in scope_spans_list)
        if schema_url:
            body += _field(3, schema_url.encode())
        out.append(_field(1, body))
    return b"".join(out)


def split_request(payload: bytes, span_count: int, limit: int) -> list[tuple[bytes, int]]:
    """``payload`` as requests of at most ``limit`` bytes each (a single larger span goes
    alone), with their span counts. Stamping adds bytes, so a request the receiver took may
    exceed what the downstream takes; it is split rather than rejected."""
    if len(payload) <= limit:
        return [(payload, span_count)]
    request = ExportTraceServiceRequest.FromString(payload)
    chunks: list[tuple[bytes, int]] = []
    groups: dict[SpanContext, list[bytes]] = {}
    size = count = 0
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            context = SpanContext.of(resource_spans, scope_spans)
            overhead = len(context.resource) + len(context.scope) + 32
            for span in scope_spans.spans:
                span_bytes = span.SerializeToString()
                if count and size + len(span_bytes) + overhead > limit:
                    chunks.append((encode_request(groups.items()), count))
                    groups, size, count = {}, 0, 0
                if context not in groups:
                    size += overhead
                groups.setdefault(context, []).append(span_bytes)
                size += len(span_bytes) + 8
                count += 1
    if count:
        chunks.append((encode_request(groups.items()), count))
    return chunks
