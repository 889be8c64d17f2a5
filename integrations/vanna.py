"""Vanna (its classic ``generate_sql``/``submit_prompt`` API) as an agentmon agent.

Vanna has no OpenTelemetry of its own. ``MonitoredVanna`` wraps any object with Vanna's methods:
it registers the agent ``vanna-{connection_id}`` (type vanna, external id the connection id) and runs
each ``generate_sql`` in an agent span, with the question as input and the SQL as output. LLM calls made
through LiteLLM inside it (``LiteLLMChat``, or ``litellm_submit_prompt`` in your own ``submit_prompt``) are
child spans of that run, and name the agent themselves::

    class MyVanna(LiteLLMChat, ChromaDB_VectorStore):        # LiteLLMChat in place of OpenAI_Chat, listed first
        def __init__(self, config=None):
            ChromaDB_VectorStore.__init__(self, config=config)
            LiteLLMChat.__init__(self, config=config)        # config["model"]: any LiteLLM model

    configure_otel("http://127.0.0.1:4317")                  # integrations.litellm
    vn = MonitoredVanna(MyVanna(config={"model": "gpt-4o-mini"}), connection_id="warehouse-prod")
    sql = vn.generate_sql("How many orders last week?")      # everything else is passed through to MyVanna

LiteLLMChat must come before the vector store: it does not derive from VannaBase, so listed after a
VannaBase subclass its methods would lose to VannaBase's abstract ones (``Can't instantiate abstract class``).
In Vanna 2.x the classic API is ``vanna.legacy`` (``from vanna.legacy.chromadb import ChromaDB_VectorStore``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from opentelemetry import trace

from integrations.client import AgentmonClient, AgentmonError, RegisteredAgent
from integrations.litellm import agent_metadata
from integrations.runs import agent_run, set_output

log = logging.getLogger(__name__)

AGENT_TYPE = "vanna"
CONNECTION_ATTRIBUTE = "vanna.connection_id"  # agentmon's vanna-bridge rule reads it
REGISTER_RETRY_SECONDS = 60.0  # while agentmon is unreachable, runs do not wait for it more often
_current_agent: ContextVar[RegisteredAgent | None] = ContextVar("agentmon_vanna_agent", default=None)


def agent_name(connection_id: str) -> str:
    return f"vanna-{connection_id}"


def current_agent() -> RegisteredAgent | None:
    """The agent whose run is in progress in this context (inside ``MonitoredVanna.generate_sql``)."""
    return _current_agent.get()


def _offline_agent(name: str, connection_id: str, project_id: str | None) -> RegisteredAgent:
    """The row the registry would return: ids are derived from the identity, so the spans name the same
    agent and the enricher creates the row when it sees them."""
    from registry_api.store.identity import DEFAULT_PROJECT, AgentIdentity

    identity = AgentIdentity(name=name, type=AGENT_TYPE, project_id=project_id or DEFAULT_PROJECT,
                             external_id=connection_id)
    return RegisteredAgent(identity.agent_id, identity.name, identity.type, identity.project_id, identity.external_id)


class MonitoredVanna:
    """``vn`` with each ``generate_sql`` recorded as a run of the agent ``vanna-{connection_id}``.
    Other attributes are ``vn``'s. Registration failures never break ``vn``: the run is then recorded
    under the same id, and agentmon registers the agent from the spans."""

    def __init__(self, vn: Any, connection_id: str, *, client: AgentmonClient | None = None,
                 tracer: trace.Tracer | None = None, project_id: str | None = None, name: str | None = None) -> None:
        if not connection_id:
            raise ValueError("connection_id is required")
        self.vn = vn
        self.connection_id = str(connection_id)
        self.project_id = project_id
        self.name = name or agent_name(self.connection_id)
        self._client = client if client is not None else AgentmonClient()
        self._tracer = tracer
        self._retry_at = 0.0
        self._agent: RegisteredAgent | None = self._register()

    def _register(self) -> RegisteredAgent | None:
        try:
            return self._client.register(self.name, AGENT_TYPE, external_id=self.connection_id,
                                         project_id=self.project_id)
        except AgentmonError as error:
            self._retry_at = time.monotonic() + REGISTER_RETRY_SECONDS
            log.warning("agentmon: could not register %s (%s); recording its runs anyway", self.name, error)
            return None

    @property
    def agent(self) -> RegisteredAgent:
        """The registered agent; while agentmon cannot be reached, the row it will have (same id)."""
        if self._agent is None and time.monotonic() >= self._retry_at:
            self._agent = self._register()
        return self._agent or _offline_agent(self.name, self.connection_id, self.project_id)

    @contextmanager
    def run(self, question: Any) -> Iterator[trace.Span]:
        """One run of the agent as the current span (``generate_sql`` uses it; so can your own methods)."""
        agent = self.agent
        attributes = {CONNECTION_ATTRIBUTE: self.connection_id}
        token = _current_agent.set(agent)
        try:
            with agent_run(agent, input=question, tracer=self._tracer, attributes=attributes) as span:
                yield span
        finally:
            _current_agent.reset(token)

    def generate_sql(self, question: str, **kwargs: Any) -> str:
        with self.run(question) as span:
            sql = self.vn.generate_sql(question, **kwargs)
            if sql is not None:
                set_output(span, sql)
            return sql

    def __getattr__(self, name: str) -> Any:
        if name == "vn":
            raise AttributeError(name)
        return getattr(self.vn, name)


def litellm_submit_prompt(prompt: list[dict[str, Any]] | str, *, model: str, **completion_kwargs: Any) -> str:
    """Vanna's ``submit_prompt`` on ``litellm.completion``: the call is a child span of the current run
    and names its agent in LiteLLM's requester metadata."""
    import litellm

    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    metadata = agent_metadata(current_agent(), metadata=completion_kwargs.pop("metadata", None))
    response = litellm.completion(model=model, messages=messages, metadata=metadata, **completion_kwargs)
    return response.choices[0].message.content


class LiteLLMChat:
    """Vanna's LLM methods (``system_message``, ``user_message``, ``assistant_message``, ``submit_prompt``)
    on LiteLLM, to mix in place of ``OpenAI_Chat`` and friends, as the FIRST base class (it does not derive
    from VannaBase, whose abstract methods would otherwise come first). ``config``: ``model`` (required), and
    ``litellm_kwargs``, more keyword arguments for ``litellm.completion`` (temperature, api_base...)."""

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        if not config.get("model"):
            raise ValueError("LiteLLMChat needs config['model'], a LiteLLM model name")
        self.model = config["model"]
        self.litellm_kwargs = dict(config.get("litellm_kwargs") or {})

    @staticmethod
    def system_message(message: str) -> dict[str, str]:
        return {"role": "system", "content": message}

    @staticmethod
    def user_message(message: str) -> dict[str, str]:
        return {"role": "user", "content": message}

    @staticmethod
    def assistant_message(message: str) -> dict[str, str]:
        return {"role": "assistant", "content": message}

    def submit_prompt(self, prompt: list[dict[str, Any]] | str, **kwargs: Any) -> str:
        # Vanna passes generate_sql's keyword arguments on; only a model override is meant for the LLM.
        return litellm_submit_prompt(prompt, model=kwargs.get("model") or self.model, **self.litellm_kwargs)
