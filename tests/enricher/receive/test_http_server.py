"""OTLP/HTTP receiver: protobuf and JSON, gzip, clear errors, push-back."""

from __future__ import annotations

import gzip
import json

import httpx
import pytest
from google.rpc import status_pb2

from tests.enricher.conftest import stamped
from tests.support.payloads import export_request as request

TRACE = "5b8efff798038103d269b633813fc60c"


def otlp_json(span_name: str = "invoke_agent j", **attributes: str) -> dict:
    return {
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-app"}}]},
            "scopeSpans": [{
                "scope": {"name": "manual"},
                "spans": [{
                    "traceId": TRACE,
                    "spanId": "eee19b7ec3c1b174",
                    "name": span_name,
                    "kind": 1,
                    "startTimeUnixNano": "1544712660000000000",
                    "endTimeUnixNano": "1544712661000000000",
                    "attributes": [{"key": k.replace("__", "."), "value": {"stringValue": v}} for k, v in attributes.items()],
                }],
            }],
        }]
    }


@pytest.fixture
def url(start_enricher):
    enricher = start_enricher(max_request_bytes=64 * 1024)
    return f"http://127.0.0.1:{enricher.http_port}/v1/traces"


def test_json_with_hex_ids_is_accepted_and_stamped(url, collector) -> None:
    body = otlp_json(gen_ai__operation__name="invoke_agent", gen_ai__agent__name="json-agent")
    response = httpx.post(url, json=body)
    assert response.status_code == 200 and response.json() == {}
    assert collector.wait_for_spans(1, 10)
    _, _, span = collector.spans()[0]
    assert span.trace_id.hex() == TRACE and span.span_id.hex() == "eee19b7ec3c1b174"
    assert stamped(collector)["invoke_agent j"]["metadata.agent_name"] == "json-agent"


def test_gzip_protobuf(url, collector) -> None:
    response = httpx.post(url, content=gzip.compress(request(spans=3)),
                          headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"})
    assert response.status_code == 200
    assert collector.wait_for_spans(3, 10)


def test_bad_payloads_are_400_with_a_status_body(url) -> None:
    bad = httpx.post(url, content=b"\xff\xff\xffnot protobuf", headers={"content-type": "application/x-protobuf"})
    assert bad.status_code == 400
    status = status_pb2.Status.FromString(bad.content)
    assert status.code == 3 and "ExportTraceServiceRequest" in status.message
    bad_json = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["code"] == 3
    bad_id = otlp_json()
    bad_id["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "zz"
    response = httpx.post(url, json=bad_id)
    assert response.status_code == 400 and "hex" in response.json()["message"]
    not_gzip = httpx.post(url, content=b"plain", headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"})
    assert not_gzip.status_code == 400
    assert httpx.post(url, content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    assert httpx.post(url, json=otlp_json()).status_code == 200  # still serving


def test_too_large_and_decompression_bombs_are_413(url) -> None:
    big = httpx.post(url, content=b"\x00" * (65 * 1024), headers={"content-type": "application/x-protobuf"})
    assert big.status_code == 413
    bomb = gzip.compress(b"\x00" * (10 * 1024 * 1024))  # 10 KiB on the wire, 10 MiB inside
    response = httpx.post(url, content=bomb, headers={"content-type": "application/x-protobuf", "content-encoding": "gzip"})
    assert response.status_code == 413


def test_full_pipeline_answers_429_with_retry_after(start_enricher, collector) -> None:
    collector.stop()
    enricher = start_enricher(journal_max_bytes=1024 * 1024, max_request_bytes=256 * 1024)
    url = f"http://127.0.0.1:{enricher.http_port}/v1/traces"
    body = request(spans=10, payload=10_000)
    for _ in range(200):
        response = httpx.post(url, content=body, headers={"content-type": "application/x-protobuf"})
        if response.status_code != 200:
            break
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert status_pb2.Status.FromString(response.content).code == 8  # RESOURCE_EXHAUSTED


def test_metrics_and_health(url) -> None:
    base = url.removesuffix("/v1/traces")
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    assert "agentmon_spans_received_total" in httpx.get(f"{base}/metrics").text
