"""Run Flowise chatflows as agentmon agents.

    from integrations.flowise import FlowiseAgent

    with FlowiseAgent("8a1e...-chatflow-uuid") as bot:    # FLOWISE_URL, FLOWISE_API_KEY, AGENTMON_URL
        result = bot.predict("Where is my order?", session_id="user-42")
        print(result.text)

The chatflow is registered once (type ``flowise``, external id the chatflow id, name the
chatflow's own name unless given), and every prediction is an ``invoke_agent {name}``
span of that agent around ``POST /api/v1/prediction/{chatflow_id}``, which carries the
span's ``traceparent``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
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
    "FlowiseAgent", "FlowiseResult", "flowise_output_text", "predict",
]

DEFAULT_URL = "http://127.0.0.1:3000"


@dataclass(frozen=True, slots=True)
class FlowiseResult:
    text: str  # the answer; a structured (JSON) answer serialised
    session_id: str | None
    chat_id: str | None
    raw: Any  # Flowise's reply as received


def flowise_output_text(reply: Any) -> str:
    """The answer of a prediction reply: ``text``, else ``json`` serialised; FlowReplyError otherwise."""
    if isinstance(reply, str):
        return reply  # some chatflows answer a bare JSON string
    if isinstance(reply, dict):
        if isinstance(reply.get("text"), str):
            return reply["text"]
        if "json" in reply and reply["json"] is not None:
            structured = reply["json"]
            return structured if isinstance(structured, str) else json.dumps(structured, ensure_ascii=False)
    raise FlowReplyError(f"Flowise's reply has no 'text' or 'json': {str(reply)[:200]!r}")


class FlowiseAgent:
    """One Flowise chatflow, run through Flowise's prediction API and monitored by agentmon.

    ``base_url`` defaults to FLOWISE_URL or http://127.0.0.1:3000, ``api_key`` (sent as
    ``Authorization: Bearer``) to FLOWISE_API_KEY; ``agentmon`` to an AgentmonClient from
    AGENTMON_URL / AGENTMON_API_KEY. ``timeout`` is in seconds."""

    def __init__(self, chatflow_id: str, *, base_url: str | None = None, api_key: str | None = None,
                 name: str | None = None, project_id: str | None = None, agentmon: AgentmonClient | None = None,
                 timeout: float = 120.0, tracer: trace.Tracer | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        if not chatflow_id or not chatflow_id.strip():
            raise ValueError("chatflow_id is required")
        self.chatflow_id = chatflow_id.strip()
        self.name = name
        self.project_id = project_id
        self.base_url = (base_url or os.environ.get("FLOWISE_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("FLOWISE_API_KEY")
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport,
                                  headers={"Authorization": f"Bearer {key}"} if key else {})
        self._owns_agentmon = agentmon is None
        self._agentmon = agentmon or AgentmonClient()
        self._tracer = tracer
        self._agent: RegisteredAgent | None = None

    def chatflow(self) -> dict[str, Any]:
        """The chatflow as Flowise describes it (``GET /api/v1/chatflows/{id}``)."""
        flow = call_json(self._http, "GET", f"/api/v1/chatflows/{quote(self.chatflow_id, safe='')}",
                         what=f"reading Flowise chatflow {self.chatflow_id}", propagate_trace=False)
        if not isinstance(flow, dict):
            raise FlowReplyError(f"Flowise's description of chatflow {self.chatflow_id} is not an object: "
                                 f"{str(flow)[:200]!r}")
        return flow

    def register(self) -> RegisteredAgent:
        """Register the chatflow in agentmon (once). Without a given name, Flowise is asked for the
        chatflow's name. Raises AgentmonError when agentmon refuses or cannot be reached."""
        if self._agent is None:
            name = self.name
            if not name:
                flow_name = self.chatflow().get("name")
                if not isinstance(flow_name, str) or not flow_name.strip():
                    raise FlowReplyError(f"Flowise's description of chatflow {self.chatflow_id} has no name: pass name=")
                name = flow_name
            self._agent = self._agentmon.register(
                name, "flowise", external_id=self.chatflow_id, project_id=self.project_id,
                config={"flowise_url": self.base_url},
            )
        return self._agent

    def predict(self, question: str, *, session_id: str | None = None, chat_id: str | None = None,
                history: Sequence[dict[str, Any]] | None = None,
                override_config: dict[str, Any] | None = None) -> FlowiseResult:
        """One prediction (``POST /api/v1/prediction/{chatflow_id}``, not streamed) inside an agent span.

        ``history`` is Flowise's ``[{role: "userMessage"|"apiMessage", content}]``; ``override_config``
        is merged under ``overrideConfig`` (``sessionId`` comes from ``session_id``).
        Raises FlowAuthError, FlowTimeoutError, FlowReplyError or FlowRunError; the span is then an error."""
        agent = self.register()
        body: dict[str, Any] = {"question": question, "streaming": False}
        override = dict(override_config or {})
        if session_id is not None:
            override["sessionId"] = session_id
        if override:
            body["overrideConfig"] = override
        if history is not None:
            body["history"] = list(history)
        if chat_id is not None:
            body["chatId"] = chat_id
        attributes: dict[str, Any] = {"flowise.chatflow_id": self.chatflow_id, **server_attributes(self._http.base_url)}
        if session_id is not None:
            attributes["session.id"] = attributes["gen_ai.conversation.id"] = session_id
        with agent_run(agent, input=question, tracer=self._tracer, attributes=attributes) as span:
            try:
                reply = call_json(self._http, "POST", f"/api/v1/prediction/{quote(self.chatflow_id, safe='')}",
                                  json=body, what=f"Flowise prediction of chatflow {self.chatflow_id}")
                text = flowise_output_text(reply)
            except FlowRunError as error:
                mark_failure(span, error)
                raise
            set_output(span, text)
            fields = reply if isinstance(reply, dict) else {}
            reply_session = fields.get("sessionId") if isinstance(fields.get("sessionId"), str) else None
            reply_chat = fields.get("chatId") if isinstance(fields.get("chatId"), str) else None
            if reply_session and session_id is None:
                span.set_attribute("session.id", reply_session)
                span.set_attribute("gen_ai.conversation.id", reply_session)
            if reply_chat:
                span.set_attribute("flowise.chat_id", reply_chat)
            return FlowiseResult(text, reply_session or session_id, reply_chat or chat_id, reply)

    def close(self) -> None:
        self._http.close()
        if self._owns_agentmon:
            self._agentmon.close()

    def __enter__(self) -> FlowiseAgent:
        return self

    def __exit__(self, *_) -> None:
        self.close()


def predict(chatflow_id: str, question: str, *, session_id: str | None = None, **options: Any) -> FlowiseResult:
    """One prediction of one chatflow; ``options`` are FlowiseAgent's (base_url, api_key, name, agentmon...)."""
    with FlowiseAgent(chatflow_id, **options) as bot:
        return bot.predict(question, session_id=session_id)
