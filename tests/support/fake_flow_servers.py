"""Fake Langflow, Flowise and AutoGen Studio servers that answer like the real REST APIs.

They are real FastAPI apps (serve them with tests.support.servers.ServedApp), record every
request (headers included, so a test can check the API key and the ``traceparent``), and can be
told to misbehave: ``mode`` = "ok", "error" (500 as the real server words it), "slow" (answers
after ``delay`` seconds), "malformed" (2xx JSON of the wrong shape), "html" (2xx, not JSON).

With ``tracer_provider``, the flow servers behave like instrumented servers: each run emits an
LLM span as a child of the caller's ``traceparent``.

Reply shapes: Langflow 1.x ``RunResponse`` (``/api/v1/run``) and ``FlowRead``; Flowise
``/api/v1/prediction`` and ``/api/v1/chatflows/{id}``; AutoGen Studio ``/api/teams/`` (see
shared reference notes, agent-conventions.md, and the projects' public sources).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


@dataclass
class _Fake:
    mode: str = "ok"
    delay: float = 2.0
    tracer_provider: TracerProvider | None = None
    requests: list[Recorded] = field(default_factory=list)

    async def record(self, request: Request) -> Recorded:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        entry = Recorded(request.method, request.url.path, dict(request.query_params),
                         {k.lower(): v for k, v in request.headers.items()}, body)
        self.requests.append(entry)
        return entry

    def runs(self, path_part: str) -> list[Recorded]:
        return [r for r in self.requests if path_part in r.path and r.method == "POST"]

    def llm_span(self, headers: dict[str, str], model: str, tokens: tuple[int, int]) -> None:
        """The instrumented server's own LLM call, continuing the caller's trace."""
        if self.tracer_provider is None:
            return
        context = TraceContextTextMapPropagator().extract(headers)
        tracer = self.tracer_provider.get_tracer("fake-flow-server")
        with tracer.start_as_current_span(
            f"chat {model}", context=context, kind=SpanKind.CLIENT,
            attributes={"gen_ai.operation.name": "chat", "gen_ai.provider.name": "openai",
                        "gen_ai.request.model": model, "gen_ai.usage.input_tokens": tokens[0],
                        "gen_ai.usage.output_tokens": tokens[1]},
        ):
            pass


# ---- Langflow ------------------------------------------------------------------------

def langflow_run_reply(flow_id: str, text: str, session_id: str, input_value: str) -> dict[str, Any]:
    """A Langflow 1.x RunResponse for a flow ending in a Chat Output component."""
    message = {
        "text_key": "text",
        "data": {"text": text, "sender": "Machine", "sender_name": "AI", "session_id": session_id, "files": [],
                 "timestamp": "2025-06-01T10:00:00+00:00", "flow_id": flow_id},
        "default_value": "", "text": text, "sender": "Machine", "sender_name": "AI", "files": [],
        "session_id": session_id, "timestamp": "2025-06-01T10:00:00+00:00", "flow_id": flow_id, "error": False,
        "edit": False, "properties": {"text_color": "", "background_color": "", "edited": False, "source": {
            "id": "OpenAIModel-x1", "display_name": "OpenAI", "source": "gpt-4o-mini"}, "icon": "", "allow_markdown": False,
            "state": "complete", "targets": []},
        "category": "message", "content_blocks": [],
    }
    return {
        "session_id": session_id,
        "outputs": [{
            "inputs": {"input_value": input_value},
            "outputs": [{
                "results": {"message": message},
                "artifacts": {"message": text, "sender": "Machine", "sender_name": "AI", "files": [], "type": "object"},
                "outputs": {"message": {"message": text, "type": "text"}},
                "logs": {"message": []},
                "messages": [{"message": text, "sender": "Machine", "sender_name": "AI", "session_id": session_id,
                              "stream_url": None, "component_id": "ChatOutput-Qx9Zt", "files": [], "type": "text"}],
                "timedelta": None, "duration": None,
                "component_display_name": "Chat Output", "component_id": "ChatOutput-Qx9Zt",
                "used_frozen_result": False,
            }],
        }],
    }


class FakeLangflow(_Fake):
    """``flows`` maps flow ids to names; ``api_key`` is required as ``x-api-key``."""

    def __init__(self, flows: dict[str, str], *, api_key: str = "lf-secret", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.flows = flows
        self.api_key = api_key
        self.app = FastAPI()

        def refused(request: Request) -> JSONResponse | None:
            given = request.headers.get("x-api-key") or request.query_params.get("x-api-key")
            if not given:
                return JSONResponse({"detail": "An API key must be passed as query or header"}, status_code=403)
            if given != self.api_key:
                return JSONResponse({"detail": "Invalid API key"}, status_code=401)
            return None

        @self.app.get("/api/v1/flows/{flow_id}")
        async def read_flow(flow_id: str, request: Request):
            await self.record(request)
            if (error := refused(request)) is not None:
                return error
            if flow_id not in self.flows:
                return JSONResponse({"detail": "Flow not found"}, status_code=404)
            return {"id": flow_id, "name": self.flows[flow_id], "description": "Perform basic prompting.",
                    "icon": None, "is_component": False, "endpoint_name": None, "data": {"nodes": [], "edges": []},
                    "folder_id": str(uuid.uuid4()), "user_id": str(uuid.uuid4()), "updated_at": "2025-06-01T10:00:00"}

        @self.app.post("/api/v1/run/{flow_id}")
        async def run(flow_id: str, request: Request):
            entry = await self.record(request)
            if (error := refused(request)) is not None:
                return error
            if flow_id not in self.flows:
                return JSONResponse({"detail": f"Flow identifier {flow_id} not found"}, status_code=404)
            if self.mode == "slow":
                await asyncio.sleep(self.delay)
            if self.mode == "error":
                return JSONResponse({"detail": "Error running graph: Error building Component OpenAI: "
                                               "Connection error."}, status_code=500)
            if self.mode == "html":
                return HTMLResponse("<html><body>Langflow</body></html>")
            body = entry.body if isinstance(entry.body, dict) else {}
            if self.mode == "malformed":
                return {"session_id": body.get("session_id") or flow_id, "outputs": [{"inputs": {}, "outputs": []}]}
            self.llm_span(entry.headers, "gpt-4o-mini", (21, 9))
            question = str(body.get("input_value", ""))
            return langflow_run_reply(flow_id, f"Echo: {question}", body.get("session_id") or flow_id, question)


# ---- Flowise --------------------------------------------------------------------------

class FakeFlowise(_Fake):
    """``chatflows`` maps chatflow ids to names; ``api_key`` is required as ``Authorization: Bearer``."""

    def __init__(self, chatflows: dict[str, str], *, api_key: str = "fw-secret", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.chatflows = chatflows
        self.api_key = api_key
        self.app = FastAPI()

        def refused(request: Request) -> JSONResponse | None:
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                return JSONResponse({"error": "Unauthorized Access"}, status_code=401)
            return None

        def not_found(chatflow_id: str, where: str) -> JSONResponse:
            return JSONResponse({"statusCode": 404, "success": False,
                                 "message": f"Error: {where} - Chatflow {chatflow_id} not found", "stack": {}},
                                status_code=404)

        @self.app.get("/api/v1/chatflows/{chatflow_id}")
        async def read_chatflow(chatflow_id: str, request: Request):
            await self.record(request)
            if (error := refused(request)) is not None:
                return error
            if chatflow_id not in self.chatflows:
                return not_found(chatflow_id, "chatflowsService.getChatflowById")
            return {"id": chatflow_id, "name": self.chatflows[chatflow_id], "flowData": "{\"nodes\":[],\"edges\":[]}",
                    "deployed": False, "isPublic": False, "apikeyid": None, "chatbotConfig": None, "apiConfig": None,
                    "analytic": None, "speechToText": None, "followUpPrompts": None, "category": None,
                    "type": "CHATFLOW", "createdDate": "2025-06-01T10:00:00.000Z", "updatedDate": "2025-06-01T10:00:00.000Z"}

        @self.app.post("/api/v1/prediction/{chatflow_id}")
        async def prediction(chatflow_id: str, request: Request):
            entry = await self.record(request)
            if (error := refused(request)) is not None:
                return error
            if chatflow_id not in self.chatflows:
                return not_found(chatflow_id, "predictionsServices.buildChatflow")
            if self.mode == "slow":
                await asyncio.sleep(self.delay)
            if self.mode == "error":
                return JSONResponse({"statusCode": 500, "success": False,
                                     "message": "Error: predictionsServices.buildChatflow - 429 You exceeded your current quota",
                                     "stack": {}}, status_code=500)
            if self.mode == "html":
                return HTMLResponse("<!DOCTYPE html><html><body>Flowise</body></html>")
            if self.mode == "malformed":
                return {"question": "?", "chatId": "c"}
            body = entry.body if isinstance(entry.body, dict) else {}
            chat_id = body.get("chatId") or str(uuid.uuid4())
            session_id = (body.get("overrideConfig") or {}).get("sessionId") or chat_id
            self.llm_span(entry.headers, "gpt-4o-mini", (30, 12))
            if self.mode == "json":
                return {"json": {"answer": body.get("question"), "confidence": 0.9}, "question": body.get("question"),
                        "chatId": chat_id, "chatMessageId": str(uuid.uuid4()), "sessionId": session_id}
            return {"text": f"Echo: {body.get('question')}", "question": body.get("question"), "chatId": chat_id,
                    "chatMessageId": str(uuid.uuid4()), "isStreamValid": False, "sessionId": session_id,
                    "memoryType": "Buffer Memory"}


# ---- AutoGen Studio ----------------------------------------------------------------------

def _model_client() -> dict[str, Any]:
    return {"provider": "autogen_ext.models.openai.OpenAIChatCompletionClient", "component_type": "model",
            "version": 1, "component_version": 1, "description": "Chat completion client for OpenAI hosted models.",
            "label": "OpenAIChatCompletionClient", "config": {"model": "gpt-4o-mini"}}


def studio_agent(name: str, description: str = "An agent that provides assistance with ability to use tools.") -> dict:
    """An AssistantAgent component as AutoGen Studio stores it."""
    return {"provider": "autogen_agentchat.agents.AssistantAgent", "component_type": "agent", "version": 1,
            "component_version": 1, "description": "An agent that provides assistance with tool use.",
            "label": "AssistantAgent",
            "config": {"name": name, "model_client": _model_client(), "tools": [], "handoffs": [],
                       "model_context": {"provider": "autogen_core.model_context.UnboundedChatCompletionContext",
                                         "component_type": "chat_completion_context", "version": 1,
                                         "component_version": 1, "description": "", "label": "", "config": {}},
                       "description": description, "system_message": "You are a helpful assistant.",
                       "model_client_stream": False, "reflect_on_tool_use": False,
                       "tool_call_summary_format": "{result}"}}


def studio_team(label: str, participants: list[Any], provider: str = "autogen_agentchat.teams.RoundRobinGroupChat") -> dict:
    """A team component as AutoGen Studio stores it."""
    return {"provider": provider, "component_type": "team", "version": 1, "component_version": 1,
            "description": f"{label} team", "label": label,
            "config": {"participants": participants,
                       "termination_condition": {"provider": "autogen_agentchat.conditions.TextMentionTermination",
                                                 "component_type": "termination", "version": 1,
                                                 "component_version": 1, "description": "", "label": "",
                                                 "config": {"text": "TERMINATE"}}}}


def studio_team_row(team_id: int, component: dict | str, user_id: str = "guestuser@gmail.com") -> dict:
    """A row of Studio's team table as ``/api/teams/`` returns it."""
    return {"id": team_id, "created_at": "2025-06-01T10:00:00", "updated_at": "2025-06-01T10:00:00",
            "user_id": user_id, "version": "0.0.1", "component": component}


class FakeAutoGenStudio(_Fake):
    """``GET /api/teams/?user_id=`` over ``rows`` (filtered by user); ``token`` makes a Bearer token required.
    ``mode`` "failed" answers Studio's ``{"status": false}`` envelope."""

    def __init__(self, rows: list[dict], *, token: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rows = rows
        self.token = token
        self.app = FastAPI()

        @self.app.get("/api/teams/")
        async def list_teams(request: Request):
            await self.record(request)
            if self.token is not None and request.headers.get("authorization") != f"Bearer {self.token}":
                return JSONResponse({"detail": "Not authenticated"}, status_code=401)
            user_id = request.query_params.get("user_id")
            if user_id is None:
                return JSONResponse({"detail": [{"type": "missing", "loc": ["query", "user_id"],
                                                 "msg": "Field required", "input": None}]}, status_code=422)
            if self.mode == "html":
                return HTMLResponse("<html>not studio</html>")
            if self.mode == "failed":
                return {"status": False, "message": "database is locked"}
            return {"status": True, "data": [row for row in self.rows if row.get("user_id") == user_id]}
