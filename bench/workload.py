"""Realistic OTLP load: agent runs (an invoke_agent span with LLM chat children, children
sent before their parent) mixed with plain service spans, about 12 attributes a span."""

from __future__ import annotations

import random

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

MODELS = ["gpt-4o-mini", "gpt-4o", "claude-3-5-sonnet", "llama-3.1-70b"]


def _kv(key: str, value) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def _span(rng: random.Random, trace_id: bytes, span_id: bytes, parent: bytes, name: str, attrs: dict, start: int) -> Span:
    duration = rng.randint(5_000_000, 3_000_000_000)
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        name=name,
        kind=Span.SPAN_KIND_INTERNAL if parent else Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start,
        end_time_unix_nano=start + duration,
        attributes=[_kv(k, v) for k, v in attrs.items()],
        status=Status(code=Status.STATUS_CODE_ERROR if rng.random() < 0.03 else Status.STATUS_CODE_OK),
    )


def make_requests(count: int, spans_per_request: int = 512, agents: int = 50, agent_share: float = 0.5, seed: int = 1,
                  start_ns: int = 1_760_000_000_000_000_000) -> list[bytes]:
    """``count`` serialized requests of ``spans_per_request`` spans each."""
    rng = random.Random(seed)
    requests = []
    clock = start_ns
    for _ in range(count):
        rs = ResourceSpans()
        rs.resource.attributes.extend([_kv("service.name", "agent-service"), _kv("telemetry.sdk.language", "python"),
                                       _kv("deployment.environment", "prod")])
        ss = rs.scope_spans.add()
        ss.scope.name = "bench"
        while len(ss.spans) < spans_per_request:
            clock += rng.randint(1_000_000, 50_000_000)
            trace_id = rng.randbytes(16)
            root = rng.randbytes(8)
            if rng.random() < agent_share:
                agent = f"agent-{rng.randrange(agents)}"
                for _ in range(rng.randint(2, 4)):  # LLM calls first: children end first
                    model = rng.choice(MODELS)
                    tokens_in, tokens_out = rng.randint(50, 4000), rng.randint(10, 1000)
                    ss.spans.append(_span(rng, trace_id, rng.randbytes(8), root, f"chat {model}", {
                        "gen_ai.operation.name": "chat", "gen_ai.request.model": model, "gen_ai.response.model": model,
                        "gen_ai.system": "openai", "gen_ai.usage.input_tokens": tokens_in,
                        "gen_ai.usage.output_tokens": tokens_out, "gen_ai.usage.total_tokens": tokens_in + tokens_out,
                        "gen_ai.cost.total_cost": round((tokens_in + tokens_out) * 2e-6, 8),
                        "llm.is_streaming": "False", "litellm.call_id": rng.randbytes(8).hex(),
                        "server.address": "api.openai.com", "http.status_code": 200,
                    }, clock))
                ss.spans.append(_span(rng, trace_id, root, b"", f"invoke_agent {agent}", {
                    "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent, "gen_ai.system": "openai",
                    "gen_ai.conversation.id": rng.randbytes(6).hex(), "session.id": rng.randbytes(6).hex(),
                    "user.id": f"user-{rng.randrange(1000)}", "input.value": "What were sales last quarter?",
                    "output.value": "Sales grew 12%.", "app.version": "1.4.2", "app.region": "eu-west-1",
                    "thread.id": rng.randrange(64), "retry": False,
                }, clock))
            else:
                for i in range(rng.randint(1, 3)):
                    ss.spans.append(_span(rng, trace_id, rng.randbytes(8), root, "SELECT orders", {
                        "db.system": "postgresql", "db.name": "shop", "db.statement": "SELECT * FROM orders WHERE id=$1",
                        "db.user": "app", "net.peer.name": "db", "net.peer.port": 5432, "thread.id": i,
                        "code.function": "load", "code.namespace": "shop.orders", "code.lineno": 42,
                        "db.rows": rng.randint(0, 100), "cached": False,
                    }, clock))
                ss.spans.append(_span(rng, trace_id, root, b"", "GET /orders/{id}", {
                    "http.method": "GET", "http.route": "/orders/{id}", "http.status_code": 200, "http.scheme": "https",
                    "net.host.name": "shop", "net.host.port": 443, "user_agent.original": "curl/8", "http.flavor": "1.1",
                    "http.target": "/orders/17", "client.address": "10.0.0.1", "thread.id": 1, "retry": False,
                }, clock))
        del ss.spans[spans_per_request:]
        requests.append(ExportTraceServiceRequest(resource_spans=[rs]).SerializeToString())
    return requests
