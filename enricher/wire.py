"""The protobuf wire format of an ExportTraceServiceRequest, walked and rewritten without
decoding its spans.

Why: decoding every span into Python objects, editing them and serializing the request
again costs several microseconds a span, most of the enricher's time. The pipeline only
needs, per span, where its bytes are (to copy it, drop it or append attributes to it):

* ``layout`` walks the three outer levels only (request > ResourceSpans > ScopeSpans >
  Span) and records each span's byte range; the spans themselves are never parsed. The C
  request scanner (enricher/receive/_wirescan.c) does the same, and more, in one pass; this
  is its Python counterpart, used on the requests that it declines.
* ``rewrite`` copies the request with some spans removed and serialized attributes appended
  to others. Appending works because a span's attributes are a repeated field: protobuf
  parsers concatenate repeated fields wherever they occur in a message, so
  ``span bytes + KeyValue fields`` decodes as the span with those attributes added. Only the
  length prefixes of the enclosing ScopeSpans and ResourceSpans change.

Anything ``layout`` does not expect (a group field, a known field with an unusual wire type,
truncated bytes) raises ``WireError``; the caller then lays out upb's own encoding of the
request instead, which always has the usual shape. Imports nothing from the rest of the
enricher.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

# Wire types.
_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
# Field 2, length-delimited: ResourceSpans.scope_spans and ScopeSpans.spans alike.
_FIELD2_TAG = b"\x12"


class WireError(ValueError):
    """Bytes this module does not handle; use the upb path for this request."""


@dataclass(slots=True)
class ScopeLayout:
    """One ScopeSpans: where it is and where each of its spans is, as payload offsets."""

    field_start: int  # its tag, in the enclosing ResourceSpans
    body_start: int
    body_end: int
    span_fields: list[int] = field(default_factory=list)  # each span's tag
    span_starts: list[int] = field(default_factory=list)  # each span's first byte
    span_ends: list[int] = field(default_factory=list)


@dataclass(slots=True)
class ResourceLayout:
    field_start: int  # its tag, in the request
    body_start: int
    body_end: int
    scopes: list[ScopeLayout] = field(default_factory=list)


def _varint(data: bytes, pos: int, end: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it (non-minimal encodings accepted)."""
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _skip(data: bytes, wire_type: int, pos: int, end: int) -> int:
    """The position after a field's value that this walk does not look into."""
    if wire_type == _VARINT:
        return _varint(data, pos, end)[1]
    if wire_type == _LEN:
        length, pos = _varint(data, pos, end)
        pos += length
    elif wire_type == _FIXED64:
        pos += 8
    elif wire_type == _FIXED32:
        pos += 4
    else:  # groups (3, 4) are legal but never used by OTLP; 6 and 7 are invalid
        raise WireError(f"wire type {wire_type}")
    if pos > end:
        raise WireError("field runs past its message")
    return pos


def _field(data: bytes, pos: int, end: int, message_number: int) -> tuple[int, int, int, int]:
    """(tag's field number, wire type, value start, value end) of the field at ``pos``.
    For a length-delimited field the value is its body, without the length."""
    tag, pos = _varint(data, pos, end)
    number, wire_type = tag >> 3, tag & 7
    if number == 0:
        raise WireError("field number 0")
    if wire_type == _LEN:
        length, pos = _varint(data, pos, end)
        value_end = pos + length
        if value_end > end:
            raise WireError("field runs past its message")
        return number, wire_type, pos, value_end
    if number <= message_number:  # a known message field with another wire type: leave it to upb
        raise WireError(f"field {number} has wire type {wire_type}")
    return number, wire_type, pos, _skip(data, wire_type, pos, end)


def layout(payload: bytes) -> list[ResourceLayout]:
    """Where each ResourceSpans, ScopeSpans and Span of a serialized request is, in the
    order upb decodes them (repeated fields keep their wire order)."""
    resources: list[ResourceLayout] = []
    pos, end = 0, len(payload)
    while pos < end:
        start = pos
        number, wire_type, body, pos = _field(payload, pos, end, 1)
        if number != 1:
            continue  # an unknown field of the request: kept as it is
        if wire_type != _LEN:
            raise WireError("resource_spans is not length-delimited")
        resource = ResourceLayout(start, body, pos)
        resources.append(resource)
        inner = body
        while inner < pos:
            scope_start = inner
            # ResourceSpans: 1 resource, 2 scope_spans, 3 schema_url.
            number, wire_type, scope_body, inner = _field(payload, inner, pos, 3)
            if number == 2:
                resource.scopes.append(_scope(payload, scope_start, scope_body, inner))
    return resources


