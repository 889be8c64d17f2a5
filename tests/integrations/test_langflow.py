"""The Langflow integration against a fake Langflow that answers like Langflow 1.x, through the
real pipeline: OTel SDK -> enricher -> chDB (and the test collector), registry API over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from integrations.client import AgentmonClient, AgentmonError
from integrations.langflow import (
    FlowAuthError,
    FlowReplyError,
    FlowRunError,
    FlowTimeoutError,
    LangflowAgent,
    langflow_output_text,
    run_flow,
)
from registry_api.store import AgentIdentity
from tests.support.fake_flow_servers import FakeLangflow, langflow_run_reply
from tests.support.servers import ServedApp, closed_port

FLOW_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
FLOW_NAME = "Support Flow"
KEY = "lf-secret"


@pytest.fixture
def langflow(agentmon_stack) -> Iterator[tuple[FakeLangflow, str]]:
    """A fake Langflow whose runs emit an LLM span under the caller's traceparent (an instrumented server)."""
    fake = FakeLangflow({FLOW_ID: FLOW_NAME}, api_key=KEY,
                        tracer_provider=agentmon_stack.tracer_provider(**{"service.name": "langflow"}))
    with ServedApp(fake.app) as server:
        yield fake, server.url


def _agent(stack, url: str, **kwargs) -> LangflowAgent:
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("agentmon", stack.client())
    kwargs.setdefault("tracer", stack.tracer_provider().get_tracer("app"))
    return LangflowAgent(FLOW_ID, base_url=url, **kwargs)


def test_a_run_registers_the_flow_and_its_spans_are_stamped_and_stored(agentmon_stack, langflow) -> None:
    fake, url = langflow
    with _agent(agentmon_stack, url) as flow:
        result = flow.run("What is the refund policy?", session_id="user-42",
                          tweaks={"OpenAIModel-x1": {"temperature": 0.2}})
        again = flow.run("And shipping?")

    assert result.text == "Echo: What is the refund policy?" and result.session_id == "user-42"
    assert result.raw["outputs"][0]["outputs"][0]["component_id"] == "ChatOutput-Qx9Zt"
    assert again.text == "Echo: And shipping?" and again.session_id == FLOW_ID  # Langflow's default session

    # The registry row: type langflow, external id the flow id, name the flow's own name, asked once.
    expected_id = AgentIdentity(name=FLOW_NAME, type="langflow", external_id=FLOW_ID).agent_id
    rows = agentmon_stack.agents()
    assert [(r["id"], r["name"], r["type"], r["external_id"], r["project_id"]) for r in rows] == [
        (expected_id, FLOW_NAME, "langflow", FLOW_ID, "default-project")]
    assert rows[0]["config"] == {"langflow_url": url}
    assert [r.path for r in fake.requests if r.method == "GET"] == [f"/api/v1/flows/{FLOW_ID}"]

    # What Langflow received: the documented run call, the key, and the run span's trace context.
    first = fake.runs("/api/v1/run/")[0]
    assert first.path == f"/api/v1/run/{FLOW_ID}" and first.query == {"stream": "false"}
    assert first.headers["x-api-key"] == KEY
    assert first.body == {"input_value": "What is the refund policy?", "input_type": "chat", "output_type": "chat",
                          "tweaks": {"OpenAIModel-x1": {"temperature": 0.2}}, "session_id": "user-42"}
    assert fake.runs("/api/v1/run/")[1].body == {"input_value": "And shipping?", "input_type": "chat",
                                                 "output_type": "chat"}

    # Forwarded by the enricher: each run span and the flow server's LLM span, in one trace, stamped.
    spans = agentmon_stack.forwarded(count=4)
    runs = [s for s in spans if s.name == f"invoke_agent {FLOW_NAME}"]
    llm = [s for s in spans if s.name == "chat gpt-4o-mini"]
    assert len(runs) == 2 and len(llm) == 2
    for span in spans:
        assert span.stamp == (expected_id, FLOW_NAME, "langflow"), span.name
    run = next(s for s in runs if s.attributes.get("session.id") == "user-42")
    assert first.headers["traceparent"].startswith(f"00-{run.trace_id}-{run.span_id}-")
    child = next(s for s in llm if s.trace_id == run.trace_id)
    assert child.parent_span_id == run.span_id and child.resource["service.name"] == "langflow"
    assert run.attributes["input.value"] == "What is the refund policy?"
    assert run.attributes["output.value"] == "Echo: What is the refund policy?"
    assert run.attributes["langflow.flow_id"] == FLOW_ID and run.attributes["gen_ai.conversation.id"] == "user-42"
    assert run.attributes["metadata.agent_external_id"] == FLOW_ID and run.status_code == 0

    # Stored: the run and its LLM call belong to the agent, and its stats count them.
    tree = agentmon_stack.stored_trace(run.trace_id, span_count=2)
    assert {(s["name"], s["agent_id"], s["is_run"], s["is_llm"]) for s in tree["spans"]} == {
        (f"invoke_agent {FLOW_NAME}", expected_id, True, False), ("chat gpt-4o-mini", expected_id, False, True)}
    agentmon_stack.stored_trace(again_trace := next(s.trace_id for s in runs if s.trace_id != run.trace_id), 2)
    stats = agentmon_stack.get(f"/agents/{expected_id}/stats")
    assert (stats["runs"], stats["llm_calls"], stats["input_tokens"], stats["output_tokens"], stats["errors"]) == (
        2, 2, 42, 18, 0)
    listed = agentmon_stack.get(f"/agents/{expected_id}/traces")
    assert {item["trace_id"] for item in listed["items"]} == {run.trace_id, again_trace}


