"""A span's attributes as a mapping, read from the span's bytes at C speed.

The rules read a few attributes of a span by key. Building ``{kv.key: kv.value}`` from a
decoded Span creates two Python objects per attribute, all but a few of them unused; that
costs more than everything else the rules do. Instead the span's bytes are parsed as a
message whose field 9 is ``map<string, AnyValue>``: on the wire a map is a repeated
``{key = 1, value = 2}`` message, exactly what ``Span.attributes`` (a repeated KeyValue) is,
so upb builds the map in C and only the values that a rule asks for become Python objects.
A map keeps the last value of a repeated key, as the dict did. The message also has the span's
name (field 5), which rules may match; the span's other fields are unknown to it and not looked at.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.common.v1 import common_pb2

_FILE = "agentmon/internal/span_attributes.proto"
_MESSAGE = "agentmon.internal.SpanAttributes"


def _message_class() -> type:
    pool = descriptor_pool.Default()
    try:
        pool.FindFileByName(_FILE)
    except KeyError:
        proto = descriptor_pb2.FileDescriptorProto(
            name=_FILE,
            package="agentmon.internal",
            syntax="proto3",
            dependency=[common_pb2.DESCRIPTOR.name],
        )
        message = proto.message_type.add(name="SpanAttributes")
        entry = message.nested_type.add(name="AttributesEntry")
        entry.options.map_entry = True
        field = descriptor_pb2.FieldDescriptorProto
        entry.field.add(name="key", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
        entry.field.add(
            name="value", number=2, type=field.TYPE_MESSAGE, label=field.LABEL_OPTIONAL,
            type_name=".opentelemetry.proto.common.v1.AnyValue",
        )
        message.field.add(name="name", number=5, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
        message.field.add(
            name="attributes", number=9, type=field.TYPE_MESSAGE, label=field.LABEL_REPEATED,
            type_name=f".{_MESSAGE}.AttributesEntry",
        )
        pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(_MESSAGE))


_SpanAttributes = _message_class()


def span_attributes(span_bytes: bytes) -> Mapping[str, Any]:
    """Attribute key -> AnyValue of a serialized Span (one that has been validated)."""
    return _SpanAttributes.FromString(span_bytes).attributes


def span_name_and_attributes(span_bytes: bytes) -> tuple[str, Mapping[str, Any]]:
    """The name and the attributes (as ``span_attributes``) of a serialized, validated Span."""
    span = _SpanAttributes.FromString(span_bytes)
    return span.name, span.attributes
