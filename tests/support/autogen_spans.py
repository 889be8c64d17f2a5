"""The spans autogen-core / autogen-agentchat 0.7 emit, built exactly as they build them.

autogen-core cannot be installed next to agentmon (it pins protobuf~=5.29; agentmon runs
protobuf 7 and grpcio-health-checking), so this module re-creates its telemetry from its
source (autogen_core/_telemetry: _genai.py, _tracing.py, _tracing_config.py, _propagation.py;
autogen_core/_single_threaded_agent_runtime.py; autogen_agentchat teams' ChatAgentContainer and
BaseChatAgent):

- ``create_agent {name}`` (in BaseChatAgent.__init__) and ``invoke_agent {name}`` (around an
  agent's turn in a team, with ``gen_ai.agent.id = str(AgentId) = "{name}_{team uuid}/{team uuid}"``),
  tracer "autogen-core", kind CLIENT, ``gen_ai.system = "autogen"``.
- runtime spans from TraceHelper: tracer "autogen SingleThreadedAgentRuntime", named
  ``autogen {operation} {destination}`` (AgentId ``{type}.({key})-A``, TopicId ``{type}.({source})-T``),
  PRODUCER for create/send/publish, CONSUMER for receive/intercept/process/ack, attributes
  ``messaging.operation`` / ``messaging.destination`` / ``messaging.message.type``. They start in the
  current context (the runtime's loop task: no span) and reach the sender only through a span
  LINK to the ``traceparent`` carried in the message envelope: each message starts a new trace.
- AutoGen emits no LLM spans; the OpenLLMetry OpenAI instrumentor (as AutoGen's tracing guide sets
  up) adds ``openai.chat`` spans under ``invoke_agent``.

``RoundRobinRun`` plays ``RoundRobinGroupChat([...]).run(task=...)`` message by message, as the
single-threaded runtime processes its queue, and labels every trace it starts.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

GENAI_SYSTEM_AUTOGEN = "autogen"
_W3C = TraceContextTextMapPropagator()
_KIND = {"create": SpanKind.PRODUCER, "send": SpanKind.PRODUCER, "publish": SpanKind.PRODUCER,
         "receive": SpanKind.CONSUMER, "intercept": SpanKind.CONSUMER, "process": SpanKind.CONSUMER,
         "ack": SpanKind.CONSUMER}
_MESSAGING_OPERATION = {"send": "publish", "publish": "publish", "create": "create", "receive": "receive",
                        "intercept": "receive", "ack": "receive", "process": "process"}


def agent_destination(agent_type: str, key: str) -> str:
    return f"{agent_type}.({key})-A"


def topic_destination(topic_type: str, source: str) -> str:
    return f"{topic_type}.({source})-T"


class AutogenTelemetry:
    """autogen-core's span helpers, on a given tracer provider."""

    def __init__(self, provider: TracerProvider) -> None:
        self.genai = provider.get_tracer("autogen-core")
        self.runtime = provider.get_tracer("autogen SingleThreadedAgentRuntime")

    @contextmanager
    def _genai_span(self, operation: str, agent_name: str, agent_id: str | None,
                    agent_description: str | None) -> Iterator[Span]:
        attributes = {"gen_ai.operation.name": operation, "gen_ai.system": GENAI_SYSTEM_AUTOGEN,
                      "gen_ai.agent.name": agent_name}
        if agent_id is not None:
            attributes["gen_ai.agent.id"] = agent_id
        if agent_description is not None:
            attributes["gen_ai.agent.description"] = agent_description
        with self.genai.start_as_current_span(f"{operation} {agent_name}", kind=SpanKind.CLIENT,
                                              attributes=attributes) as span:
            try:
                yield span
            except Exception as error:
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, str(error)))
                span.set_attribute("error.type", type(error).__name__)
                raise

    def create_agent_span(self, agent_name: str, *, agent_id: str | None = None,
                          agent_description: str | None = None):
        return self._genai_span("create_agent", agent_name, agent_id, agent_description)

    def invoke_agent_span(self, agent_name: str, *, agent_id: str | None = None,
                          agent_description: str | None = None):
        return self._genai_span("invoke_agent", agent_name, agent_id, agent_description)

    @contextmanager
    def trace_block(self, operation: str, destination: str, parent: dict[str, str] | None, *,
                    message_type: str | None = None) -> Iterator[Span]:
        """TraceHelper.trace_block: the current context, a link to the envelope's traceparent."""
        links = None
        if parent is not None:
            links = [Link(trace.get_current_span(_W3C.extract(parent)).get_span_context())]
        attributes = {"messaging.operation": _MESSAGING_OPERATION[operation], "messaging.destination": destination}
        if message_type is not None:
            attributes["messaging.message.type"] = message_type
        name = f"autogen {operation} {destination}" if destination else f"autogen {operation}"
        with self.runtime.start_as_current_span(name, None, _KIND[operation], attributes, links) as span:
            yield span


