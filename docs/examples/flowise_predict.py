"""Run a Flowise chatflow as an agentmon agent.

Run: python docs/examples/flowise_predict.py CHATFLOW_ID "question"
     (FLOWISE_URL, FLOWISE_API_KEY, AGENTMON_URL, AGENTMON_API_KEY, OTEL_EXPORTER_OTLP_ENDPOINT)
"""

import sys

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from integrations.flowise import FlowiseAgent

provider = TracerProvider(resource=Resource.create({"service.name": "shop-frontend"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # to OTEL_EXPORTER_OTLP_ENDPOINT
trace.set_tracer_provider(provider)

chatflow_id, question = sys.argv[1], sys.argv[2]
with FlowiseAgent(chatflow_id) as bot:  # registers the chatflow once: type flowise, external id the chatflow id
    result = bot.predict(question, session_id="user-42")
    print(f"agent {bot.register().id} ({bot.register().name}): {result.text}")

provider.shutdown()  # flush
