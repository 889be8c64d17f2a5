"""Vanna's classic API (vanna.legacy in Vanna 2.x) monitored by agentmon, its LLM calls made through LiteLLM.

Run: python docs/examples/vanna_sql.py   (AGENTMON_URL, AGENTMON_API_KEY, OTEL_EXPORTER_OTLP_ENDPOINT)
"""

import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # LiteLLM's bundled price table, no download

from integrations.litellm import configure_otel

# baggage=False: the calls then name the agent by LiteLLM's requester metadata, which carries the connection id
# (see "Limits" under Vanna in docs/AGENT_INTEGRATION_GUIDE.md).
configure_otel(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317"), service_name="vanna-app",
               baggage=False)

from opentelemetry import trace
from vanna.legacy.base import VannaBase
from vanna.legacy.mock import MockEmbedding, MockVectorDB  # stand-ins for your vector store (ChromaDB_VectorStore...)

from integrations.vanna import LiteLLMChat, MonitoredVanna


class MyVanna(LiteLLMChat, MockEmbedding, MockVectorDB):  # LiteLLMChat first, so that its LLM methods are used
    def __init__(self, config=None):
        VannaBase.__init__(self, config=config)  # ChromaDB_VectorStore.__init__ would do this itself
        LiteLLMChat.__init__(self, config=config)


config = {"model": "gpt-4o-mini",  # any LiteLLM model name
          "litellm_kwargs": {"mock_response": "SELECT count(*) FROM orders"}}  # answers offline: remove it
vn = MonitoredVanna(MyVanna(config=config), connection_id="warehouse-prod")
sql = vn.generate_sql("How many orders were placed last week?")

time.sleep(1)  # LiteLLM records the call from a background thread
trace.get_tracer_provider().force_flush()
print(f"agent {vn.agent.id}: {sql}")
