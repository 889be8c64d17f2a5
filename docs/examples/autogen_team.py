"""An AutoGen (autogen-agentchat 0.7) team whose spans go to agentmon.

It runs in a virtual environment of its own: autogen-core pins protobuf 5.29, agentmon needs protobuf 7.
Nothing of agentmon is imported here: AutoGen's own spans name the agents.

Run: autogen-env/bin/python docs/examples/autogen_team.py
     (OTEL_EXPORTER_OTLP_ENDPOINT; OPENAI_API_KEY and OPENAI_BASE_URL for the model)
"""

import asyncio

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai import OpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

# Before AutoGen runs: the global tracer provider, which autogen-core's agents and runtime use.
provider = TracerProvider(resource=Resource.create({"service.name": "autogen-app"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))  # to OTEL_EXPORTER_OTLP_ENDPOINT
trace.set_tracer_provider(provider)
# AutoGen makes no LLM spans itself: OpenLLMetry's openai.chat spans. Without trace-context propagation, a
# LiteLLM proxy in front of the model does not add its own LLM span of the same call to the agent's trace.
OpenAIInstrumentor(enable_trace_context_propagation=False).instrument()

from autogen_agentchat.agents import AssistantAgent
from autogen_agentchat.conditions import MaxMessageTermination
from autogen_agentchat.teams import RoundRobinGroupChat
from autogen_ext.models.openai import OpenAIChatCompletionClient


async def main() -> None:
    model = OpenAIChatCompletionClient(model="gpt-4o-mini")  # OPENAI_API_KEY, OPENAI_BASE_URL
    writer = AssistantAgent("writer", model_client=model, description="Drafts the text.")
    editor = AssistantAgent("editor", model_client=model, description="Reviews the draft.")
    team = RoundRobinGroupChat([writer, editor], termination_condition=MaxMessageTermination(3))
    result = await team.run(task="Write one sentence about tracing.")
    print(f"{len(result.messages)} messages, last from {result.messages[-1].source}")
    await model.close()


asyncio.run(main())
provider.shutdown()  # flush
