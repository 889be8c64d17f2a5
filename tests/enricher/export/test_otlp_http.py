"""What only the OTLP/HTTP forwarder does (the shared behaviour is in test_forwarder.py):
its endpoint URLs, its gzip, the HTTP statuses the OTLP specification retries, Retry-After,
and keep-alive connections that the collector closed."""

from __future__ import annotations

import email.utils
import gzip
import time

import grpc
import pytest

from enricher.export.otlp_http import _retry_after, gzip_compress, traces_url
from tests.support.export_acks import WAIT, Acks, expected_ids, make_request, sample, span_ids

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def protocol() -> str:
    return "http"


@pytest.mark.parametrize(
    ("endpoint", "insecure", "expected"),
    [
        ("collector:4318", True, ("http", "collector", 4318, "/v1/traces")),
        ("collector:4318", False, ("https", "collector", 4318, "/v1/traces")),
        ("http://collector:4318", True, ("http", "collector", 4318, "/v1/traces")),
        ("http://collector:4318/", True, ("http", "collector", 4318, "/v1/traces")),
        ("https://otlp.example.com", True, ("https", "otlp.example.com", 443, "/v1/traces")),
        ("http://10.0.0.1", True, ("http", "10.0.0.1", 4318, "/v1/traces")),
        ("http://gw:8080/otlp/v1/traces?tenant=a", True, ("http", "gw", 8080, "/otlp/v1/traces?tenant=a")),
        ("http://[::1]:4318", True, ("http", "::1", 4318, "/v1/traces")),
    ],
)
def test_endpoint_urls(endpoint, insecure, expected):
    assert traces_url(endpoint, insecure=insecure) == expected


@pytest.mark.parametrize("endpoint", ["ftp://collector:21", "http://", "http://:4318"])
def test_bad_endpoints_are_refused_at_start(endpoint):
    with pytest.raises(ValueError, match="OTLP/HTTP endpoint"):
        traces_url(endpoint)


def test_gzip_round_trips():
    payload = make_request(7, 50)
    compressed = gzip_compress(payload)
    assert gzip.decompress(compressed) == payload
    assert len(compressed) < len(payload) / 3


def test_requests_say_their_content_encoding(sink, forwarder):
    acks = Acks()
    assert forwarder(sink.endpoint).submit(acks.batch(1), timeout=1)
    assert acks.wait([1])
    assert forwarder(sink.endpoint, compression="none").submit(acks.batch(2), timeout=1)
    assert acks.wait([2])
    assert sink.content_encodings == ["gzip", ""]
    assert set(span_ids(sink)) == expected_ids([1, 2])


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED]
)
def test_429_502_503_504_are_retried(sink, forwarder, metrics, code):
    # Over HTTP, 429 is retryable even without Retry-After (unlike gRPC's RESOURCE_EXHAUSTED).
    fwd = forwarder(sink.endpoint)
    sink.fail_with(code, times=2)
    acks = Acks()
    assert fwd.submit(acks.batch(1), timeout=1)
    assert acks.wait([1])
    assert acks.calls[1] == [True]
    assert sample(metrics, "agentmon_export_retries_total") == 2
    assert set(span_ids(sink)) == expected_ids([1])


def test_a_keep_alive_connection_closed_by_the_collector_is_not_a_failure(sink, forwarder, metrics):
    fwd = forwarder(sink.endpoint, max_in_flight=1)
    acks = Acks()
    assert fwd.submit(acks.batch(1), timeout=1)
    assert acks.wait([1])
    # The collector restarts (or drops idle connections): the sender's connection is dead.
    sink.stop()
    sink.start()
    assert fwd.submit(acks.batch(2), timeout=1)
    assert acks.wait([2])
    assert dict(acks.calls) == {1: [True], 2: [True]}
    assert sample(metrics, "agentmon_export_retries_total") == 0
    assert set(span_ids(sink)) == expected_ids([1, 2])


def test_retry_after_forms():
    assert _retry_after("3") == 3.0
    assert _retry_after(" 0 ") == 0.0
    in_two_minutes = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert 115 <= _retry_after(in_two_minutes) <= 121
    assert _retry_after(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0
    assert _retry_after(None) is None
    assert _retry_after("soon") is None
    assert _retry_after("-5") is None


def test_a_collector_that_never_answers_times_out_and_is_retried(sink, forwarder, metrics):
    fwd = forwarder(sink.endpoint, timeout=0.3)
    sink.pause()
    acks = Acks()
    assert fwd.submit(acks.batch(1), timeout=1)
    assert sink.wait_for_pending(1, WAIT)
    time.sleep(0.5)
    assert sample(metrics, "agentmon_export_retries_total") >= 1
    sink.resume()
    assert acks.wait([1])
    assert acks.calls[1] == [True]
