"""An agent calling a LiteLLM proxy with the OpenAI SDK: its run and the proxy's spans are one trace of one agent.

Run: python docs/examples/litellm_proxy_client.py   (LITELLM_PROXY_URL, LITELLM_API_KEY, AGENTMON_URL,
AGENTMON_API_KEY, OTEL_EXPORTER_OTLP_ENDPOINT)
"""

import os

import openai
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from integrations.client import AgentmonClient
from integrations.litellm import proxy_request_options
from integrations.runs import agent_run, set_output

provider = TracerProvider(resource=Resource.create({"service.name": "billing-service"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # to OTEL_EXPORTER_OTLP_ENDPOINT
trace.set_tracer_provider(provider)

proxy = openai.OpenAI(base_url=os.environ.get("LITELLM_PROXY_URL", "http://127.0.0.1:4000") + "/v1",
                      api_key=os.environ["LITELLM_API_KEY"])
agent = AgentmonClient().register("proxy-bot", "custom")
question = "Which invoices are overdue?"
with agent_run(agent, input=question) as run:
    reply = proxy.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": question}],
        **proxy_request_options(agent),  # body metadata names the agent; the traceparent header joins the run
    )
    set_output(run, reply.choices[0].message.content)

provider.shutdown()  # flush
print(f"agent {agent.id}: {reply.choices[0].message.content}")