def _scope(payload: bytes, field_start: int, body: int, end: int) -> ScopeLayout:
    scope = ScopeLayout(field_start, body, end)
    fields, starts, ends = scope.span_fields, scope.span_starts, scope.span_ends
    pos = body
    while pos < end:
        # The common case inline: a one-byte tag 0x12 (spans) and a length under 2**14.
        if payload[pos] == 0x12 and pos + 2 < end:
            length = payload[pos + 1]
            if length < 0x80:
                span_start = pos + 2
            elif payload[pos + 2] < 0x80:
                length = (length & 0x7F) | (payload[pos + 2] << 7)
                span_start = pos + 3
            else:
                length, span_start = _varint(payload, pos + 1, end)
            span_end = span_start + length
            if span_end > end:
                raise WireError("span runs past its ScopeSpans")
            fields.append(pos)
            starts.append(span_start)
            ends.append(span_end)
            pos = span_end
            continue
        field_start = pos
        # ScopeSpans: 1 scope, 2 spans, 3 schema_url.
        number, wire_type, value, pos = _field(payload, pos, end, 3)
        if number == 2:  # a span field with a non-minimal tag
            fields.append(field_start)
            starts.append(value)
            ends.append(pos)
    return scope


@lru_cache(maxsize=4096)
def _length_prefix(tag: bytes, length: int) -> bytes:
    out = bytearray(tag)
    while length > 0x7F:
        out.append((length & 0x7F) | 0x80)
        length >>= 7
    out.append(length)
    return bytes(out)


def length_delimited(tag: bytes, length: int) -> bytes:
    """``tag`` followed by the varint ``length``: the header of a length-delimited field."""
    if length < 0x80:
        return tag + bytes((length,))
    return _length_prefix(tag, length)


# What an edit does to a span (by its index in the request): None removes it, bytes are appended to it.
Edits = Mapping[int, bytes | None]


class ScopePositions(Protocol):
    field_start: int
    body_start: int
    body_end: int
    first: int  # the request-wide index of its first span
    count: int


class ResourcePositions(Protocol):
    field_start: int
    body_start: int
    body_end: int
    scopes: Sequence[ScopePositions]


def rewrite(
    payload: bytes, resources: Sequence[ResourcePositions], fields: Sequence[int], starts: Sequence[int],
    ends: Sequence[int], edits: Edits,
) -> bytes:
    """``payload`` with ``edits`` applied. Spans are numbered across the request; ``fields``,
    ``starts`` and ``ends`` are each span's tag, first byte and end. Everything not edited,
    unknown fields included, is copied as it is."""
    # Plain bytes slices, not memoryviews: a copy of a few hundred bytes costs less than a
    # memoryview, which the garbage collector also has to track.
    order = sorted(edits)
    out: list = []
    copied = 0  # payload[:copied] is in ``out`` already, or replaced
    next_edit, edit_count = 0, len(order)
    for resource in resources:
        if next_edit == edit_count:
            break
        pieces: list = []
        inner = resource.body_start
        for scope in resource.scopes:
            scope_end = scope.first + scope.count
            if next_edit == edit_count or order[next_edit] >= scope_end:
                continue
            last = next_edit
            while last < edit_count and order[last] < scope_end:
                last += 1
            pieces.append(payload[inner:scope.field_start])
            body = _rewrite_scope(payload, scope, fields, starts, ends, order[next_edit:last], edits)
            size = sum(map(len, body))
            pieces.append(length_delimited(_FIELD2_TAG, size))
            pieces.extend(body)
            inner = scope.body_end
            next_edit = last
        if not pieces:
            continue
        pieces.append(payload[inner:resource.body_end])
        out.append(payload[copied:resource.field_start])
        out.append(length_delimited(b"\x0a", sum(map(len, pieces))))
        out.extend(pieces)
        copied = resource.body_end
    out.append(payload[copied:])
    return b"".join(out)


def _rewrite_scope(
    payload: bytes, scope: ScopePositions, fields: Sequence[int], starts: Sequence[int], ends: Sequence[int],
    indexes: list[int], edits: Edits,
) -> list:
    pieces: list = []
    copied = scope.body_start
    headers = _SPAN_HEADERS
    for index in indexes:
        extra = edits[index]
        field_start = fields[index]
        if copied < field_start:
            pieces.append(payload[copied:field_start])  # the unchanged fields before this span
        copied = ends[index]
        if extra is not None:
            start = starts[index]
            size = copied - start + len(extra)
            header = headers.get(size) or _span_header(size)
            pieces += (header, payload[start:copied], extra)
    pieces.append(payload[copied:scope.body_end])
    return pieces


_SPAN_HEADERS: dict[int, bytes] = {}


def _span_header(size: int) -> bytes:
    header = length_delimited(_FIELD2_TAG, size)
    if len(_SPAN_HEADERS) < 65536:
        _SPAN_HEADERS[size] = header
    return header
