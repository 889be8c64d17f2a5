"""LiteLLM SDK calls inside an agent's run, exported to agentmon.

Run: python docs/examples/litellm_sdk.py   (AGENTMON_URL, AGENTMON_API_KEY, OTEL_EXPORTER_OTLP_ENDPOINT)
"""

import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM's bundled price table, no download

from integrations.litellm import agent_metadata, configure_otel

# Before the first LLM call: LiteLLM's otel callback on, exporting to agentmon, one span per call.
configure_otel(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"), service_name="billing-service")

import litellm
from opentelemetry import trace

from integrations.client import AgentmonClient
from integrations.runs import agent_run, set_output

agent = AgentmonClient().register("invoice-bot", "custom")
question = "Which invoices are overdue?"
with agent_run(agent, input=question) as run:
    reply = litellm.completion(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": question}],
        metadata=agent_metadata(agent),  # the run as parent span, and the agent in the requester metadata
        mock_response="Invoices 17 and 23.",  # answers offline: remove it to call the model
    )
    set_output(run, reply.choices[0].message.content)

time.sleep(1)  # LiteLLM records the call from a background thread
trace.get_tracer_provider().force_flush()
print(f"agent {agent.id}: {reply.choices[0].message.content}")
