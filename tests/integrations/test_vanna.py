"""MonitoredVanna around a small Vanna look-alike whose submit_prompt is LiteLLMChat (the REAL
litellm, offline), through a real agentmon: stamped spans, the registry row and the stats."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm is imported: no network

import logging
import math
from collections.abc import Iterator

import litellm
import pytest

from integrations.vanna import AGENT_TYPE, LiteLLMChat, MonitoredVanna, current_agent
from registry_api.store.identity import AgentIdentity
from tests.enricher.conftest import wait_until
from tests.integrations.test_litellm import INPUT_TOKENS, MODEL, OUTPUT_TOKENS, LiteLLMRig, _cost, _reset_litellm
from tests.support.servers import closed_port

SQL = "SELECT count(*) FROM orders"


class FakeVanna(LiteLLMChat):
    """Vanna's classic flow in miniature: generate_sql builds a prompt and submits it, passing its
    keyword arguments on (as VannaBase does); ``rounds`` LLM calls per question."""

    def __init__(self, config: dict) -> None:
        LiteLLMChat.__init__(self, config=config)
        self.rounds = 1
        self.seen_agents: list = []

    def generate_sql(self, question: str, allow_llm_to_see_data: bool = False, **kwargs) -> str:
        prompt = [self.system_message("You are a SQLite expert."), self.user_message(question)]
        self.seen_agents.append(current_agent())
        for _ in range(self.rounds):
            reply = self.submit_prompt(prompt, **kwargs)
            prompt.append(self.assistant_message(reply))
        return reply

    def run_sql(self, sql: str) -> list[tuple]:
        return [(42,)]


@pytest.fixture
def rig(agentmon_stack) -> Iterator[LiteLLMRig]:
    yield LiteLLMRig(agentmon_stack.tracer_provider(**{"service.name": "vanna-app"}))
    _reset_litellm()


def _by_trace(spans) -> dict[str, list]:
    out: dict[str, list] = {}
    for span in spans:
        out.setdefault(span.trace_id, []).append(span)
    return out


def test_each_question_is_a_run_with_its_llm_calls(agentmon_stack, rig) -> None:
    fake = FakeVanna({"model": MODEL, "litellm_kwargs": {"mock_response": SQL}})
    vn = MonitoredVanna(fake, connection_id="warehouse-prod", client=agentmon_stack.client(), tracer=rig.tracer)
    assert vn.generate_sql("How many orders?", print_prompt=False) == SQL  # Vanna-only kwargs stay out of litellm
    fake.rounds = 2
    assert vn.generate_sql("And last week?") == SQL
    assert vn.run_sql(SQL) == [(42,)]  # everything else is the wrapped object's
    assert fake.seen_agents == [vn.agent, vn.agent] and current_agent() is None
    recorded = rig.recorded(2 + 3 * 2)

    agent = vn.agent
    assert (agent.name, agent.type, agent.external_id) == ("vanna-warehouse-prod", "vanna", "warehouse-prod")
    forwarded = agentmon_stack.forwarded(8)
    assert {s.stamp for s in forwarded} == {(agent.id, "vanna-warehouse-prod", "vanna")}
    traces = _by_trace(forwarded)
    assert sorted(len(spans) for spans in traces.values()) == [3, 5]
    for spans in traces.values():
        [run] = [s for s in spans if s.name == "invoke_agent vanna-warehouse-prod"]
        calls = [s for s in spans if s.name == "litellm_request"]
        assert run.attributes["vanna.connection_id"] == "warehouse-prod"
        assert run.attributes["output.value"] == SQL
        assert {c.parent_span_id for c in calls} == {run.span_id}
        assert all(f"'agent_id': '{agent.id}'" in c.attributes["metadata.requester_metadata"] for c in calls)
        assert len([s for s in spans if s.name == "raw_gen_ai_request"]) == len(calls)
        agentmon_stack.stored_trace(run.trace_id, span_count=len(spans))
    assert sorted(next(s for s in spans if s.name.startswith("invoke_agent")).attributes["input.value"]
                  for spans in traces.values()) == ["And last week?", "How many orders?"]

    stats = agentmon_stack.get(f"/agents/{agent.id}/stats")
    assert (stats["runs"], stats["llm_calls"], stats["errors"]) == (2, 3, 0), stats
    assert (stats["input_tokens"], stats["output_tokens"]) == (3 * INPUT_TOKENS, 3 * OUTPUT_TOKENS)
    assert math.isclose(stats["cost_usd"], _cost(recorded), rel_tol=1e-6, abs_tol=1e-9)
    [row] = agentmon_stack.agents(type=AGENT_TYPE)
    assert (row["id"], row["name"], row["type"], row["external_id"]) == (
        agent.id, "vanna-warehouse-prod", "vanna", "warehouse-prod")


def test_a_failed_generation_is_a_failed_run(agentmon_stack, rig) -> None:
    ok = MonitoredVanna(FakeVanna({"model": MODEL, "litellm_kwargs": {"mock_response": SQL}}),
                        connection_id="c1", client=agentmon_stack.client(), tracer=rig.tracer)
    failing = MonitoredVanna(
        FakeVanna({"model": MODEL, "litellm_kwargs": {"num_retries": 0, "mock_response": litellm.RateLimitError(
            "slow down", llm_provider="openai", model=MODEL)}}),
        connection_id="c1", client=agentmon_stack.client(), tracer=rig.tracer)
    assert ok.generate_sql("first") == SQL
    with pytest.raises(litellm.RateLimitError):
        failing.generate_sql("second")
    recorded = rig.recorded(2 * 2 + 1)  # a failed call has no raw_gen_ai_request
    assert ok.agent.id == failing.agent.id

    forwarded = agentmon_stack.forwarded(5)
    assert {s.agent_id for s in forwarded} == {ok.agent.id}
    [failed_run] = [s for s in forwarded if s.name.startswith("invoke_agent") and s.status_code == 2]
    assert "exception" in failed_run.events
    [failed_call] = [s for s in forwarded if s.name == "litellm_request" and s.status_code == 2]
    assert failed_call.trace_id == failed_run.trace_id and failed_call.parent_span_id == failed_run.span_id
    for spans in _by_trace(forwarded).values():
        agentmon_stack.stored_trace(spans[0].trace_id, span_count=len(spans))

    stats = agentmon_stack.get(f"/agents/{ok.agent.id}/stats")
    assert (stats["runs"], stats["errors"], stats["error_rate"]) == (2, 1, 0.5), stats
    # The failed call is an LLM call too, without tokens or cost.
    assert (stats["llm_calls"], stats["input_tokens"], stats["output_tokens"]) == (2, INPUT_TOKENS, OUTPUT_TOKENS)
    assert math.isclose(stats["cost_usd"], _cost(recorded), rel_tol=1e-6, abs_tol=1e-9)
    failed = agentmon_stack.get(f"/agents/{ok.agent.id}/traces", status="error")["items"]
    assert [t["trace_id"] for t in failed] == [failed_run.trace_id]


def test_runs_are_recorded_when_the_registry_is_unreachable(agentmon_stack, rig, caplog) -> None:
    """Monitoring never breaks Vanna: the run carries the id the registry would give, and the
    enricher registers the agent from the spans."""
    from integrations.client import AgentmonClient

    down = AgentmonClient(f"http://127.0.0.1:{closed_port()}", timeout=2)
    with caplog.at_level(logging.WARNING, logger="integrations.vanna"):
        vn = MonitoredVanna(FakeVanna({"model": MODEL, "litellm_kwargs": {"mock_response": SQL}}),
                            connection_id="c9", client=down, tracer=rig.tracer)
        assert vn.generate_sql("q") == SQL
        assert vn.generate_sql("q2") == SQL
    # One attempt: runs do not wait for an unreachable agentmon again before REGISTER_RETRY_SECONDS.
    assert caplog.text.count("could not register vanna-c9") == 1
    rig.recorded(6)
    expected = AgentIdentity(name="vanna-c9", type="vanna", external_id="c9").agent_id
    assert vn.agent.id == expected
    assert {s.stamp for s in agentmon_stack.forwarded(6)} == {(expected, "vanna-c9", "vanna")}
    assert wait_until(lambda: any(a["id"] == expected for a in agentmon_stack.agents()))
    [row] = agentmon_stack.agents(type=AGENT_TYPE)
    assert (row["name"], row["external_id"]) == ("vanna-c9", "c9")
    down.close()

    vn._client, vn._retry_at = agentmon_stack.client(), 0.0  # agentmon is back, and it is time to retry
    assert vn.agent.id == expected and vn._agent is not None


def test_configuration_errors() -> None:
    with pytest.raises(ValueError):
        LiteLLMChat({})
    with pytest.raises(ValueError):
        MonitoredVanna(object(), connection_id="", client=object())
