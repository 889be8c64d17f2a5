"""Read an OTLP trace request once: validate it, and collect what the pipeline needs of it.

The pipeline never decodes a request into span objects. It needs, per span, its three ids and
where its bytes are (to stamp, hold or drop it as bytes: enricher/wire.py); per ResourceSpans
and ScopeSpans, their resource and scope; and which spans carry an attribute key that a rule,
an announcement or an existing stamp is about (only those spans' attributes are read).

``RequestScanner.scan`` gets all of that in one C pass over the bytes (``_wirescan.c``), which
also validates the request against the message schema of the installed protobuf descriptors.
The C pass declines what it does not handle (odd but valid encodings, and every invalid
request); those take the Python path: upb decodes and validates (with a clear error for an
invalid request), and the same ``ScannedRequest`` is built from the decoded request. The two
paths give equal results (tests/enricher/receive/test_scan.py). Without a compiler at install
time the C extension is missing and every request takes the Python path: slower, the same.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from enricher import wire
from enricher.receive.decode import InvalidPayload, decode_protobuf_ids

try:
    from enricher.receive import _wirescan
except ImportError:  # built without a C compiler: the Python path does everything
    _wirescan = None

log = logging.getLogger(__name__)


@dataclass(slots=True)
class ScopeScan:
    field_start: int  # its tag, in the enclosing ResourceSpans
    body_start: int
    body_end: int
    scope: bytes  # the serialized InstrumentationScope (b"" when absent)
    name: str  # the scope's name
    schema_url: str
    first: int  # the index of its first span in the request
    count: int


@dataclass(slots=True)
class ResourceScan:
    field_start: int  # its tag, in the request
    body_start: int
    body_end: int
    resource: bytes  # the serialized Resource (b"" when absent)
    schema_url: str
    scopes: list[ScopeScan]


def pack_positions(fields: Sequence[int], starts: Sequence[int], ends: Sequence[int]) -> bytes:
    """Span positions as ScannedRequest keeps them: the three columns as native int64, one after another."""
    return array("q", [*fields, *starts, *ends]).tobytes()


@dataclass(slots=True)
class ScannedRequest:
    """A valid request and what the pipeline needs of it. Spans are numbered in request
    order; positions are offsets in ``payload``."""

    payload: bytes
    resources: list[ResourceScan]
    ids: list[tuple[bytes, bytes, bytes]]  # (trace_id, span_id, parent_span_id) of each span
    # Where each span's field (its tag) starts, then each span's first byte, then each span's
    # end (pack_positions): one bytes object, not three lists of ints a span to make and free.
    positions: bytes
    hits: dict[int, int]  # span -> bitmask of the scanner's keys among its attribute keys
    links: dict[int, bytes]  # span -> its first link's trace id, for the spans with links
    # span -> its name and the attribute fields (as sent) whose keys the scanner looks for: spans
    # of a scope with equal fingerprints are the same to the rules. C path, when asked for, only.
    fingerprints: dict[int, bytes] = field(default_factory=dict, compare=False)

    @property
    def span_count(self) -> int:
        return len(self.ids)

    def _column(self, which: int) -> memoryview:
        count = len(self.ids)
        return memoryview(self.positions).cast("q")[which * count:(which + 1) * count]

    @property
    def fields(self) -> memoryview:
        return self._column(0)

    @property
    def starts(self) -> memoryview:
        return self._column(1)

    @property
    def ends(self) -> memoryview:
        return self._column(2)

    def span_bytes(self, index: int) -> bytes:
        return self.payload[self.starts[index]:self.ends[index]]

    def rewrite(self, edits: wire.Edits) -> bytes:
        """The payload with ``edits`` applied (span index -> bytes to append, or None to
        remove the span): in C when built, else ``wire.rewrite`` (the same bytes)."""
        if _wirescan is None:
            return wire.rewrite(self.payload, self.resources, self.fields, self.starts, self.ends, edits)
        layout = [
            (r.field_start, r.body_start, r.body_end, [(s.field_start, s.body_start, s.body_end, s.first, s.count)
                                                        for s in r.scopes])
            for r in self.resources
        ]
        return _wirescan.rewrite(self.payload, layout, self.positions, edits)


# Field kinds, as _wirescan.c numbers them.
_VARINT, _FIXED64, _FIXED32, _STRING, _BYTES, _MESSAGE, _DECLINE = 1, 2, 3, 4, 5, 6, 7
_KINDS = {
    FieldDescriptor.TYPE_DOUBLE: _FIXED64, FieldDescriptor.TYPE_FIXED64: _FIXED64, FieldDescriptor.TYPE_SFIXED64: _FIXED64,
    FieldDescriptor.TYPE_FLOAT: _FIXED32, FieldDescriptor.TYPE_FIXED32: _FIXED32, FieldDescriptor.TYPE_SFIXED32: _FIXED32,
    FieldDescriptor.TYPE_INT64: _VARINT, FieldDescriptor.TYPE_UINT64: _VARINT, FieldDescriptor.TYPE_INT32: _VARINT,
    FieldDescriptor.TYPE_UINT32: _VARINT, FieldDescriptor.TYPE_SINT32: _VARINT, FieldDescriptor.TYPE_SINT64: _VARINT,
    FieldDescriptor.TYPE_BOOL: _VARINT, FieldDescriptor.TYPE_ENUM: _VARINT,
    FieldDescriptor.TYPE_STRING: _STRING, FieldDescriptor.TYPE_BYTES: _BYTES, FieldDescriptor.TYPE_MESSAGE: _MESSAGE,
}
_ROLES = (
    "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest",
    "opentelemetry.proto.trace.v1.ResourceSpans",
    "opentelemetry.proto.trace.v1.ScopeSpans",
    "opentelemetry.proto.trace.v1.Span",
    "opentelemetry.proto.trace.v1.Span.Link",
    "opentelemetry.proto.common.v1.KeyValue",
    "opentelemetry.proto.common.v1.InstrumentationScope",
    "opentelemetry.proto.resource.v1.Resource",
)


def _schema():
    """The request's message schema for _wirescan, from the installed descriptors: what upb
    knows, _wirescan checks. Kinds it has no check for (groups, packed repeated scalars,
    maps) make it decline those fields."""
    order: list[Descriptor] = []
    index: dict[str, int] = {}
    pending = [ExportTraceServiceRequest.DESCRIPTOR]
    while pending:
        descriptor = pending.pop()
        if descriptor.full_name in index:
            continue
        index[descriptor.full_name] = len(order)
        order.append(descriptor)
        pending += [f.message_type for f in descriptor.fields if f.message_type is not None]
    messages = []
    for descriptor in order:
        fields = []
        for f in descriptor.fields:
            kind = _KINDS.get(f.type, _DECLINE)
            if f.is_repeated and kind not in (_STRING, _BYTES, _MESSAGE):
                kind = _DECLINE  # may come packed
            if f.message_type is not None and f.message_type.GetOptions().map_entry:
                kind = _DECLINE
            fields.append((f.number, kind, index[f.message_type.full_name] if kind == _MESSAGE else 0))
        messages.append(fields)
    return _wirescan.compile_schema(messages, tuple(index[name] for name in _ROLES))


class RequestScanner:
    """Scans requests for one fixed set of attribute keys (bit i of a hit mask is ``keys[i]``)."""

    MAX_KEYS = 62

    def __init__(self, keys: Iterable[str], *, native: bool = True, fingerprints: bool = False) -> None:
        self.keys: tuple[str, ...] = tuple(sorted(set(keys)))
        if len(self.keys) > self.MAX_KEYS:
            raise ValueError(f"at most {self.MAX_KEYS} attribute keys can be scanned for")
        self._key_bits = {key: 1 << bit for bit, key in enumerate(self.keys)}
        self._encoded_keys = tuple(key.encode() for key in self.keys)
        self._schema = _schema() if native and _wirescan is not None else None
        self._fingerprints = fingerprints
        self.declined = 0  # requests the C pass left to the Python path (counted, not locked: a gauge of health)

    @property
    def native(self) -> bool:
        return self._schema is not None

    def mask(self, keys: Iterable[str]) -> int:
        """The hit bits of ``keys`` (keys not scanned for have none)."""
        bits = 0
        for key in keys:
            bits |= self._key_bits.get(key, 0)
        return bits

    def scan(self, payload: bytes) -> ScannedRequest:
        """The scanned request, or InvalidPayload saying what is wrong with it."""
        if self._schema is not None:
            found = _wirescan.scan(payload, self._schema, self._encoded_keys, self._fingerprints)
            if found is not None:
                resources, ids, positions, hits, links, fingerprints = found
                return ScannedRequest(
                    payload,
                    [ResourceScan(*resource[:5], [ScopeScan(*scope) for scope in resource[5]]) for resource in resources],
                    ids, positions, hits, links, fingerprints or {},
                )
            self.declined += 1
        return self.scan_decoded(payload)

    def scan_decoded(self, payload: bytes) -> ScannedRequest:
        """The Python path: upb decodes and validates (raising InvalidPayload)."""
        request, _ = decode_protobuf_ids(payload)
        return self.scan_request(request, payload)

    def scan_request(self, request: ExportTraceServiceRequest, payload: bytes | None = None) -> ScannedRequest:
        """A decoded, validated request, scanned. Positions are those of ``payload`` when
        its outer levels have the usual shape, else of the request serialized again."""
        layout = _layout(request, payload) if payload is not None else None
        if layout is None:
            payload = request.SerializeToString()
            layout = _layout(request, payload)
        if layout is None:
            # upb keeps unknown fields as they came, and those it could not lay out are the
            # ones no encoder writes: a group, or a known field number with another wire type.
            # Such a request is taken without its unknown fields.
            request.DiscardUnknownFields()
            payload = request.SerializeToString()
            layout = _layout(request, payload)
            if layout is None:  # upb's own encoding of known fields always has the usual shape
                raise InvalidPayload("the request cannot be laid out")
        resources: list[ResourceScan] = []
        ids: list[tuple[bytes, bytes, bytes]] = []
        fields: list[int] = []
        starts: list[int] = []
        ends: list[int] = []
        hits: dict[int, int] = {}
        links: dict[int, bytes] = {}
        bits = self._key_bits
        for resource_spans, resource_layout in zip(request.resource_spans, layout):
            scopes = []
            for scope_spans, scope_layout in zip(resource_spans.scope_spans, resource_layout.scopes):
                first = len(ids)
                for index, span in enumerate(scope_spans.spans, start=first):
                    ids.append((span.trace_id, span.span_id, span.parent_span_id))
                    mask = 0
                    for kv in span.attributes:
                        mask |= bits.get(kv.key, 0)
                    if mask:
                        hits[index] = mask
                    if len(span.links):
                        links[index] = span.links[0].trace_id
                fields += scope_layout.span_fields
                starts += scope_layout.span_starts
                ends += scope_layout.span_ends
                scopes.append(ScopeScan(
                    scope_layout.field_start, scope_layout.body_start, scope_layout.body_end,
                    scope_spans.scope.SerializeToString() if scope_spans.HasField("scope") else b"",
                    scope_spans.scope.name, scope_spans.schema_url, first, len(scope_spans.spans),
                ))
            resources.append(ResourceScan(
                resource_layout.field_start, resource_layout.body_start, resource_layout.body_end,
                resource_spans.resource.SerializeToString() if resource_spans.HasField("resource") else b"",
                resource_spans.schema_url, scopes,
            ))
        return ScannedRequest(payload, resources, ids, pack_positions(fields, starts, ends), hits, links)


def _layout(request: ExportTraceServiceRequest, payload: bytes) -> list[wire.ResourceLayout] | None:
    """The byte layout of ``payload`` if it has the usual shape and upb's counts."""
    try:
        resources = wire.layout(payload)
    except wire.WireError:
        return None
    if len(resources) != len(request.resource_spans):
        return None
    for resource, resource_spans in zip(resources, request.resource_spans):
        if len(resource.scopes) != len(resource_spans.scope_spans):
            return None
        for scope, scope_spans in zip(resource.scopes, resource_spans.scope_spans):
            if len(scope.span_starts) != len(scope_spans.spans):
                return None
    return resources


__all__ = ["RequestScanner", "ResourceScan", "ScannedRequest", "ScopeScan", "pack_positions"]