def test_a_given_name_needs_no_flow_lookup_and_run_flow_is_one_call(agentmon_stack, langflow) -> None:
    fake, url = langflow
    result = run_flow(FLOW_ID, "hi", base_url=url, api_key=KEY, name="support-bot", agentmon=agentmon_stack.client(),
                      tracer=agentmon_stack.tracer_provider().get_tracer("app"))
    assert result.text == "Echo: hi"
    assert [r.method for r in fake.requests] == ["POST"]
    [row] = agentmon_stack.agents(type="langflow")
    assert (row["name"], row["external_id"]) == ("support-bot", FLOW_ID)
    spans = agentmon_stack.forwarded(count=2)
    assert {s.stamp for s in spans} == {(row["id"], "support-bot", "langflow")}


def test_settings_come_from_the_environment(agentmon_stack, langflow, monkeypatch) -> None:
    fake, url = langflow
    monkeypatch.setenv("LANGFLOW_URL", url)
    monkeypatch.setenv("LANGFLOW_API_KEY", KEY)
    monkeypatch.setenv("AGENTMON_URL", agentmon_stack.url)
    monkeypatch.setenv("AGENTMON_API_KEY", agentmon_stack.api_key)
    with LangflowAgent(FLOW_ID, tracer=agentmon_stack.tracer_provider().get_tracer("app")) as flow:
        assert flow.run("from env").text == "Echo: from env"
    assert [r["name"] for r in agentmon_stack.agents()] == [FLOW_NAME]


FAILURES = [
    # (case, fake mode, agent options, exception, status, words in the message)
    ("wrong key", "ok", {"api_key": "nope"}, FlowAuthError, 401, ["401", "Invalid API key", "check the API key"]),
    ("no key", "ok", {"api_key": ""}, FlowAuthError, 403, ["403", "An API key must be passed"]),
    ("server error", "error", {}, FlowRunError, 500, ["500", "Error building Component OpenAI"]),
    ("timeout", "slow", {"timeout": 0.3}, FlowTimeoutError, None, ["timed out", "0.3 s"]),
    ("no output", "malformed", {}, FlowReplyError, None, ["no output message", "Chat Output"]),
    ("not json", "html", {}, FlowReplyError, 200, ["not JSON", "<html>"]),
]


