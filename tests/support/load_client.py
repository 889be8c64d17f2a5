"""OTLP/gRPC load with acknowledgement tracking, for failure tests.

``LoadClient`` runs sender threads that Export requests of realistic spans (agent runs:
an ``invoke_agent`` span with LLM ``chat`` children, plus plain HTTP/DB service spans)
with ids that are unique across the whole test. Each sender behaves like an OTLP SDK
exporter that never drops: a refused request (RESOURCE_EXHAUSTED with RetryInfo, or
UNAVAILABLE and the other retryable codes) is retried, same bytes, after the server's
retry delay or a short backoff, and only an OK answer counts as acknowledged.

The test then checks, with ``received_span_ids(sink)``, that every span of every
acknowledged request reached the collector: ``client.missing(received)``.

Some agent runs are split over two requests: the LLM children in one, their agent span
in the sender's next request, so the enricher holds the children for attribution (the
path where a journal record waits for spans still held). A run whose agent span is
never sent (the load stopped first) is released unstamped after the hold time.
"""

from __future__ import annotations

import itertools
import random
import struct
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from tests.support.otlp_sink import OtlpTestSink

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
RETRYABLE = frozenset({
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.DATA_LOSS,
})
MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet")


def _kv(key: str, value) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


@dataclass(frozen=True, slots=True)
class Ack:
    request_no: int
    sender: int
    at: float  # time.monotonic() when the OK arrived
    span_ids: tuple[bytes, ...]
    size: int  # bytes of the serialized request
    attempts: int  # 1 when accepted at the first try


@dataclass
class Refusal:
    at: float
    code: str
    retry_delay: float | None  # the server's RetryInfo, when it sent one
    message: str = ""


@dataclass
class LoadStats:
    attempts: int = 0
    refusals: list[Refusal] = field(default_factory=list)
    abandoned: int = 0  # requests never acknowledged (the load stopped while they were retried)
    errors: Counter = field(default_factory=Counter)  # non-retryable codes: a test failure


class SpanFactory:
    """Spans with ids unique across every factory of the process (a shared counter)."""

    _counter = itertools.count(1)
    _lock = threading.Lock()
    _nonce = random.SystemRandom().getrandbits(24)

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._clock = time.time_ns()

    def span_id(self) -> bytes:
        with self._lock:
            n = next(self._counter)
        return struct.pack(">BHxI", self._nonce >> 16, self._nonce & 0xFFFF, n)

    def trace_id(self) -> bytes:
        return self._rng.randbytes(16)

    def span(self, trace_id: bytes, span_id: bytes, parent: bytes, name: str, attrs: dict) -> Span:
        self._clock += self._rng.randint(1_000_000, 20_000_000)
        return Span(
            trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name,
            kind=Span.SPAN_KIND_INTERNAL if parent else Span.SPAN_KIND_SERVER,
            start_time_unix_nano=self._clock,
            end_time_unix_nano=self._clock + self._rng.randint(5_000_000, 900_000_000),
            attributes=[_kv(k, v) for k, v in attrs.items()],
            status=Status(code=Status.STATUS_CODE_OK),
        )

    def agent_run(self, agent: str) -> tuple[list[Span], Span]:
        """(LLM children, agent span) of one run, all in one new trace."""
        trace_id, root = self.trace_id(), self.span_id()
        children = []
        for _ in range(self._rng.randint(2, 3)):
            model = self._rng.choice(MODELS)
            tokens_in, tokens_out = self._rng.randint(50, 4000), self._rng.randint(10, 900)
            children.append(self.span(trace_id, self.span_id(), root, f"chat {model}", {
                "gen_ai.operation.name": "chat", "gen_ai.request.model": model, "gen_ai.response.model": model,
                "gen_ai.system": "openai", "gen_ai.usage.input_tokens": tokens_in,
                "gen_ai.usage.output_tokens": tokens_out, "gen_ai.usage.total_tokens": tokens_in + tokens_out,
                "litellm.call_id": self._rng.randbytes(8).hex(), "server.address": "api.openai.com",
                "http.status_code": 200, "llm.is_streaming": "False",
            }))
        agent_span = self.span(trace_id, root, b"", f"invoke_agent {agent}", {
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent, "gen_ai.system": "openai",
            "gen_ai.conversation.id": self._rng.randbytes(6).hex(), "session.id": self._rng.randbytes(6).hex(),
            "user.id": f"user-{self._rng.randrange(1000)}", "input.value": "What were sales last quarter?",
            "output.value": "Sales grew 12%.", "app.version": "1.4.2", "app.region": "eu-west-1",
        })
        return children, agent_span

    def service_trace(self) -> list[Span]:
        trace_id, root = self.trace_id(), self.span_id()
        spans = [self.span(trace_id, self.span_id(), root, "SELECT orders", {
            "db.system": "postgresql", "db.name": "shop", "db.statement": "SELECT * FROM orders WHERE id=$1",
            "db.user": "app", "net.peer.name": "db", "net.peer.port": 5432, "code.function": "load",
            "code.namespace": "shop.orders", "code.lineno": 42, "db.rows": self._rng.randint(0, 100),
        }) for _ in range(self._rng.randint(1, 2))]
        spans.append(self.span(trace_id, root, b"", "GET /orders/{id}", {
            "http.method": "GET", "http.route": "/orders/{id}", "http.status_code": 200, "http.scheme": "https",
            "net.host.name": "shop", "net.host.port": 443, "user_agent.original": "curl/8",
            "http.target": "/orders/17", "client.address": "10.0.0.1",
        }))
        return spans

    @staticmethod
    def request(spans: Iterable[Span]) -> bytes:
        rs = ResourceSpans()
        rs.resource.attributes.extend([
            _kv("service.name", "agent-service"), _kv("telemetry.sdk.language", "python"),
            _kv("deployment.environment", "test"),
        ])
        ss = rs.scope_spans.add()
        ss.scope.name = "reliability-test"
        ss.spans.extend(spans)
        return ExportTraceServiceRequest(resource_spans=[rs]).SerializeToString()


