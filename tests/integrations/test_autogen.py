"""AutoGen: Studio's teams registered from a fake AutoGen Studio, and autogen-core 0.7's own spans
(re-created span for span in tests/support/autogen_spans.py: the real package cannot be installed
next to agentmon's protobuf 7) recognised by the real enricher's built-in rules, stamped and stored."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from integrations.autogen_studio import (
    AutoGenStudioClient,
    AutoGenStudioError,
    StudioAgent,
    parse_teams,
    register_autogen_studio_teams,
    register_autogen_team,
)
from integrations.client import AgentmonClient, AgentmonError
from registry_api.store import AgentIdentity
from tests.enricher.conftest import wait_until
from tests.support.autogen_spans import AutogenTelemetry, RoundRobinRun, Turn
from tests.support.fake_flow_servers import FakeAutoGenStudio, studio_agent, studio_team, studio_team_row
from tests.support.servers import ServedApp, closed_port

GUEST = "guestuser@gmail.com"


def studio_rows() -> list[dict]:
    writing = studio_team("Writing Team", [studio_agent("writer", "Drafts the text."),
                                           studio_agent("editor", "Reviews the draft.")])
    nested = studio_team("Review Pair", [studio_agent("editor", "Reviews the draft."), studio_agent("researcher")])
    research = studio_team("Research Team", [
        nested,
        {"provider": "autogen_agentchat.agents.UserProxyAgent", "component_type": "agent", "config": {}},  # no name
        "not a participant",
    ], provider="autogen_agentchat.teams.SelectorGroupChat")
    return [
        studio_team_row(1, writing),
        studio_team_row(2, json.dumps(research)),  # older Studio databases keep the component as JSON text
        studio_team_row(3, studio_team("Someone else's", [studio_agent("intruder")]), user_id="other@example.com"),
    ]


@pytest.fixture
def studio() -> Iterator[tuple[FakeAutoGenStudio, str]]:
    fake = FakeAutoGenStudio(studio_rows())
    with ServedApp(fake.app) as server:
        yield fake, server.url


def _autogen_id(name: str, project: str = "default-project") -> str:
    return AgentIdentity(name=name, type="autogen", project_id=project).agent_id


def test_studio_teams_are_registered_and_autogen_core_spans_land_on_those_rows(agentmon_stack, studio) -> None:
    fake, url = studio
    registered = register_autogen_studio_teams(url, agentmon=agentmon_stack.client())

    assert [a.name for a in registered] == ["writer", "editor", "researcher"]
    assert [r.path for r in fake.requests] == ["/api/teams/"] and fake.requests[0].query == {"user_id": GUEST}
    rows = {r["name"]: r for r in agentmon_stack.agents()}
    assert set(rows) == {"writer", "editor", "researcher"}
    for name, row in rows.items():
        assert (row["id"], row["type"], row["external_id"], row["project_id"]) == (
            _autogen_id(name), "autogen", None, "default-project"), name
        assert row["config"]["provider"] == "autogen_agentchat.agents.AssistantAgent"
        assert row["config"]["autogen_studio"]["url"] == url
    assert rows["editor"]["config"]["autogen_studio"]["teams"] == [
        {"id": "1", "label": "Writing Team"}, {"id": "2", "label": "Research Team"}]
    assert rows["writer"]["config"]["description"] == "Drafts the text."

    # The team runs, instrumented as AutoGen's tracing guide says (global provider, OpenLLMetry for OpenAI).
    provider = agentmon_stack.tracer_provider(**{"service.name": "autogen-app"})
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    team = RoundRobinRun(AutogenTelemetry(provider), provider.get_tracer("opentelemetry.instrumentation.openai.v1"),
                         ["writer", "editor"], descriptions={"writer": "Drafts the text.", "editor": "Reviews the draft."})
    team.create_agents()
    team.run([Turn("writer", "A first draft.", (120, 40)), Turn("editor", "Looks good. TERMINATE", (160, 8))])
    provider.force_flush()

    owner_of_label = {"create writer": "writer", "turn writer": "writer", "after writer": "writer",
                      "create editor": "editor", "turn editor": "editor", "after editor": "editor", "team start": None}
    assert set(team.traces) == set(owner_of_label)
    expected = {}
    for label, traces in team.traces.items():
        for trace_id in traces:
            expected[format(trace_id, "032x")] = owner_of_label[label]
    # Every span the team emitted arrives, each decided (none left to the hold timeout).
    emitted = memory.get_finished_spans()
    # 2 create_agent; the start (create, send, 3 creates, ack) and its 2 deliveries (2 + 3 spans); per turn
    # publish, process, invoke_agent, openai.chat, 2 creates; after it, the output (2) and group (4) deliveries;
    # the termination's delivery (2).
    assert len(emitted) == 2 + 6 + 5 + 2 * (6 + 2 + 4) + 2
    spans = agentmon_stack.forwarded(count=len(emitted))
    assert len(spans) == len(emitted)
    assert agentmon_stack.enricher.metrics.spans_released_on_timeout._value.get() == 0
    assert {s.trace_id for s in spans} == set(expected)
    for span in spans:
        owner = expected[span.trace_id]
        want = (_autogen_id(owner), owner, "autogen") if owner else (None, None, None)
        assert span.stamp == want, (span.name, [k for k, v in team.traces.items() if int(span.trace_id, 16) in v])
    # The links are what tie the message traces together.
    after_writer = [s for s in spans if s.trace_id in {format(t, "032x") for t in team.traces["after writer"]}
                    and s.name.startswith("autogen publish")]
    assert len(after_writer) == 2 and all(s.links for s in after_writer)

    # No agent was invented: the manager, the runtime's agent types and team uuids are not agents.
    assert wait_until(lambda: not agentmon_stack.enricher.directory._pending)
    assert agentmon_stack.enricher.metrics.agents_created._value.get() == 0
    assert {r["name"] for r in agentmon_stack.agents()} == {"writer", "editor", "researcher"}

    # Stored: a writer turn is a run of writer with its LLM call and tokens.
    [turn] = team.traces["turn writer"]
    turn_spans = [s for s in spans if s.trace_id == format(turn, "032x")]
    tree = agentmon_stack.stored_trace(turn, span_count=len(turn_spans))
    assert {s["agent_id"] for s in tree["spans"]} == {_autogen_id("writer")}
    assert [s["name"] for s in tree["spans"] if s["is_run"]] == ["invoke_agent writer"]
    assert [(c["name"], c["input_tokens"], c["output_tokens"]) for c in tree["llm_calls"]] == [("openai.chat", 120, 40)]
    assert tree["roots"][0]["name"] == f"autogen publish writer_{team.team_id}.({team.team_id})-T"
    writer_runs = agentmon_stack.get(f"/agents/{_autogen_id('writer')}/traces")["items"]
    assert format(turn, "032x") in {item["trace_id"] for item in writer_runs}
    # One turn is one run: the create_agent span that introduced writer is not a run of it.
    assert agentmon_stack.get(f"/agents/{_autogen_id('writer')}/stats")["runs"] == 1
    editor = agentmon_stack.get(f"/agents/{_autogen_id('editor')}/stats")
    assert (editor["llm_calls"], editor["input_tokens"], editor["output_tokens"]) == (1, 160, 8)


def test_a_project_is_shared_through_the_resource(agentmon_stack, studio) -> None:
    """With project_id, the AutoGen process names the same project on its resource."""
    _, url = studio
    registered = register_autogen_studio_teams(url, agentmon=agentmon_stack.client(), project_id="research")
    assert {a.project_id for a in registered} == {"research"}
    provider = agentmon_stack.tracer_provider(**{"agentmon.project.id": "research"})
    telemetry = AutogenTelemetry(provider)
    with telemetry.invoke_agent_span("writer", agent_id="writer_x/x"):
        pass
    [span] = agentmon_stack.forwarded(count=1)
    assert span.stamp == (_autogen_id("writer", "research"), "writer", "autogen")
    assert span.stamp[0] == next(a.id for a in registered if a.name == "writer")


def test_an_exported_team_file_registers_its_agents(agentmon_stack) -> None:
    team = studio_team("Solo", [studio_agent("assistant_agent")])
    registered = register_autogen_team(json.dumps(team), agentmon=agentmon_stack.client())
    assert [(a.name, a.type, a.external_id) for a in registered] == [("assistant_agent", "autogen", None)]
    with pytest.raises(AutoGenStudioError, match="not a JSON object"):
        register_autogen_team("[1, 2]", agentmon=agentmon_stack.client())


def test_studio_with_authentication_needs_its_token(agentmon_stack) -> None:
    fake = FakeAutoGenStudio(studio_rows(), token="studio-jwt")
    with ServedApp(fake.app) as server:
        with pytest.raises(AutoGenStudioError, match="refused GET /api/teams/ with 401.*AUTOGEN_STUDIO_TOKEN"):
            register_autogen_studio_teams(server.url, agentmon=agentmon_stack.client())
        assert len(register_autogen_studio_teams(server.url, token="studio-jwt", user_id=GUEST,
                                                 agentmon=agentmon_stack.client())) == 3
    assert fake.requests[-1].headers["authorization"] == "Bearer studio-jwt"


def test_studio_settings_come_from_the_environment(agentmon_stack, studio, monkeypatch) -> None:
    fake, url = studio
    monkeypatch.setenv("AUTOGEN_STUDIO_URL", url)
    monkeypatch.setenv("AUTOGEN_STUDIO_USER_ID", "other@example.com")
    monkeypatch.setenv("AGENTMON_URL", agentmon_stack.url)
    monkeypatch.setenv("AGENTMON_API_KEY", agentmon_stack.api_key)
    assert [a.name for a in register_autogen_studio_teams()] == ["intruder"]
    assert fake.requests[0].query == {"user_id": "other@example.com"}


@pytest.mark.parametrize("mode, words", [("html", "not JSON"), ("failed", "reported a failure: database is locked")])
def test_studio_answering_badly_is_a_clear_error(agentmon_stack, studio, mode, words) -> None:
    fake, url = studio
    fake.mode = mode
    with pytest.raises(AutoGenStudioError, match=words):
        register_autogen_studio_teams(url, agentmon=agentmon_stack.client())
    assert agentmon_stack.agents() == []


def test_studio_or_agentmon_unreachable_is_a_clear_error(agentmon_stack, studio) -> None:
    _, url = studio
    with pytest.raises(AutoGenStudioError, match="unreachable"):
        register_autogen_studio_teams(f"http://127.0.0.1:{closed_port()}", agentmon=agentmon_stack.client())
    with AgentmonClient(f"http://127.0.0.1:{closed_port()}", timeout=2) as down:
        with pytest.raises(AgentmonError, match="unreachable"):
            register_autogen_studio_teams(url, agentmon=down)
    with AgentmonClient(agentmon_stack.url, api_key="wrong") as refused:
        with pytest.raises(AgentmonError, match="401"):
            register_autogen_studio_teams(url, agentmon=refused)


# ---- the parser, on every shape Studio has used ------------------------------------------------

def test_parse_the_current_envelope_with_nested_teams_and_bad_entries() -> None:
    teams = parse_teams({"status": True, "data": [row for row in studio_rows() if row["user_id"] == GUEST]})
    assert [(t.id, t.label, t.provider) for t in teams] == [
        ("1", "Writing Team", "autogen_agentchat.teams.RoundRobinGroupChat"),
        ("2", "Research Team", "autogen_agentchat.teams.SelectorGroupChat")]
    assert [a.name for a in teams[0].agents] == ["writer", "editor"]
    assert teams[1].agents == (
        StudioAgent("editor", "Reviews the draft.", "autogen_agentchat.agents.AssistantAgent"),
        StudioAgent("researcher", "An agent that provides assistance with ability to use tools.",
                    "autogen_agentchat.agents.AssistantAgent"))


@pytest.mark.parametrize("payload, expected", [
    ([studio_team_row(7, studio_team("T", [studio_agent("a")]))], [("7", "T", ["a"])]),  # a bare list
    ({"status": True, "data": studio_team_row(8, studio_team("One", [studio_agent("b")]))}, [("8", "One", ["b"])]),
    (studio_team("Exported", [studio_agent("c"), studio_agent("d")]), [(None, "Exported", ["c", "d"])]),
    # Studio 0.4.0: the team config under "config", participants named at their top level
    ({"status": True, "data": [{"id": 3, "config": {"name": "old team", "team_type": "RoundRobinGroupChat",
                                                   "participants": [{"name": "planner", "agent_type": "AssistantAgent"}]}}]},
     [("3", "old team", ["planner"])]),
    ({"status": True, "data": {"items": [{"id": 4, "component": {"label": "paged", "config": {
        "participants": [{"config": {"name": "e"}}]}}}]}}, [("4", "paged", ["e"])]),
    ({"status": True, "data": []}, []),
    ({"status": True, "data": [None, 5, {"id": 9}, {"id": 10, "component": {"config": {"participants": "x"}}}]},
     [("9", None, []), ("10", None, [])]),
    ({"status": True, "data": [{"id": 11, "component": {"config": {"participants": [
        {"config": {"name": "   "}}, {"config": {"name": "x" * 256}}, {"config": {"name": 42}}, {"config": {"name": " ok "}}]}}}]},
     [("11", None, ["ok"])]),
])
def test_parse_is_tolerant(payload, expected) -> None:
    assert [(t.id, t.label, [a.name for a in t.agents]) for t in parse_teams(payload)] == expected


def test_deeply_nested_teams_stop_somewhere() -> None:
    team = studio_team("leaf", [studio_agent("deep")])
    for depth in range(20):
        team = studio_team(f"level {depth}", [team])
    assert parse_teams(team)[0].agents == ()


@pytest.mark.parametrize("payload", [None, "teams", 3, {"status": False, "message": "nope"}, {"detail": "Not Found"}])
def test_parse_refuses_what_is_no_teams_reply(payload) -> None:
    with pytest.raises(AutoGenStudioError):
        parse_teams(payload)


def test_client_reads_teams_over_http(studio) -> None:
    fake, url = studio
    with AutoGenStudioClient(url + "/") as client:
        teams = client.list_teams()
    assert [t.label for t in teams] == ["Writing Team", "Research Team"]
