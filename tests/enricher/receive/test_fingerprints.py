"""Span fingerprints (the C scan's, with ``fingerprints=True``): the pipeline remembers the rules'
answer for a span by its fingerprint within one scope filter and resource match
(Pipeline._read_scope), so two spans with the same fingerprint must be the same to the rules:
the same name and the same values, in the same order, of every attribute key scanned for."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from enricher.identify.rules import load_rules
from enricher.enrichment import scanner_for
from enricher.receive import scan
from enricher.receive.decode import InvalidPayload
from tests.enricher.test_pipeline_wire import requests

pytestmark = pytest.mark.skipif(
    scan._wirescan is None and not os.environ.get("CI"), reason="the C request scanner is not built (no C compiler?)"
)

SCANNER = scanner_for(load_rules())  # the pipeline's, with the built-in rules


def _decoded_spans(payload: bytes) -> list[Span]:
    request = ExportTraceServiceRequest.FromString(payload)
    return [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]


def _what_rules_see(span: Span, keys: frozenset[str]) -> tuple:
    return span.name, [(kv.key, kv.value.SerializeToString(deterministic=True)) for kv in span.attributes if kv.key in keys]


def test_the_pipeline_scanner_fingerprints_with_the_built_in_rules() -> None:
    assert SCANNER._fingerprints
    assert load_rules().outcome_keys <= frozenset(SCANNER.keys)


@settings(max_examples=300, deadline=None)
@given(payload=requests())
def test_equal_fingerprints_mean_equal_names_and_scanned_attributes(payload: bytes) -> None:
    declined_before = SCANNER.declined
    try:
        scanned = SCANNER.scan(payload)
    except InvalidPayload:
        return
    # The counter is the scanner's, across examples: only this request's decline skips it.
    if not SCANNER.native or SCANNER.declined != declined_before:
        return  # the Python path gives no fingerprints
    keys = frozenset(SCANNER.keys)
    spans = _decoded_spans(scanned.payload)
    assert set(scanned.fingerprints) == set(scanned.hits)  # every span with a hit, no other
    seen: dict[bytes, tuple] = {}
    for index, fingerprint in scanned.fingerprints.items():
        view = _what_rules_see(spans[index], keys)
        assert seen.setdefault(fingerprint, view) == view


def test_fingerprints_differ_by_name_and_by_value() -> None:
    def payload(name: str, agent: str) -> bytes:
        request = ExportTraceServiceRequest()
        span = request.resource_spans.add().scope_spans.add().spans.add(
            trace_id=b"\x01" * 16, span_id=b"\x02" * 8, name=name)
        span.attributes.append(KeyValue(key="gen_ai.agent.name", value=AnyValue(string_value=agent)))
        span.attributes.append(KeyValue(key="http.method", value=AnyValue(string_value=name)))  # not scanned for
        return request.SerializeToString()

    def fingerprint(name: str, agent: str) -> bytes:
        return SCANNER.scan(payload(name, agent)).fingerprints[0]

    assert fingerprint("a", "planner") == fingerprint("a", "planner")
    assert fingerprint("a", "planner") != fingerprint("b", "planner")
    assert fingerprint("a", "planner") != fingerprint("a", "writer")
    # A name cannot run into the attributes that follow it.
    assert fingerprint("ab", "planner") != fingerprint("a", "planner")
