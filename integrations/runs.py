"""One agent run as an OpenTelemetry span that agentmon recognises and attributes.

The span follows the GenAI conventions (``invoke_agent {name}``) and also carries the
agent's registry identity explicitly (``metadata.agent_id`` and friends), so the enricher
needs no rule to know it, and every span started inside it - LLM calls included - is
attributed to the agent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from integrations.client import RegisteredAgent

MAX_TEXT = 4096  # input/output kept on the span, in characters: enough to read, not a payload store


def _clip(text: Any) -> str:
    text = text if isinstance(text, str) else str(text)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "\u2026"


def run_attributes(agent: RegisteredAgent) -> dict[str, str]:
    attributes = {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": agent.name,
        "gen_ai.agent.id": agent.id,
        "metadata.agent_id": agent.id,
        "metadata.agent_name": agent.name,
        "metadata.agent_type": agent.type,
    }
    if agent.external_id:
        attributes["metadata.agent_external_id"] = agent.external_id
    # The project is part of the identity: without it, a span that reaches the enricher before
    # its registry view has the row would be taken for a new agent of the default project.
    attributes["agentmon.project.id"] = agent.project_id
    return attributes


@contextmanager
def agent_run(agent: RegisteredAgent, *, input: Any = None, tracer: trace.Tracer | None = None,
              attributes: dict[str, Any] | None = None) -> Iterator[Span]:
    """A span around one run of ``agent``. Record the result with ``set_output(span, ...)``.
    An exception marks the span as an error (with the exception recorded) and propagates."""
    tracer = tracer or trace.get_tracer("agentmon.integrations")
    span_attributes = {**(attributes or {}), **run_attributes(agent)}
    if input is not None:
        span_attributes["input.value"] = _clip(input)
    with tracer.start_as_current_span(f"invoke_agent {agent.name}", kind=SpanKind.INTERNAL,
                                      attributes=span_attributes, record_exception=True,
                                      set_status_on_exception=True) as span:
        yield span


def set_output(span: Span, output: Any) -> None:
    span.set_attribute("output.value", _clip(output))


def set_error(span: Span, message: str) -> None:
    """A failure that did not raise (an error reply from a remote flow, say)."""
    span.set_status(Status(StatusCode.ERROR, _clip(message)))
