"""What only the OTLP/HTTP forwarder does (the shared behaviour is in test_forwarder.py):
its endpoint URLs, its gzip, the HTTP statuses the OTLP specification retries, Retry-After,
and keep-alive connections that the collector closed."""

from __future__ import annotations

import email.utils
import gzip
import random
import socket
import struct
import threading
import time

import grpc
import pytest

from enricher.export import otlp_http
from enricher.export.base import ExportBatch
from enricher.export.otlp_http import OtlpHttpForwarder, _retry_after, gzip_compress, traces_url
from enricher.metrics import EnricherMetrics
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


def test_a_sender_keeps_its_connection_alive(sink, forwarder):
    fwd = forwarder(sink.endpoint, max_in_flight=1)
    acks = Acks()
    for number in range(1, 6):
        assert fwd.submit(acks.batch(number), timeout=1)
        assert acks.wait([number])
    assert sink.connections_opened == 1
    assert set(span_ids(sink)) == expected_ids([1, 2, 3, 4, 5])


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
    assert _retry_after("\xb2") is None  # a Unicode digit (headers are read as latin-1) is no number


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


def test_an_answer_before_the_body_is_read_is_the_verdict():
    # A collector past its body limit answers 413 at once and resets the connection (as Go's
    # net/http does): the send breaks, but the 413 is read and the batch refused, not resent forever.
    listener = socket.create_server(("127.0.0.1", 0))
    attempts: list[int] = []

    def collector() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as reader:
                while reader.readline() not in (b"\r\n", b""):
                    pass  # the headers; the body is never read
                conn.sendall(b"HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 8\r\n"
                             b"Connection: close\r\n\r\ntoo big!")
                attempts.append(1)
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset

    threading.Thread(target=collector, daemon=True).start()
    metrics = EnricherMetrics()
    fwd = OtlpHttpForwarder(f"127.0.0.1:{listener.getsockname()[1]}", metrics=metrics, compression="none",
                            max_in_flight=1, initial_backoff=0.05, max_backoff=0.1)
    try:
        acks = Acks()
        # Big enough that the send is still going when the reset arrives.
        assert fwd.submit(ExportBatch(random.randbytes(8 << 20), 1, acks.batch(1).on_done), timeout=1)
        assert acks.wait([1])
        assert acks.calls[1] == [False]
        assert len(attempts) == 1
        assert sample(metrics, "agentmon_spans_failed_total") == 1
    finally:
        fwd.shutdown(1)
        listener.close()


def test_an_interim_answer_is_skipped_for_the_real_one():
    # HTTP allows a server to send 1xx answers (100 Continue, 103 Early Hints) before its answer.
    listener = socket.create_server(("127.0.0.1", 0))

    def collector() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as reader:
            length = 0
            while (line := reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            reader.read(length)
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            time.sleep(0.2)  # the real answer in a later read
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            time.sleep(0.5)

    threading.Thread(target=collector, daemon=True).start()
    metrics = EnricherMetrics()
    fwd = OtlpHttpForwarder(f"127.0.0.1:{listener.getsockname()[1]}", metrics=metrics, max_in_flight=1,
                            initial_backoff=5, max_backoff=5)
    try:
        acks = Acks()
        assert fwd.submit(acks.batch(1), timeout=1)
        assert acks.wait([1])
        assert acks.calls[1] == [True]
        assert sample(metrics, "agentmon_spans_failed_total") == 0
    finally:
        fwd.shutdown(1)
        listener.close()


def test_shutdown_during_a_send_opens_no_new_connection(sink, forwarder, monkeypatch):
    # A sender still compressing when shutdown closes its connection must not reopen it
    # (http.client would, by itself) and post on a socket that shutdown cannot cut.
    compressing, go_on = threading.Event(), threading.Event()
    real_compress = otlp_http.gzip_compress

    def compress(payload: bytes) -> bytes:
        if payload == second:
            compressing.set()
            go_on.wait(WAIT)
        return real_compress(payload)

    monkeypatch.setattr(otlp_http, "gzip_compress", compress)
    second = make_request(2)
    fwd = forwarder(sink.endpoint, max_in_flight=1)
    acks = Acks()
    assert fwd.submit(acks.batch(1), timeout=1)
    assert acks.wait([1])  # the connection is open and kept alive
    assert fwd.submit(ExportBatch(second, 3, acks.batch(2).on_done), timeout=1)
    assert compressing.wait(WAIT)
    fwd.shutdown(0.1)
    requests_at_shutdown = sink.request_count()
    go_on.set()
    time.sleep(0.5)
    assert sink.request_count() == requests_at_shutdown == 1
    assert 2 not in acks.calls  # left to the journal
