"""LiteLLM calls attributed to agentmon agents.

What LiteLLM's ``otel`` callback does (litellm 1.106.2, checked by tests/integrations/test_litellm.py):

- Called with ``metadata["litellm_parent_otel_span"]`` (a span, or a ``NonRecordingSpan`` built from a
  traceparent), it records ``litellm_request`` as a CHILD of that span, and ``raw_gen_ai_request`` under it.
- Called inside an active span WITHOUT that key, it makes no span of its own: it writes the call's
  attributes (``gen_ai.operation.name=chat``, tokens, cost) onto the CALLER's span, from a background
  thread, possibly after that span has ended. An agent run span then looks like an LLM call: it is no
  longer counted as a run, and with several calls its tokens are the last call's (or none). Pass the
  parent explicitly (``agent_metadata`` does) or set ``USE_OTEL_LITELLM_REQUEST_SPAN=true``
  (``configure_otel`` does): then every call gets its own ``litellm_request`` child span.
- Custom metadata keys are dropped. ``metadata={"requester_metadata": {...}}`` survives as a Python repr in
  ``metadata.requester_metadata``, and the keys listed in ``LITELLM_OTEL_BAGGAGE_METADATA_KEYS``
  (``requester_metadata.agent_id,...``) as clean ``litellm.metadata.agent_id`` attributes. agentmon's built-in
  rules read both, so a call carries its agent even with no trace context.
- The proxy honours an incoming W3C ``traceparent`` header (its spans join the caller's trace) and keeps a
  client's body ``metadata`` as requester metadata.
- ``gen_ai.operation.name`` is LiteLLM's call type, except ``completion`` -> ``chat``: ``acompletion`` (every
  SDK ``acompletion`` and every proxy call), ``embedding``, ``text_completion``...
- The SDK records each call from a background thread (sync calls) or a task on the running event loop
  (async calls): a loop closed right after the call (``asyncio.run``) loses its spans.

SDK::

    from integrations.litellm import agent_metadata, configure_otel
    configure_otel("http://127.0.0.1:4317")            # before the first LLM call
    with agent_run(agent, input=question):
        litellm.completion(model=..., messages=..., metadata=agent_metadata(agent))

Proxy clients (OpenAI SDK against a LiteLLM proxy with ``callbacks: ["otel"]``)::

    client.chat.completions.create(model=..., messages=..., **proxy_request_options(agent))
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from integrations.client import RegisteredAgent

PARENT_SPAN_KEY = "litellm_parent_otel_span"
REQUESTER_METADATA_KEY = "requester_metadata"
# The requester metadata LiteLLM copies to litellm.metadata.* when LITELLM_OTEL_BAGGAGE_METADATA_KEYS lists them.
BAGGAGE_METADATA_KEYS = (
    "requester_metadata.agent_id",
    "requester_metadata.agent_name",
    "requester_metadata.agent_type",
    "requester_metadata.parent_trace_id",
)
_PROPAGATOR = TraceContextTextMapPropagator()

Agent = RegisteredAgent | str | None
Parent = Span | SpanContext | str | None | bool  # bool: False only


def agent_fields(agent: RegisteredAgent | str) -> dict[str, str]:
    """The agent as agentmon's rules read it from LiteLLM's requester metadata.
    A string is an agent NAME (agentmon registers it as a custom agent on first sight)."""
    if isinstance(agent, str):
        return {"agent_name": agent}
    fields = {"agent_id": agent.id, "agent_name": agent.name, "agent_type": agent.type}
    if agent.external_id:
        fields["agent_external_id"] = agent.external_id
    return fields


def parent_span(parent: Parent = None) -> Span | None:
    """``parent`` as a span LiteLLM can use as a parent: a span as is, a SpanContext or a W3C
    ``traceparent`` string as a NonRecordingSpan; None means the current span, if any; False, none."""
    if parent is False:
        return None
    if parent is None:
        span = trace.get_current_span()
    elif isinstance(parent, SpanContext):
        span = NonRecordingSpan(parent)
    elif isinstance(parent, str):
        span = trace.get_current_span(_PROPAGATOR.extract({"traceparent": parent}))
    else:
        span = parent
    return span if span.get_span_context().is_valid else None


def traceparent(parent: Parent = None) -> str | None:
    """The W3C ``traceparent`` header value of ``parent`` (default: the current span)."""
    span = parent_span(parent)
    if span is None:
        return None
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get("traceparent")


def agent_metadata(agent: Agent = None, parent: Parent = None, *, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """``metadata=`` for ``litellm.completion``/``acompletion``/``embedding``: the agent in the requester
    metadata, and the parent span (default: the current span) so the call is a child span of the run."""
    result = dict(metadata or {})
    if agent is not None:
        result[REQUESTER_METADATA_KEY] = {**(result.get(REQUESTER_METADATA_KEY) or {}), **agent_fields(agent)}
    span = parent_span(parent)
    if span is not None:
        result[PARENT_SPAN_KEY] = span
    return result


def proxy_request_options(agent: Agent = None, parent: Parent = None) -> dict[str, Any]:
    """Keyword arguments for an OpenAI SDK call to a LiteLLM proxy: the agent as body ``metadata``
    (the proxy keeps it as requester metadata) and the ``traceparent`` header (the proxy's spans join
    the caller's trace)."""
    options: dict[str, Any] = {}
    if agent is not None:
        options["extra_body"] = {"metadata": agent_fields(agent)}
    header = traceparent(parent)
    if header is not None:
        options["extra_headers"] = {"traceparent": header}
    return options


def otel_environment(endpoint: str = "http://127.0.0.1:4317", *, protocol: str = "grpc",
                     service_name: str | None = None, request_spans: bool = True,
                     baggage: bool = True) -> dict[str, str]:
    """The environment LiteLLM's otel callback (SDK or proxy) reads, to export to agentmon at ``endpoint``."""
    if protocol not in ("grpc", "http/protobuf"):
        raise ValueError("protocol must be 'grpc' or 'http/protobuf'")
    if "://" not in endpoint:
        endpoint = f"http://{endpoint}"  # LiteLLM's gRPC exporter needs the scheme
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}
    if service_name:
        env["OTEL_SERVICE_NAME"] = service_name
    if request_spans:
        env["USE_OTEL_LITELLM_REQUEST_SPAN"] = "true"
    if baggage:
        keys = [k for k in os.environ.get("LITELLM_OTEL_BAGGAGE_METADATA_KEYS", "").split(",") if k.strip()]
        keys += [k for k in BAGGAGE_METADATA_KEYS if k not in keys]
        env["LITELLM_OTEL_BAGGAGE_METADATA_KEYS"] = ",".join(keys)
    return env


