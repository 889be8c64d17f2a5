"""OTLP trace requests -> rows for the stock ClickHouse exporter's ``otel_traces`` table.

The rows are the ones the OpenTelemetry Collector's ClickHouse exporter
(opentelemetry-collector-contrib ``exporter/clickhouseexporter``, the release pinned in
docker-compose.yml: 0.160.0) writes, so agentmon's own writer and the stock exporter fill
the same table with the same values. Use::

    client.insert(table, request_to_rows(payload), column_names=COLUMNS)

What is matched, and where it comes from (upstream sources read for this module):

* ``exporter_traces.go`` ``pushTraceData``: one row per span, the 22 columns of
  ``internal/sqltemplates/traces_insert.sql`` in :data:`COLUMNS` order. Timestamp is the span
  start; Duration is ``span.EndTimestamp() - span.StartTimestamp()`` computed on
  ``pcommon.Timestamp`` (uint64), so an end before the start wraps modulo 2**64 (a huge
  UInt64) exactly as the exporter's value does; ServiceName is ``internal.GetServiceName``:
  the first ``service.name`` resource attribute, ``AsString``-ed, else ''; ScopeName and
  ScopeVersion are the scope's name and version ('' when unset); SpanKind and StatusCode are
  pdata's ``SpanKind.String()`` / ``StatusCode.String()`` (Unspecified, Internal, Server,
  Client, Producer, Consumer / Unset, Ok, Error; an out-of-range enum number gives '').
  Events and Links are parallel arrays in span order (``convertEvents`` / ``convertLinks``).
* ``internal/coreinternal/traceutil`` ``TraceIDToHexOrEmptyString`` /
  ``SpanIDToHexOrEmptyString``: lowercase hex, '' for an all-zero (or absent) id.
* ``internal/util.go`` ``AttributesToMap``: every attribute ``AsString``-ed into a
  clickhouse-go ``orderedmap`` sorted by key. The rows here carry dicts whose keys are in
  the same sorted order. Duplicate keys (legal on the OTLP wire; pdata keeps them): the
  exporter sends every entry, and ClickHouse answers ``Map['k']`` (and so the MATERIALIZED
  AgentId column) with the first one; pdata's ``Map.Get`` (used for service.name) also
  takes the first. A dict can hold one value per key, so the FIRST occurrence wins here.
* ``pdata/pcommon/value.go`` ``Value.AsString`` (see :func:`any_value_to_string`).

Deliberate differences: the collector rejects a whole request whose trace/span ids are
not exactly 16/8 bytes (pdata ``invalid length for TraceID``); here any non-zero id is
hex-encoded as is, so one odd span cannot sink a batch that was already accepted
upstream. Invalid UTF-8 in a string field cannot be represented at all: upb refuses to
parse such a request (``DecodeError``), where the collector would carry the bytes on.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from decimal import Decimal

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = ["COLUMNS", "any_value_to_string", "attributes_to_map", "request_to_rows"]

#: The exporter's insert columns, in its order (internal/sqltemplates/traces_insert.sql).
COLUMNS: tuple[str, ...] = (
    "Timestamp",
    "TraceId",
    "SpanId",
    "ParentSpanId",
    "TraceState",
    "SpanName",
    "SpanKind",
    "ServiceName",
    "ResourceAttributes",
    "ScopeName",
    "ScopeVersion",
    "SpanAttributes",
    "Duration",
    "StatusCode",
    "StatusMessage",
    "Events.Timestamp",
    "Events.Name",
    "Events.Attributes",
    "Links.TraceId",
    "Links.SpanId",
    "Links.TraceState",
    "Links.Attributes",
)

# pdata ptrace SpanKind.String() / StatusCode.String(); other numbers -> "".
_SPAN_KIND = {0: "Unspecified", 1: "Internal", 2: "Server", 3: "Client", 4: "Producer", 5: "Consumer"}
_STATUS_CODE = {0: "Unset", 1: "Ok", 2: "Error"}

_UINT64 = (1 << 64) - 1
_INF = float("inf")


# --- doubles -----------------------------------------------------------------------------

def _format_finite_double(f: float) -> str:
    """pdata ``float64AsString`` / encoding/json ``floatEncoder`` for a finite float64.

    Go: ``strconv.AppendFloat(b, f, fmt, -1, 64)`` - the shortest digits that round-trip -
    with ``fmt = 'e'`` when ``abs != 0 && (abs < 1e-6 || abs >= 1e21)`` else ``'f'``, and in
    'e' form a two-digit negative exponent loses its leading zero (``e-07`` -> ``e-7``).
    Python's ``repr`` gives the same shortest digits; only the layout is redone.
    """
    r = repr(f)
    a = -f if f < 0 else f
    if a != 0 and (a < 1e-6 or a >= 1e21):
        # repr is already in exponent form here: d[.ddd]e(+|-)XX[X], like Go's 'e'.
        if r[-4] == "e" and r[-3] == "-" and r[-2] == "0":
            r = r[:-2] + r[-1]
        return r
    if "e" in r:  # 1e-6 <= a < 1e-4 or 1e16 <= a < 1e21: repr uses an exponent, Go does not
        return format(Decimal(r), "f")
    if r[-2:] == ".0":  # 1.0 -> "1", -0.0 -> "-0" (Go keeps the sign of negative zero)
        return r[:-2]
    return r


def _format_double(f: float) -> str:
    """pdata ``float64AsString``, including its text for NaN and the infinities."""
    if f != f:
        return "json: unsupported value: NaN"
    if f == _INF:
        return "json: unsupported value: +Inf"
    if f == -_INF:
        return "json: unsupported value: -Inf"
    return _format_finite_double(f)


# --- JSON for kvlist / array values ----------------------------------------------------

class _Unsupported(ValueError):
    """NaN or an infinity inside a map/array: encoding/json refuses, AsString gives ''."""


# Go encoding/json string encoding as pdata's AsString uses it since
# open-telemetry/opentelemetry-collector PR #15108 (merged 2026-04-14, so in the releases from
# about v0.150 on; docker-compose pins 0.160.0): json.Encoder with SetEscapeHTML(false).
# '"', '\\', \b \f \n \r \t as short escapes (Go >= 1.22), other control characters as
# \u00xx (lowercase hex), U+2028/U+2029 escaped unconditionally, everything else (including
# <, >, & and non-ASCII) literal. Python's encode_basestring (ensure_ascii=False) does all of
# it except U+2028/U+2029.
# Older collectors used json.Marshal, which also writes '<', '>', '&' as \u003c, \u003e,
# \u0026: to reproduce those, add the three to _GO_EXTRA_ESCAPES and translate unconditionally.
_encode_basestring = json.encoder.encode_basestring
_GO_EXTRA_ESCAPES = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029"})


def _json_string(s: str) -> str:
    out = _encode_basestring(s)
    if "\u2028" in out or "\u2029" in out:
        out = out.translate(_GO_EXTRA_ESCAPES)
    return out


def _json_value(v: AnyValue) -> str:
    """encoding/json of ``Value.AsRaw()`` (map keys sorted, compact)."""
    which = v.WhichOneof("value")
    if which == "string_value":
        return _json_string(v.string_value)
    if which == "int_value":
        return str(v.int_value)
    if which == "double_value":
        f = v.double_value
        if f != f or f == _INF or f == -_INF:
            raise _Unsupported(f)
        return _format_finite_double(f)
    if which == "bool_value":
        return "true" if v.bool_value else "false"
    if which == "kvlist_value":
        raw = {}
        for kv in v.kvlist_value.values:  # Map.AsRaw: rawMap[k] = ..., so the LAST duplicate wins
            raw[kv.key] = kv.value
        return "{" + ",".join([_json_string(k) + ":" + _json_value(raw[k]) for k in sorted(raw)]) + "}"
    if which == "array_value":
        return "[" + ",".join([_json_value(item) for item in v.array_value.values]) + "]"
    if which == "bytes_value":
        # ByteSlice.AsRaw copies into a nil slice: empty bytes stay nil, which JSON encodes as null.
        b = v.bytes_value
        return '"' + base64.b64encode(b).decode("ascii") + '"' if b else "null"
    return "null"  # empty value: AsRaw() is nil


# --- AnyValue -> str ----------------------------------------------------------------------

def _as_string_slow(v: AnyValue) -> str:
    """AsString for everything but a non-empty string (callers try ``string_value`` first)."""
    i = v.int_value  # non-zero only when the value IS an int: skips WhichOneof for most ints
    if i:
        return str(i)
    which = v.WhichOneof("value")
    if which == "bool_value":
        return "true" if v.bool_value else "false"
    if which == "double_value":
        return _format_double(v.double_value)
    if which == "int_value":
        return "0"
    if which == "kvlist_value" or which == "array_value":
        try:
            return _json_value(v)
        except _Unsupported:
            return ""  # json.Marshal failed; AsString ignores the error and returns string(nil)
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode("ascii")
    if which == "string_value":
        return v.string_value
    return ""  # empty value


def any_value_to_string(value: AnyValue) -> str:
    """``pcommon.Value.AsString()`` (pdata/pcommon/value.go) of an OTLP ``AnyValue``.

    string as is; bool ``true``/``false``; int decimal; double per ``float64AsString``
    (``1`` for 1.0, ``1e-7``, ``1e+21``, ``json: unsupported value: NaN``/``+Inf``/``-Inf``);
    bytes base64 (standard alphabet, padded); kvlist/array as compact JSON of ``AsRaw()``
    with sorted keys ('' if it holds a NaN or infinity); an empty value ''.
    """
    return value.string_value or _as_string_slow(value)


def attributes_to_map(kvs: Iterable) -> dict[str, str]:
    """The exporter's ``AttributesToMap``: key -> ``AsString(value)``, keys sorted.

    For a repeated key the first occurrence wins (see the module docstring)."""
    d = {kv.key: kv.value.string_value or _as_string_slow(kv.value) for kv in kvs}
    if len(d) != len(kvs):
        d = {}
        for kv in kvs:
            if kv.key not in d:
                d[kv.key] = kv.value.string_value or _as_string_slow(kv.value)
    return {k: d[k] for k in sorted(d)}


def _hex_id(b: bytes) -> str:
    return b.hex() if b.strip(b"\0") else ""  # "" for empty and all-zero ids


# --- request -> rows ------------------------------------------------------------------------

def request_to_rows(payload: bytes) -> list[list]:
    """Decode a serialized ``ExportTraceServiceRequest`` into rows for ``COLUMNS``.

    One row (a list in :data:`COLUMNS` order) per span, in request order. Timestamps are
    int nanoseconds since the epoch (clickhouse-connect inserts ints into DateTime64(9) as
    raw ticks), Duration an int in [0, 2**64). Rows of one ResourceSpans share its
    ResourceAttributes dict: treat the rows as read-only.
    Raises ``google.protobuf.message.DecodeError`` for a payload that is not a request.
    """
    request = ExportTraceServiceRequest.FromString(payload)
    rows: list[list] = []
    append = rows.append
    kinds = _SPAN_KIND
    codes = _STATUS_CODE
    slow = _as_string_slow
    for resource_spans in request.resource_spans:
        resource_attrs = attributes_to_map(resource_spans.resource.attributes)
        service_name = resource_attrs.get("service.name", "")
        for scope_spans in resource_spans.scope_spans:
            scope = scope_spans.scope
            scope_name = scope.name
            scope_version = scope.version
            for span in scope_spans.spans:
                # SpanAttributes: attributes_to_map inlined (this is the per-span hot spot).
                kvs = span.attributes
                attrs = {kv.key: kv.value.string_value or slow(kv.value) for kv in kvs}
                if len(attrs) != len(kvs):
                    attrs = attributes_to_map(kvs)
                else:
                    attrs = {k: attrs[k] for k in sorted(attrs)}

                trace_id = span.trace_id
                span_id = span.span_id
                parent_id = span.parent_span_id
                start = span.start_time_unix_nano
                status = span.status

                events = span.events
                if events:
                    event_times = [e.time_unix_nano for e in events]
                    event_names = [e.name for e in events]
                    event_attrs = [attributes_to_map(e.attributes) for e in events]
                else:
                    event_times, event_names, event_attrs = [], [], []
                links = span.links
                if links:
                    link_trace_ids = [_hex_id(link.trace_id) for link in links]
                    link_span_ids = [_hex_id(link.span_id) for link in links]
                    link_states = [link.trace_state for link in links]
                    link_attrs = [attributes_to_map(link.attributes) for link in links]
                else:
                    link_trace_ids, link_span_ids, link_states, link_attrs = [], [], [], []

                append([
                    start,
                    trace_id.hex() if trace_id.strip(b"\0") else "",
                    span_id.hex() if span_id.strip(b"\0") else "",
                    parent_id.hex() if parent_id.strip(b"\0") else "",
                    span.trace_state,
                    span.name,
                    kinds.get(span.kind, ""),
                    service_name,
                    resource_attrs,
                    scope_name,
                    scope_version,
                    attrs,
                    (span.end_time_unix_nano - start) & _UINT64,
                    codes.get(status.code, ""),
                    status.message,
                    event_times,
                    event_names,
                    event_attrs,
                    link_trace_ids,
                    link_span_ids,
                    link_states,
                    link_attrs,
                ])
    return rows