def envelope_metadata() -> dict[str, str]:
    """get_telemetry_envelope_metadata: the current span's traceparent."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier


@contextmanager
def runtime_loop_context() -> Iterator[None]:
    """The runtime processes each message in a task of its run loop, where no span is current."""
    token = otel_context.attach(otel_context.Context())
    try:
        yield
    finally:
        otel_context.detach(token)


@dataclass
class Turn:
    speaker: str
    reply: str
    tokens: tuple[int, int]


@dataclass
class RoundRobinRun:
    """``RoundRobinGroupChat(participants).run(task=...)``: participants speak in turn, one LLM call each."""

    telemetry: AutogenTelemetry
    llm_tracer: trace.Tracer
    participants: list[str]
    descriptions: dict[str, str] = field(default_factory=dict)
    manager_name: str = "RoundRobinGroupChatManager"
    team_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    traces: dict[str, list[int]] = field(default_factory=dict)  # label -> trace ids started under it
    _queue: deque = field(default_factory=deque)

    # ---- names -------------------------------------------------------------------------------
    def _type(self, name: str) -> str:
        return f"{name}_{self.team_id}"

    def _agent(self, name: str) -> str:
        return agent_destination(self._type(name), self.team_id)

    def _topic(self, name: str) -> str:
        return topic_destination(self._type(name), self.team_id)

    def _label(self, label: str, span: Span) -> None:
        self.traces.setdefault(label, []).append(span.get_span_context().trace_id)

    # ---- the runtime -------------------------------------------------------------------------
    def _publish(self, topic: str, message_type: str, label: str, recipients: list[tuple[str, Callable[[], None]]]):
        """publish_message: a short "create" span where the caller is; delivery comes later."""
        with self.telemetry.trace_block("create", self._topic(topic), None, message_type=message_type):
            self._queue.append((topic, envelope_metadata(), label, recipients))

    def _drain(self) -> None:
        while self._queue:
            topic, metadata, label, recipients = self._queue.popleft()
            with runtime_loop_context(), self.telemetry.trace_block("publish", self._topic(topic), metadata) as span:
                self._label(label, span)
                for agent_name, handler in recipients:
                    with self.telemetry.trace_block("process", self._agent(agent_name), None):
                        handler()

    # ---- the agents --------------------------------------------------------------------------
    def create_agents(self) -> None:
        """AssistantAgent(name, ...) for each participant: BaseChatAgent.__init__'s span."""
        for name in self.participants:
            with self.telemetry.create_agent_span(name, agent_description=self.descriptions.get(name)) as span:
                self._label(f"create {name}", span)

    def _speak(self, turns: deque[Turn]) -> None:
        turn = turns.popleft()
        with self.telemetry.invoke_agent_span(turn.speaker, agent_id=f"{self._type(turn.speaker)}/{self.team_id}",
                                              agent_description=self.descriptions.get(turn.speaker)):
            with self.llm_tracer.start_as_current_span("openai.chat", kind=SpanKind.CLIENT, attributes={
                "llm.request.type": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o-mini",
                "gen_ai.response.model": "gpt-4o-mini-2024-07-18", "gen_ai.usage.prompt_tokens": turn.tokens[0],
                "gen_ai.usage.completion_tokens": turn.tokens[1], "llm.usage.total_tokens": sum(turn.tokens),
                "gen_ai.completion.0.content": turn.reply,
            }):
                pass
            after = f"after {turn.speaker}"
            self._publish("output_topic", "GroupChatMessage", after, [(self.manager_name, lambda: None)])
            others = [(name, lambda: None) for name in self.participants if name != turn.speaker]
            self._publish("group_topic", "GroupChatAgentResponse", after,
                          others + [(self.manager_name, lambda: self._next(turns, after))])

    def _next(self, turns: deque[Turn], label: str) -> None:
        """The manager after a response: the next speaker, or the end."""
        if not turns:
            self._publish("output_topic", "GroupChatTermination", label, [(self.manager_name, lambda: None)])
            return
        speaker = turns[0].speaker
        self._publish(speaker, "GroupChatRequestPublish", f"turn {speaker}", [(speaker, lambda: self._speak(turns))])

    def run(self, turns: list[Turn]) -> None:
        """team.run(task): send GroupChatStart to the manager and process messages until idle."""
        queue = deque(turns)
        manager = self._agent(self.manager_name)
        # send_message: its "create" span lasts until the manager's handler returned (await future).
        with self.telemetry.trace_block("create", manager, None, message_type="GroupChatStart") as create:
            self._label("team start", create)
            metadata = envelope_metadata()
            with runtime_loop_context():
                with self.telemetry.trace_block("send", manager, metadata) as send:
                    self._label("team start", send)
                    # handle_start: log and relay the task, then ask the first speaker.
                    self._publish("output_topic", "GroupChatStart", "team start", [(self.manager_name, lambda: None)])
                    self._publish("group_topic", "GroupChatStart", "team start",
                                  [(name, lambda: None) for name in self.participants])
                    self._next(queue, "team start")
                    response = envelope_metadata()
                with self.telemetry.trace_block("ack", "", response) as ack:
                    self._label("team start", ack)
        self._drain()