def configure_otel(endpoint: str = "http://127.0.0.1:4317", *, protocol: str = "grpc",
                   service_name: str | None = None, request_spans: bool = True, baggage: bool = True,
                   tracer_provider: Any = None) -> Any:
    """Turn LiteLLM's otel callback on, exporting to agentmon: sets ``otel_environment(...)`` in
    ``os.environ`` and registers the callback at once (not at the first call), so that the process's
    tracer provider exists before the first agent span. Returns the callback.

    When the process already has an OpenTelemetry SDK tracer provider (set globally, or passed as
    ``tracer_provider``), LiteLLM exports through it and the endpoint is not used. Otherwise LiteLLM makes
    one for ``endpoint`` and sets it as the global provider, so ``agent_run`` spans go there too."""
    import litellm
    from litellm.integrations.opentelemetry import OpenTelemetry

    os.environ.update(otel_environment(endpoint, protocol=protocol, service_name=service_name,
                                       request_spans=request_spans, baggage=baggage))
    for callback in [*litellm.callbacks, *litellm.success_callback, *litellm._async_success_callback]:
        if type(callback) is OpenTelemetry:
            return callback  # already on (it read its environment when it was made)
    callback = OpenTelemetry(tracer_provider=tracer_provider)
    litellm.callbacks = [c for c in litellm.callbacks if c != "otel"] + [callback]
    return callback
