"""The span shapes by which agentmon recognises an agent in an app that is already instrumented: OpenTelemetry
GenAI, OpenInference (Arize Phoenix) and OpenLLMetry (Traceloop). Here they are made by hand with the plain
OpenTelemetry SDK; an instrumentation library emits the same attributes. Needs no agentmon package.

Run: python docs/examples/otel_conventions.py   (OTEL_EXPORTER_OTLP_ENDPOINT)
"""

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind

provider = TracerProvider(resource=Resource.create({"service.name": "assistants"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # to OTEL_EXPORTER_OTLP_ENDPOINT
tracer = provider.get_tracer("example")

# OpenTelemetry GenAI: an invoke_agent span names the agent; the chat span under it is its LLM call.
with tracer.start_as_current_span("invoke_agent weather-agent", attributes={
        "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "weather-agent"}):
    with tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT, attributes={
            "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 120, "gen_ai.usage.output_tokens": 30}):
        pass

# OpenInference: a span of kind AGENT names the agent (agent.name, else the span name).
with tracer.start_as_current_span("research-agent", attributes={
        "openinference.span.kind": "AGENT", "agent.name": "research-agent"}):
    with tracer.start_as_current_span("ChatOpenAI", attributes={
            "openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini",
            "llm.token_count.prompt": 200, "llm.token_count.completion": 50}):
        pass

# OpenLLMetry: a workflow (or agent) span names the agent; openai.chat is its LLM call.
with tracer.start_as_current_span("trip-planner.workflow", attributes={
        "traceloop.span.kind": "workflow", "traceloop.workflow.name": "trip-planner",
        "traceloop.entity.name": "trip-planner"}):
    with tracer.start_as_current_span("openai.chat", kind=SpanKind.CLIENT, attributes={
            "llm.request.type": "chat", "gen_ai.request.model": "gpt-4o-mini",
            "gen_ai.usage.input_tokens": 80, "gen_ai.usage.output_tokens": 20}):
        pass

provider.shutdown()  # flush
print("sent: weather-agent, research-agent, trip-planner")