def test_failed_runs_raise_clear_errors_and_are_error_spans(agentmon_stack, langflow) -> None:
    fake, url = langflow
    agent_id = AgentIdentity(name=FLOW_NAME, type="langflow", external_id=FLOW_ID).agent_id
    for case, mode, options, exception, status, words in FAILURES:
        fake.mode = mode
        with _agent(agentmon_stack, url, name=FLOW_NAME, **options) as flow:
            with pytest.raises(exception) as raised:
                flow.run(f"case {case}")
        assert type(raised.value) is exception, case
        assert raised.value.status_code == status, case
        for word in words:
            assert word in str(raised.value), (case, str(raised.value))
    fake.mode = "ok"
    with _agent(agentmon_stack, f"http://127.0.0.1:{closed_port()}", name=FLOW_NAME) as flow:
        with pytest.raises(FlowRunError, match="unreachable") as down:
            flow.run("server down")
    assert type(down.value) is FlowRunError and down.value.status_code is None
    ghost = "00000000-0000-0000-0000-000000000000"
    with LangflowAgent(ghost, base_url=url, api_key=KEY, name="ghost", agentmon=agentmon_stack.client(),
                       tracer=agentmon_stack.tracer_provider().get_tracer("app")) as flow:
        with pytest.raises(FlowRunError) as missing:
            flow.run("unknown flow")
    assert missing.value.status_code == 404 and f"Flow identifier {ghost} not found" in str(missing.value)

    # One ERROR span per failure, stamped, with the exception recorded and the failure's kind.
    cases = len(FAILURES) + 1
    forwarded = agentmon_stack.forwarded(count=cases + 1)
    spans = [s for s in forwarded if s.agent_id == agent_id]
    assert len(spans) == cases
    for span, (case, _, _, exception, status, _) in zip(spans, FAILURES, strict=False):
        assert span.attributes["input.value"] == f"case {case}"
        assert span.status_code == 2 and exception.__name__ in span.status_message, case
        assert span.events == ("exception",) and span.attributes["error.type"] == exception.__name__, case
        assert span.attributes.get("http.response.status_code") == status, case
        assert "output.value" not in span.attributes
        assert span.stamp == (agent_id, FLOW_NAME, "langflow")
    assert spans[-1].attributes["error.type"] == "FlowRunError" and spans[-1].status_code == 2
    [ghost_span] = [s for s in forwarded if s.agent_id != agent_id]
    assert ghost_span.stamp[1:] == ("ghost", "langflow") and ghost_span.attributes["http.response.status_code"] == 404
    for span in spans:
        agentmon_stack.stored_trace(span.trace_id, 1)
    stats = agentmon_stack.get(f"/agents/{agent_id}/stats")
    assert (stats["runs"], stats["errors"], stats["error_rate"]) == (cases, cases, 1.0)
    assert agentmon_stack.get(f"/agents/{agent_id}/traces", status="error")["total"] == cases


def test_the_flow_name_lookup_failing_is_a_clear_error_before_any_run(agentmon_stack, langflow) -> None:
    fake, url = langflow
    with _agent(agentmon_stack, url, api_key="nope") as flow, pytest.raises(FlowAuthError, match="reading Langflow flow"):
        flow.run("hi")
    assert fake.runs("/api/v1/run/") == [] and agentmon_stack.agents() == []


def test_registry_unreachable_or_refusing_is_a_clear_agentmon_error(agentmon_stack, langflow) -> None:
    fake, url = langflow
    down = AgentmonClient(f"http://127.0.0.1:{closed_port()}", timeout=2)
    with _agent(agentmon_stack, url, name=FLOW_NAME, agentmon=down) as flow:
        with pytest.raises(AgentmonError, match="unreachable"):
            flow.run("hi")
    refused = AgentmonClient(agentmon_stack.url, api_key="wrong")
    with _agent(agentmon_stack, url, name=FLOW_NAME, agentmon=refused) as flow:
        with pytest.raises(AgentmonError, match="401"):
            flow.run("hi")
    down.close()
    refused.close()
    assert fake.runs("/api/v1/run/") == []  # nothing ran unmonitored
    assert agentmon_stack.agents() == []


@pytest.mark.parametrize("reply, text", [
    (langflow_run_reply(FLOW_ID, "full", "s", "q"), "full"),
    # older Langflow: the text only under message.data
    ({"outputs": [{"outputs": [{"results": {"message": {"data": {"text": "data text"}}}}]}]}, "data text"),
    ({"outputs": [{"outputs": [{"results": {"text": {"text": "text output"}}}]}]}, "text output"),
    ({"outputs": [{"outputs": [{"outputs": {"message": {"message": "outputs", "type": "text"}}}]}]}, "outputs"),
    ({"outputs": [{"outputs": [{"artifacts": {"message": "artifact"}}]}]}, "artifact"),
    ({"outputs": [{"outputs": [{"messages": [{"message": "messages"}]}]}]}, "messages"),
    ({"outputs": [{"outputs": [None, {"results": {"message": {"text": ""}}}]}]}, ""),
])
def test_output_text_across_reply_shapes(reply, text) -> None:
    assert langflow_output_text(reply) == text


@pytest.mark.parametrize("reply", [None, [], "text", {"detail": "x"}, {"outputs": "x"}, {"outputs": []},
                                   {"outputs": [{"outputs": []}]}, {"outputs": [{"outputs": [{"results": {}}]}]}])
def test_output_text_refuses_replies_without_output(reply) -> None:
    with pytest.raises(FlowReplyError):
        langflow_output_text(reply)
