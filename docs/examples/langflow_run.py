"""Run a Langflow flow as an agentmon agent.

Run: python docs/examples/langflow_run.py FLOW_ID "question"
     (LANGFLOW_URL, LANGFLOW_API_KEY, AGENTMON_URL, AGENTMON_API_KEY, OTEL_EXPORTER_OTLP_ENDPOINT)
"""

import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from integrations.langflow import LangflowAgent

provider = TracerProvider(resource=Resource.create({"service.name": "support-portal"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # to OTEL_EXPORTER_OTLP_ENDPOINT
trace.set_tracer_provider(provider)

flow_id, question = sys.argv[1], sys.argv[2]
with LangflowAgent(flow_id) as flow:  # registers the flow once: type langflow, external id the flow id
    result = flow.run(question, session_id="user-42")
    print(f"agent {flow.register().id} ({flow.register().name}): {result.text}")

provider.shutdown()  # flush