def retry_delay_of(error: grpc.RpcError) -> float | None:
    """The RetryInfo delay (seconds) a server attached to a failed call, if any."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            for detail in status_pb2.Status.FromString(value).details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
                    return info.retry_delay.ToNanoseconds() / 1e9
    return None


class LoadClient:
    """``senders`` threads, each sending one request of about ``spans_per_request`` spans
    every ``interval`` seconds (or as soon as the previous one is acknowledged, if later).

    ``agents`` (a list of names, replaceable at any time) are the agents whose runs make
    ``agent_share`` of the traces; ``split_share`` of the runs have their agent span sent
    in the next request, and ``orphan_share`` never send it (their LLM calls are held for the
    whole hold time, then delivered unstamped). ``max_retry_delay`` caps how long a sender honours RetryInfo.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        senders: int = 2,
        spans_per_request: int = 100,
        interval: float = 0.1,
        agents: list[str] | None = None,
        agent_share: float = 0.5,
        split_share: float = 0.2,
        orphan_share: float = 0.0,
        call_timeout: float = 10.0,
        max_retry_delay: float = 10.0,
        seed: int = 7,
    ) -> None:
        self.endpoint = endpoint
        self.agents = list(agents or [f"agent-{i}" for i in range(5)])
        self._senders = senders
        self._spans_per_request = spans_per_request
        self._interval = interval
        self._agent_share = agent_share
        self._split_share = split_share
        self._orphan_share = orphan_share
        self._call_timeout = call_timeout
        self._max_retry_delay = max_retry_delay
        self._seed = seed
        self._lock = threading.Lock()
        self._request_no = itertools.count()
        self.acked: list[Ack] = []
        self.stats = LoadStats()
        self._stop = threading.Event()  # no new requests
        self._give_up = threading.Event()  # abandon the request being retried
        self._threads: list[threading.Thread] = []
        self._channel = grpc.insecure_channel(endpoint, options=[
            # Notice a restarted server quickly (gRPC's default reconnect backoff grows to 120 s).
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ])
        self._export = self._channel.unary_unary(EXPORT_METHOD, request_serializer=None, response_deserializer=None)

    # ---- lifecycle ---------------------------------------------------------------
    def start(self) -> LoadClient:
        for i in range(self._senders):
            thread = threading.Thread(target=self._run, args=(i,), name=f"load-sender-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self, drain_timeout: float = 30.0) -> None:
        """Stop sending new requests; let each sender retry its current one until it is
        acknowledged or ``drain_timeout`` passes (then it is abandoned, not acknowledged)."""
        self._stop.set()
        deadline = time.monotonic() + drain_timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._give_up.set()
        for thread in self._threads:
            thread.join(15)
        self._channel.close()

    def __enter__(self) -> LoadClient:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        if not self._give_up.is_set():
            self._stop.set()
            self._give_up.set()
            for thread in self._threads:
                thread.join(15)
            self._channel.close()

    # ---- figures -------------------------------------------------------------------
    def acked_span_ids(self) -> set[bytes]:
        with self._lock:
            return {span_id for ack in self.acked for span_id in ack.span_ids}

    def acked_between(self, start: float, end: float) -> list[Ack]:
        with self._lock:
            return [ack for ack in self.acked if start <= ack.at <= end]

    def refusals_between(self, start: float, end: float) -> list[Refusal]:
        with self._lock:
            return [r for r in self.stats.refusals if start <= r.at <= end]

    def missing(self, received: Counter | set) -> set[bytes]:
        """Acknowledged span ids that the collector never received."""
        return {span_id for span_id in self.acked_span_ids() if span_id not in received}

    def summary(self) -> dict:
        with self._lock:
            codes = Counter(r.code for r in self.stats.refusals)
            return {
                "acked_requests": len(self.acked),
                "acked_spans": sum(len(a.span_ids) for a in self.acked),
                "acked_after_retry": sum(1 for a in self.acked if a.attempts > 1),
                "attempts": self.stats.attempts,
                "refusals": dict(codes),
                "abandoned": self.stats.abandoned,
                "errors": dict(self.stats.errors),
            }

    # ---- a sender ----------------------------------------------------------------------
    def _build(self, factory: SpanFactory, rng: random.Random, carried: list[Span]) -> tuple[bytes, tuple[bytes, ...]]:
        spans: list[Span] = list(carried)  # agent spans of runs split off the previous request
        carried.clear()
        while len(spans) < self._spans_per_request:
            if rng.random() < self._agent_share:
                children, agent_span = factory.agent_run(rng.choice(self.agents))
                spans.extend(children)
                share = rng.random()
                if share < self._split_share:
                    carried.append(agent_span)
                elif share >= 1.0 - self._orphan_share:
                    pass  # never sent
                else:
                    spans.append(agent_span)
            else:
                spans.extend(factory.service_trace())
        return SpanFactory.request(spans), tuple(span.span_id for span in spans)

    def _run(self, sender: int) -> None:
        rng = random.Random(self._seed * 1000 + sender)
        factory = SpanFactory(self._seed * 1000 + sender)
        carried: list[Span] = []
        while not self._stop.is_set():
            began = time.monotonic()
            payload, span_ids = self._build(factory, rng, carried)
            request_no = next(self._request_no)
            if not self._send_until_acked(sender, request_no, payload, span_ids):
                with self._lock:
                    self.stats.abandoned += 1
                return
            self._stop.wait(max(0.0, self._interval - (time.monotonic() - began)))

    def _send_until_acked(self, sender: int, request_no: int, payload: bytes, span_ids: tuple[bytes, ...]) -> bool:
        attempts = 0
        backoff = 0.1
        while not self._give_up.is_set():
            attempts += 1
            with self._lock:
                self.stats.attempts += 1
            try:
                self._export(payload, timeout=self._call_timeout)
            except grpc.RpcError as error:
                code = error.code()
                delay = retry_delay_of(error) if code == grpc.StatusCode.RESOURCE_EXHAUSTED else None
                with self._lock:
                    self.stats.refusals.append(Refusal(time.monotonic(), code.name, delay, error.details() or ""))
                if code == grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None:
                    wait = min(delay, self._max_retry_delay)
                elif code in RETRYABLE:
                    wait = backoff
                    backoff = min(backoff * 2, 1.0)
                else:  # permanent: the test asserts there are none
                    with self._lock:
                        self.stats.errors[code.name] += 1
                    return True
                self._give_up.wait(wait)
                continue
            with self._lock:
                self.acked.append(Ack(request_no, sender, time.monotonic(), span_ids, len(payload), attempts))
            return True
        return False


def received_span_ids(sink: OtlpTestSink) -> Counter:
    """How many times the collector received each span id."""
    return Counter(span.span_id for _, _, span in sink.spans())


def wait_for_delivery(client: LoadClient, sink: OtlpTestSink, timeout: float) -> tuple[set[bytes], float]:
    """Wait until every acknowledged span reached ``sink``; returns (still missing, seconds waited)."""
    began = time.monotonic()
    deadline = began + timeout
    while True:
        missing = client.missing(received_span_ids(sink))
        if not missing or time.monotonic() > deadline:
            return missing, time.monotonic() - began
        time.sleep(0.5)


def wait_for_spans(span_ids: set[bytes], sink: OtlpTestSink, timeout: float) -> tuple[set[bytes], float]:
    """Wait until ``sink`` received every one of ``span_ids``; returns (still missing, seconds waited)."""
    began = time.monotonic()
    while True:
        missing = span_ids - received_span_ids(sink).keys()
        if not missing or time.monotonic() - began > timeout:
            return missing, time.monotonic() - began
        time.sleep(0.25)
