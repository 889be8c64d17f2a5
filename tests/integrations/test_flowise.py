"""The Flowise integration against a fake Flowise that answers like Flowise's prediction and
chatflow APIs, through the real pipeline: OTel SDK -> enricher -> chDB (and the test collector),
registry API over HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from integrations.client import AgentmonClient, AgentmonError
from integrations.flowise import (
    FlowAuthError,
    FlowiseAgent,
    FlowReplyError,
    FlowRunError,
    FlowTimeoutError,
    flowise_output_text,
    predict,
)
from registry_api.store import AgentIdentity
from tests.support.fake_flow_servers import FakeFlowise
from tests.support.servers import ServedApp, closed_port

CHATFLOW_ID = "8a1e0f3c-2b7d-4c52-9d0e-6f1a2b3c4d5e"
CHATFLOW_NAME = "Order Assistant"
KEY = "fw-secret"


@pytest.fixture
def flowise(agentmon_stack) -> Iterator[tuple[FakeFlowise, str]]:
    fake = FakeFlowise({CHATFLOW_ID: CHATFLOW_NAME}, api_key=KEY,
                       tracer_provider=agentmon_stack.tracer_provider(**{"service.name": "flowise"}))
    with ServedApp(fake.app) as server:
        yield fake, server.url


def _agent(stack, url: str, chatflow_id: str = CHATFLOW_ID, **kwargs) -> FlowiseAgent:
    kwargs.setdefault("api_key", KEY)
    kwargs.setdefault("agentmon", stack.client())
    kwargs.setdefault("tracer", stack.tracer_provider().get_tracer("app"))
    return FlowiseAgent(chatflow_id, base_url=url, **kwargs)


def test_a_prediction_registers_the_chatflow_and_its_spans_are_stamped_and_stored(agentmon_stack, flowise) -> None:
    fake, url = flowise
    history = [{"role": "userMessage", "content": "Hi"}, {"role": "apiMessage", "content": "Hello!"}]
    with _agent(agentmon_stack, url) as bot:
        result = bot.predict("Where is order 7?", session_id="user-42", history=history,
                             override_config={"temperature": 0.1})
        second = bot.predict("Thanks", chat_id="chat-9")

    assert (result.text, result.session_id) == ("Echo: Where is order 7?", "user-42")
    assert result.chat_id and result.raw["chatMessageId"]
    assert (second.text, second.chat_id, second.session_id) == ("Echo: Thanks", "chat-9", "chat-9")

    expected_id = AgentIdentity(name=CHATFLOW_NAME, type="flowise", external_id=CHATFLOW_ID).agent_id
    rows = agentmon_stack.agents()
    assert [(r["id"], r["name"], r["type"], r["external_id"]) for r in rows] == [
        (expected_id, CHATFLOW_NAME, "flowise", CHATFLOW_ID)]
    assert rows[0]["config"] == {"flowise_url": url}
    gets = [r for r in fake.requests if r.method == "GET"]
    assert [r.path for r in gets] == [f"/api/v1/chatflows/{CHATFLOW_ID}"]
    assert gets[0].headers["authorization"] == f"Bearer {KEY}"

    first, then = fake.runs("/api/v1/prediction/")
    assert first.path == f"/api/v1/prediction/{CHATFLOW_ID}" and first.headers["authorization"] == f"Bearer {KEY}"
    assert first.body == {"question": "Where is order 7?", "streaming": False,
                          "overrideConfig": {"temperature": 0.1, "sessionId": "user-42"}, "history": history}
    assert then.body == {"question": "Thanks", "streaming": False, "chatId": "chat-9"}

    spans = agentmon_stack.forwarded(count=4)
    assert {s.stamp for s in spans} == {(expected_id, CHATFLOW_NAME, "flowise")}
    run = next(s for s in spans if s.name == f"invoke_agent {CHATFLOW_NAME}" and s.attributes.get("session.id") == "user-42")
    assert first.headers["traceparent"].startswith(f"00-{run.trace_id}-{run.span_id}-")
    assert run.attributes["flowise.chatflow_id"] == CHATFLOW_ID and run.attributes["flowise.chat_id"] == result.chat_id
    assert run.attributes["output.value"] == "Echo: Where is order 7?"
    other = next(s for s in spans if s.name == f"invoke_agent {CHATFLOW_NAME}" and s.trace_id != run.trace_id)
    assert other.attributes["session.id"] == "chat-9"  # Flowise's session defaults to the chat id

    tree = agentmon_stack.stored_trace(run.trace_id, span_count=2)
    assert {(s["name"], s["agent_id"], s["is_run"], s["is_llm"]) for s in tree["spans"]} == {
        (f"invoke_agent {CHATFLOW_NAME}", expected_id, True, False), ("chat gpt-4o-mini", expected_id, False, True)}
    agentmon_stack.stored_trace(other.trace_id, span_count=2)
    stats = agentmon_stack.get(f"/agents/{expected_id}/stats")
    assert (stats["runs"], stats["llm_calls"], stats["input_tokens"], stats["output_tokens"]) == (2, 2, 60, 24)


def test_a_structured_answer_is_returned_as_json_text(agentmon_stack, flowise) -> None:
    fake, url = flowise
    fake.mode = "json"
    result = predict(CHATFLOW_ID, "rate it", base_url=url, api_key=KEY, name="rater", agentmon=agentmon_stack.client(),
                     tracer=agentmon_stack.tracer_provider().get_tracer("app"))
    assert json.loads(result.text) == {"answer": "rate it", "confidence": 0.9}
    assert [r.method for r in fake.requests] == ["POST"]  # a given name needs no chatflow lookup
    [row] = agentmon_stack.agents(type="flowise")
    assert (row["name"], row["external_id"]) == ("rater", CHATFLOW_ID)
    assert {s.stamp for s in agentmon_stack.forwarded(count=2)} == {(row["id"], "rater", "flowise")}


def test_settings_come_from_the_environment(agentmon_stack, flowise, monkeypatch) -> None:
    fake, url = flowise
    monkeypatch.setenv("FLOWISE_URL", url)
    monkeypatch.setenv("FLOWISE_API_KEY", KEY)
    monkeypatch.setenv("AGENTMON_URL", agentmon_stack.url)
    monkeypatch.setenv("AGENTMON_API_KEY", agentmon_stack.api_key)
    with FlowiseAgent(CHATFLOW_ID, tracer=agentmon_stack.tracer_provider().get_tracer("app")) as bot:
        assert bot.predict("from env").text == "Echo: from env"
    assert [r["name"] for r in agentmon_stack.agents()] == [CHATFLOW_NAME]


FAILURES = [
    ("wrong key", "ok", {"api_key": "nope"}, FlowAuthError, 401, ["401", "Unauthorized Access", "check the API key"]),
    ("no key", "ok", {"api_key": ""}, FlowAuthError, 401, ["401"]),
    ("server error", "error", {}, FlowRunError, 500, ["500", "You exceeded your current quota"]),
    ("timeout", "slow", {"timeout": 0.3}, FlowTimeoutError, None, ["timed out", "0.3 s"]),
    ("no answer", "malformed", {}, FlowReplyError, None, ["no 'text' or 'json'"]),
    ("not json", "html", {}, FlowReplyError, 200, ["not JSON", "<!DOCTYPE html>"]),
]


def test_failed_predictions_raise_clear_errors_and_are_error_spans(agentmon_stack, flowise) -> None:
    fake, url = flowise
    agent_id = AgentIdentity(name=CHATFLOW_NAME, type="flowise", external_id=CHATFLOW_ID).agent_id
    for case, mode, options, exception, status, words in FAILURES:
        fake.mode = mode
        with _agent(agentmon_stack, url, name=CHATFLOW_NAME, **options) as bot:
            with pytest.raises(exception) as raised:
                bot.predict(f"case {case}")
        assert type(raised.value) is exception and raised.value.status_code == status, case
        for word in words:
            assert word in str(raised.value), (case, str(raised.value))
    fake.mode = "ok"
    with _agent(agentmon_stack, f"http://127.0.0.1:{closed_port()}", name=CHATFLOW_NAME) as bot:
        with pytest.raises(FlowRunError, match="unreachable"):
            bot.predict("server down")
    ghost = "00000000-0000-0000-0000-000000000000"
    with _agent(agentmon_stack, url, ghost, name="ghost") as bot, pytest.raises(FlowRunError) as missing:
        bot.predict("unknown chatflow")
    assert missing.value.status_code == 404 and f"Chatflow {ghost} not found" in str(missing.value)

    cases = len(FAILURES) + 1
    forwarded = agentmon_stack.forwarded(count=cases + 1)
    spans = [s for s in forwarded if s.agent_id == agent_id]
    assert len(spans) == cases
    for span, (case, _, _, exception, status, _) in zip(spans, FAILURES, strict=False):
        assert span.attributes["input.value"] == f"case {case}"
        assert span.status_code == 2 and span.events == ("exception",), case
        assert span.attributes["error.type"] == exception.__name__, case
        assert span.attributes.get("http.response.status_code") == status, case
    for span in spans:
        agentmon_stack.stored_trace(span.trace_id, 1)
    stats = agentmon_stack.get(f"/agents/{agent_id}/stats")
    assert (stats["runs"], stats["errors"]) == (cases, cases)


def test_the_chatflow_name_lookup_failing_is_a_clear_error_before_any_run(agentmon_stack, flowise) -> None:
    fake, url = flowise
    with _agent(agentmon_stack, url, api_key="nope") as bot, pytest.raises(FlowAuthError, match="reading Flowise chatflow"):
        bot.predict("hi")
    with _agent(agentmon_stack, url, "11111111-1111-1111-1111-111111111111") as bot:
        with pytest.raises(FlowRunError, match="404.*not found"):
            bot.predict("hi")
    assert fake.runs("/api/v1/prediction/") == [] and agentmon_stack.agents() == []


def test_registry_unreachable_is_a_clear_agentmon_error(agentmon_stack, flowise) -> None:
    fake, url = flowise
    down = AgentmonClient(f"http://127.0.0.1:{closed_port()}", timeout=2)
    with _agent(agentmon_stack, url, name=CHATFLOW_NAME, agentmon=down) as bot:
        with pytest.raises(AgentmonError, match=r"agentmon at http://127\.0\.0\.1:\d+ is unreachable"):
            bot.predict("hi")
    down.close()
    assert fake.runs("/api/v1/prediction/") == [] and agentmon_stack.agents() == []


@pytest.mark.parametrize("reply, text", [
    ({"text": "plain", "chatId": "c"}, "plain"),
    ({"text": "", "chatId": "c"}, ""),
    ({"json": {"a": [1, 2]}}, '{"a": [1, 2]}'),
    ({"json": "already text"}, "already text"),
    ("a bare string", "a bare string"),
])
def test_output_text_across_reply_shapes(reply, text) -> None:
    assert flowise_output_text(reply) == text


@pytest.mark.parametrize("reply", [None, [], 3, {}, {"text": None}, {"json": None}, {"question": "q"}])
def test_output_text_refuses_replies_without_an_answer(reply) -> None:
    with pytest.raises(FlowReplyError):
        flowise_output_text(reply)
