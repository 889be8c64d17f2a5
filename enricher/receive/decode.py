"""Turn OTLP payloads (protobuf or JSON) into validated requests, with clear errors."""

from __future__ import annotations

import base64
import json
from operator import attrgetter, itemgetter
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


class InvalidPayload(ValueError):
    """The payload is not a valid OTLP trace export request; the message says why."""


def decode_protobuf(payload: bytes) -> ExportTraceServiceRequest:
    return decode_protobuf_ids(payload)[0]


def decode_protobuf_ids(payload: bytes) -> tuple[ExportTraceServiceRequest, SpanIds]:
    """The request, and the span ids that validating it read (for ``Pipeline.submit``)."""
    try:
        request = ExportTraceServiceRequest.FromString(payload)
    except (DecodeError, RuntimeError, ValueError) as error:
        raise InvalidPayload(f"not a valid OTLP ExportTraceServiceRequest: {error}") from None
    return request, validate(request)


def decode_json(payload: bytes) -> ExportTraceServiceRequest:
    """OTLP/JSON: like protobuf JSON, except that trace and span ids are hex, not base64."""
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError) as error:
        raise InvalidPayload(f"not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidPayload("an OTLP/JSON request is a JSON object")
    for resource_spans in _list(document, "resourceSpans", "resource_spans"):
        for scope_spans in _list(resource_spans, "scopeSpans", "scope_spans"):
            for span in _list(scope_spans, "spans"):
                _hex_ids_to_base64(span, ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id"))
                for link in _list(span, "links"):
                    _hex_ids_to_base64(link, ("traceId", "trace_id", "spanId", "span_id"))
    try:
        request = json_format.ParseDict(document, ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError) as error:
        raise InvalidPayload(f"not a valid OTLP/JSON trace request: {error}") from None
    validate(request)
    return request


# What validate reads of each span, with C-level loops (map over the upb spans): a Python
# loop over every span costs more than the rest of the receiver's work.
_IDS = attrgetter("trace_id", "span_id", "parent_span_id")
_LINKS = attrgetter("links")
_FIRST, _SECOND, _THIRD = itemgetter(0), itemgetter(1), itemgetter(2)

# Per ScopeSpans, in request order: (trace_id, span_id, parent_span_id) of each span, and each
# span's number of links when one has any (else None).
SpanIds = list[tuple[list[tuple[bytes, bytes, bytes]], "list[int] | None"]]


def validate(request: ExportTraceServiceRequest) -> SpanIds:
    """The checks the stock collector makes: ids have their fixed lengths. Returns the ids it
    read (the pipeline needs them too; see SpanIds)."""
    scopes: SpanIds = []
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans
            ids = list(map(_IDS, spans))
            links = list(map(len, map(_LINKS, spans)))
            if ids and not (
                set(map(len, map(_FIRST, ids))) == {16}
                and set(map(len, map(_SECOND, ids))) == {8}
                and set(map(len, map(_THIRD, ids))) <= {0, 8}
            ) or any(links):
                _check_each_span(spans)  # raises the error of the first bad span, if any
            scopes.append((ids, links if any(links) else None))
    return scopes


def _check_each_span(spans) -> None:
    for span in spans:
        if len(span.trace_id) != 16 or len(span.span_id) != 8:
            raise InvalidPayload(
                f"span {span.name!r}: trace_id must be 16 bytes and span_id 8 bytes "
                f"(got {len(span.trace_id)} and {len(span.span_id)})"
            )
        if span.parent_span_id and len(span.parent_span_id) != 8:
            raise InvalidPayload(f"span {span.name!r}: parent_span_id must be empty or 8 bytes")
        if len(span.links):  # len() is the cheapest test on a upb repeated field
            # The collector refuses a whole request over one bad link id: accepting it
            # here would lose the request's spans downstream after acknowledging them.
            for link in span.links:
                if len(link.trace_id) not in (0, 16) or len(link.span_id) not in (0, 8):
                    raise InvalidPayload(
                        f"span {span.name!r}: a link's trace_id must be 16 bytes and span_id 8 bytes "
                        f"(got {len(link.trace_id)} and {len(link.span_id)})"
                    )


def _list(container: Any, *keys: str) -> list:
    if not isinstance(container, dict):
        return []
    for key in keys:
        value = container.get(key)
        if isinstance(value, list):
            return value
    return []


def _hex_ids_to_base64(message: Any, keys: tuple[str, ...]) -> None:
    if not isinstance(message, dict):
        return
    for key in keys:
        value = message.get(key)
        if isinstance(value, str) and value:
            try:
                message[key] = base64.b64encode(bytes.fromhex(value)).decode()
            except ValueError:
                raise InvalidPayload(f"{key} must be hex, got {value[:40]!r}") from None
        elif value == "":
            message.pop(key)


__all__ = ["InvalidPayload", "SpanIds", "decode_json", "decode_protobuf", "decode_protobuf_ids", "validate"]
