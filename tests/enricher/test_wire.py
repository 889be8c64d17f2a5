"""wire.rewrite and its C twin (_wirescan.rewrite, what ScannedRequest.rewrite uses when built)
give the same bytes, and those bytes are the request with the edits applied."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from enricher import wire
from enricher.receive import scan
from enricher.receive.decode import InvalidPayload
from enricher.receive.scan import RequestScanner, pack_positions
from tests.enricher.test_pipeline_wire import requests

pytestmark = pytest.mark.skipif(
    scan._wirescan is None and not os.environ.get("CI"), reason="the C request scanner is not built (no C compiler?)"
)

SCANNER = RequestScanner(["gen_ai.agent.name"], native=False)  # positions as the Python path lays them out


def _spans(payload: bytes) -> list:
    request = ExportTraceServiceRequest.FromString(payload)
    return [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]


@settings(max_examples=300, deadline=None)
@given(payload=requests(), data=st.data())
def test_c_and_python_rewrite_agree(payload: bytes, data) -> None:
    try:
        scanned = SCANNER.scan(payload)
    except InvalidPayload:
        return
    count = scanned.span_count
    indexes = data.draw(st.sets(st.integers(0, count - 1), max_size=count)) if count else set()
    edits: dict[int, bytes | None] = {}
    for index in sorted(indexes):
        if data.draw(st.booleans()):
            edits[index] = None
        else:
            value = data.draw(st.text(max_size=30))
            edits[index] = KeyValue(key="metadata.agent_id", value=AnyValue(string_value=value)).SerializeToString()
            edits[index] = b"\x4a" + bytes([len(edits[index])]) + edits[index] if len(edits[index]) < 128 else b""
    python = wire.rewrite(scanned.payload, scanned.resources, scanned.fields, scanned.starts, scanned.ends, edits)
    assert scanned.rewrite(edits) == python
    # The edits are what they say: removed spans gone, the others with the attribute appended.
    expected = []
    for index, span in enumerate(_spans(scanned.payload)):
        extra = edits.get(index, b"")
        if extra is None:
            continue
        if extra:
            span.MergeFromString(extra)
        expected.append(span)
    assert _spans(python) == expected


def test_c_rewrite_refuses_positions_out_of_range() -> None:
    if scan._wirescan is None:
        pytest.skip("no C scanner")
    with pytest.raises(ValueError):
        scan._wirescan.rewrite(b"\x0a\x00", [(0, 2, 2, [(0, 2, 2, 0, 1)])], pack_positions([0], [2], [99]), {0: None})
    with pytest.raises(ValueError):
        scan._wirescan.rewrite(b"", [], b"", {3: None})
    payload = bytes(64)
    refused = [  # each once crashed the process or raised without an exception set (a review found them)
        (payload, [(0, 2, 10, [(2, 4, 8, 0, 1)])], pack_positions([4], [6], [40]), {0: b"x"}),  # span ends past its scope
        (payload, [(-100, 2, 10, [(2, 4, 8, 0, 1)])], pack_positions([4], [6], [7]), {0: b"x"}),  # resource before the payload
        (payload, [(0, 0, 3, [(0, 0, 0, 0, 1)])], pack_positions([0], [0], [1]), {0: None}),  # a scope's size would go negative
        (payload, [(0, 2, 10, [(2, 4, 8, 2**62, 2**62)])], pack_positions([4], [6], [7]), {0: None}),  # first + count overflows
        (payload, [(0, 2, 10, [(2, 4, 8, 0, 1)])], pack_positions([4], [6], [7]), {"0": None}),  # not a span index
        (payload, [(0, 2, 10, [(2, 4, 8, 0, 1)])], pack_positions([4], [6], [7])[:-1], {0: None}),  # a position cut short
        (payload, [(0, 2, 10, [(2, 4, 8, 0, 1)])], pack_positions([-1], [6], [7]), {0: None}),  # before the payload
        (payload, [(0, 2, 10, [(2, 4, 8, 0, 1)])], [4, 6, 7], {0: None}),  # positions are bytes, not a list
    ]
    for args in refused:
        with pytest.raises((ValueError, TypeError)):
            scan._wirescan.rewrite(*args)

    class Sly(int):
        def __index__(self):  # would run Python code mid-rewrite
            return 0

    with pytest.raises(TypeError):
        scan._wirescan.rewrite(payload, [(0, 2, 10, [(2, 4, 8, Sly(0), 1)])], pack_positions([4], [6], [7]), {0: None})
