"""Run Langflow flows as agentmon agents.

    from integrations.langflow import LangflowAgent

    with LangflowAgent("3f1c...-flow-uuid") as flow:     # LANGFLOW_URL, LANGFLOW_API_KEY, AGENTMON_URL
        result = flow.run("What is our refund policy?", session_id="user-42")
        print(result.text)

The flow is registered once (type ``langflow``, external id the flow id, name the flow's
own name unless given), and every run is an ``invoke_agent {name}`` span of that agent
around ``POST /api/v1/run/{flow_id}``. The request carries the span's ``traceparent``, so
a Langflow whose tracing honours it (or any instrumented flow server) joins the run.

Keep the default name (the flow's name): Langflow's own tracers name the flow that way,
and agentmon renames a registered agent to the name its spans carry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from opentelemetry import trace

from integrations.client import AgentmonClient, RegisteredAgent
from integrations.remote import (
    FlowAuthError,
    FlowReplyError,
    FlowRunError,
    FlowTimeoutError,
    call_json,
    mark_failure,
    server_attributes,
)
from integrations.runs import agent_run, set_output

__all__ = [
    "FlowAuthError", "FlowReplyError", "FlowRunError", "FlowTimeoutError",
    "LangflowAgent", "LangflowResult", "langflow_output_text", "run_flow",
]

DEFAULT_URL = "http://127.0.0.1:7860"


@dataclass(frozen=True, slots=True)
class LangflowResult:
    text: str  # the first chat output's message
    session_id: str | None
    raw: dict[str, Any]  # Langflow's reply as received


def _text_of(result: Any) -> str | None:
    """The message text of one component result (``outputs[i].outputs[j]``), across Langflow versions."""
    if not isinstance(result, dict):
        return None
    results = result.get("results")
    if isinstance(results, dict):
        message = results.get("message")
        if isinstance(message, dict):
            if isinstance(message.get("text"), str):
                return message["text"]
            data = message.get("data")
            if isinstance(data, dict) and isinstance(data.get("text"), str):
                return data["text"]
        for value in results.values():  # a Text Output component: {"text": {"text": ...}}
            if isinstance(value, dict) and isinstance(value.get("text"), str):
                return value["text"]
    outputs = result.get("outputs")
    if isinstance(outputs, dict):
        message = outputs.get("message")
        if isinstance(message, dict) and isinstance(message.get("message"), str):
            return message["message"]
    artifacts = result.get("artifacts")
    if isinstance(artifacts, dict) and isinstance(artifacts.get("message"), str):
        return artifacts["message"]
    messages = result.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict) and isinstance(message.get("message"), str):
                return message["message"]
    return None


def langflow_output_text(reply: Any) -> str:
    """The text of the first output of a ``/api/v1/run`` reply; FlowReplyError when it has none."""
    if not isinstance(reply, dict) or not isinstance(reply.get("outputs"), list):
        raise FlowReplyError(f"Langflow's reply has no 'outputs' list: {str(reply)[:200]!r}")
    for run_output in reply["outputs"]:
        if not isinstance(run_output, dict) or not isinstance(run_output.get("outputs"), list):
            continue
        for result in run_output["outputs"]:
            text = _text_of(result)
            if text is not None:
                return text
    raise FlowReplyError(f"Langflow's reply has no output message (does the flow end in a Chat Output?): "
                         f"{str(reply)[:200]!r}")


class LangflowAgent:
    """One Langflow flow, run through Langflow's REST API and monitored by agentmon.

    ``base_url`` defaults to LANGFLOW_URL or http://127.0.0.1:7860, ``api_key`` to LANGFLOW_API_KEY;
    ``agentmon`` to an AgentmonClient from AGENTMON_URL / AGENTMON_API_KEY. ``timeout`` is in seconds;
    ``tracer`` defaults to the global tracer provider's."""

    def __init__(self, flow_id: str, *, base_url: str | None = None, api_key: str | None = None,
                 name: str | None = None, project_id: str | None = None, agentmon: AgentmonClient | None = None,
                 timeout: float = 120.0, tracer: trace.Tracer | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        if not flow_id or not flow_id.strip():
            raise ValueError("flow_id is required")
        self.flow_id = flow_id.strip()
        self.name = name
        self.project_id = project_id
        self.base_url = (base_url or os.environ.get("LANGFLOW_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("LANGFLOW_API_KEY")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport,
                                  headers={"x-api-key": key} if key else {})
        self._owns_agentmon = agentmon is None
        self._agentmon = agentmon or AgentmonClient()
        self._tracer = tracer
        self._agent: RegisteredAgent | None = None

    def flow(self) -> dict[str, Any]:
        """The flow as Langflow describes it (``GET /api/v1/flows/{flow_id}``)."""
        flow = call_json(self._http, "GET", f"/api/v1/flows/{quote(self.flow_id, safe='')}",
                         what=f"reading Langflow flow {self.flow_id}", propagate_trace=False)
        if not isinstance(flow, dict):
            raise FlowReplyError(f"Langflow's description of flow {self.flow_id} is not an object: {str(flow)[:200]!r}")
        return flow

    def register(self) -> RegisteredAgent:
        """Register the flow in agentmon (once). Without a given name, Langflow is asked for the flow's name.
        Raises AgentmonError when agentmon refuses or cannot be reached, FlowRunError when Langflow cannot say."""
        if self._agent is None:
            name = self.name
            if not name:
                flow_name = self.flow().get("name")
                if not isinstance(flow_name, str) or not flow_name.strip():
                    raise FlowReplyError(f"Langflow's description of flow {self.flow_id} has no name: pass name=")
                name = flow_name
            self._agent = self._agentmon.register(
                name, "langflow", external_id=self.flow_id, project_id=self.project_id,
                config={"langflow_url": self.base_url},
            )
        return self._agent

    def run(self, input_value: str, *, session_id: str | None = None, tweaks: dict[str, Any] | None = None,
            input_type: str = "chat", output_type: str = "chat") -> LangflowResult:
        """Run the flow once (``POST /api/v1/run/{flow_id}?stream=false``) inside an agent span.

        Raises FlowAuthError (401/403), FlowTimeoutError, FlowReplyError (a reply without an
        output), FlowRunError (any other failure); the span is then marked as an error."""
        agent = self.register()
        body: dict[str, Any] = {"input_value": input_value, "input_type": input_type, "output_type": output_type}
        if tweaks is not None:
            body["tweaks"] = tweaks
        if session_id is not None:
            body["session_id"] = session_id
        attributes: dict[str, Any] = {"langflow.flow_id": self.flow_id, **server_attributes(self._http.base_url)}
        if session_id is not None:
            attributes["session.id"] = attributes["gen_ai.conversation.id"] = session_id
        with agent_run(agent, input=input_value, tracer=self._tracer, attributes=attributes) as span:
            try:
                reply = call_json(self._http, "POST", f"/api/v1/run/{quote(self.flow_id, safe='')}",
                                  params={"stream": "false"}, json=body, what=f"Langflow run of flow {self.flow_id}")
                text = langflow_output_text(reply)
            except FlowRunError as error:
                mark_failure(span, error)
                raise
            set_output(span, text)
            reply_session = reply.get("session_id") if isinstance(reply.get("session_id"), str) else None
            if reply_session and session_id is None:
                span.set_attribute("session.id", reply_session)
                span.set_attribute("gen_ai.conversation.id", reply_session)
            return LangflowResult(text, reply_session or session_id, reply)

    def close(self) -> None:
        self._http.close()
        if self._owns_agentmon:
            self._agentmon.close()

    def __enter__(self) -> LangflowAgent:
        return self

    def __exit__(self, *_) -> None:
        self.close()


def run_flow(flow_id: str, input_value: str, *, session_id: str | None = None,
             tweaks: dict[str, Any] | None = None, **options: Any) -> LangflowResult:
    """One run of one flow; ``options`` are LangflowAgent's (base_url, api_key, name, agentmon...)."""
    with LangflowAgent(flow_id, **options) as flow:
        return flow.run(input_value, session_id=session_id, tweaks=tweaks)
