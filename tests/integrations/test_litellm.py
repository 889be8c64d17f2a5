"""The REAL litellm package (offline: ``mock_response``, the local price map) exporting through its
``otel`` callback to a real agentmon (enricher -> chDB and a test collector, the registry API over
HTTP): which ways of tying a LiteLLM call to an agent work, each checked on the stamped spans, the
registry row and the per-agent stats."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # before litellm is imported: no network

import asyncio
import json
import math
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import litellm
import pytest
from litellm.integrations.opentelemetry import OpenTelemetry
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from integrations.litellm import (
    BAGGAGE_METADATA_KEYS,
    PARENT_SPAN_KEY,
    agent_metadata,
    otel_environment,
    proxy_request_options,
    traceparent,
)
from integrations.runs import agent_run, set_output
from registry_api.store.identity import AgentIdentity
from tests.support.litellm_proxy import running_litellm_proxy
from tests.enricher.conftest import wait_until
from tests.support.servers import closed_port

REPO = Path(__file__).resolve().parents[2]
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "How many orders were placed last week?"}]
ANSWER = "SELECT count(*) FROM orders WHERE placed_at >= now() - INTERVAL 7 DAY"
# What litellm's mock reports for every call (and its price map prices for gpt-4o-mini).
INPUT_TOKENS, OUTPUT_TOKENS = 10, 20


class LiteLLMRig:
    """LiteLLM's otel callback exporting through one SDK provider: to the enricher, and to memory
    (to know when LiteLLM, which records spans from a background thread, is done)."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self.memory = InMemorySpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(self.memory))
        self.tracer = provider.get_tracer("agent-app")
        self.install()

    def install(self) -> OpenTelemetry:
        """(Re)create the callback: it reads its environment when it is made."""
        litellm.logging_callback_manager._reset_all_callbacks()
        self.callback = OpenTelemetry(tracer_provider=self.provider)
        litellm.callbacks = [self.callback]
        return self.callback

    def complete(self, **kwargs):
        kwargs.setdefault("mock_response", ANSWER)
        return litellm.completion(model=MODEL, messages=MESSAGES, **kwargs)

    def recorded(self, count: int, timeout: float = 15.0) -> list:
        assert wait_until(lambda: len(self.memory.get_finished_spans()) >= count, timeout), (
            [s.name for s in self.memory.get_finished_spans()])
        time.sleep(0.1)  # nothing more is coming: check
        spans = list(self.memory.get_finished_spans())
        assert len(spans) == count, [s.name for s in spans]
        return spans


def _reset_litellm() -> None:
    litellm.logging_callback_manager._reset_all_callbacks()


@pytest.fixture
def rig(agentmon_stack) -> Iterator[LiteLLMRig]:
    yield LiteLLMRig(agentmon_stack.tracer_provider(**{"service.name": "agent-app"}))
    _reset_litellm()


def _cost(spans) -> float:
    return sum(s.attributes.get("gen_ai.cost.total_cost", 0.0) for s in spans if s.name == "litellm_request")


def _stats(stack, agent_id: str) -> dict:
    return stack.get(f"/agents/{agent_id}/stats")


def _check_usage(stats: dict, *, runs: int, llm_calls: int, cost: float, errors: int = 0) -> None:
    assert (stats["runs"], stats["llm_calls"], stats["errors"]) == (runs, llm_calls, errors), stats
    assert (stats["input_tokens"], stats["output_tokens"]) == (llm_calls * INPUT_TOKENS, llm_calls * OUTPUT_TOKENS)
    assert cost > 0 and math.isclose(stats["cost_usd"], cost, rel_tol=1e-6, abs_tol=1e-9), (stats["cost_usd"], cost)


# ---- the helpers, on their own ---------------------------------------------------------------


def test_agent_metadata_names_the_agent_and_the_current_span() -> None:
    from integrations.client import RegisteredAgent

    agent = RegisteredAgent("id-1", "sql-bot", "vanna", "default-project", "conn-1")
    assert agent_metadata(agent) == {"requester_metadata": {
        "agent_id": "id-1", "agent_name": "sql-bot", "agent_type": "vanna", "agent_external_id": "conn-1"}}
    assert agent_metadata("nightly-bot", metadata={"tags": ["x"], "requester_metadata": {"team": "a"}}) == {
        "tags": ["x"], "requester_metadata": {"team": "a", "agent_name": "nightly-bot"}}
    provider = TracerProvider()
    with provider.get_tracer("t").start_as_current_span("run") as span:
        assert agent_metadata()[PARENT_SPAN_KEY] is span
        header = traceparent()
        context = span.get_span_context()
        assert header == f"00-{context.trace_id:032x}-{context.span_id:016x}-{int(context.trace_flags):02x}"
        assert proxy_request_options(agent) == {
            "extra_body": {"metadata": {"agent_id": "id-1", "agent_name": "sql-bot", "agent_type": "vanna",
                                        "agent_external_id": "conn-1"}},
            "extra_headers": {"traceparent": header}}
        assert PARENT_SPAN_KEY not in agent_metadata(agent, parent=False)
    assert PARENT_SPAN_KEY not in agent_metadata(agent)  # no span: no parent
    remote = agent_metadata(parent=header)[PARENT_SPAN_KEY]
    assert remote.get_span_context().trace_id == span.get_span_context().trace_id
    assert remote.get_span_context().span_id == span.get_span_context().span_id
    assert agent_metadata(parent="garbage") == {}
    env = otel_environment("127.0.0.1:4317")
    assert env == {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                   "USE_OTEL_LITELLM_REQUEST_SPAN": "true",
                   "LITELLM_OTEL_BAGGAGE_METADATA_KEYS": ",".join(BAGGAGE_METADATA_KEYS)}
    with pytest.raises(ValueError):
        otel_environment(protocol="otlp_grpc")


# ---- what LiteLLM does by itself -------------------------------------------------------------


def test_litellm_inside_an_active_span_writes_onto_the_callers_span(monkeypatch) -> None:
    """LiteLLM 1.106.2 (default settings), called inside an active span WITHOUT an explicit parent:
    no litellm_request span; the call's attributes land on the caller's span. This is why
    agent_metadata() passes the parent explicitly and configure_otel() sets USE_OTEL_LITELLM_REQUEST_SPAN."""
    monkeypatch.delenv("USE_OTEL_LITELLM_REQUEST_SPAN", raising=False)
    provider = TracerProvider()
    rig = LiteLLMRig(provider)
    try:
        with rig.tracer.start_as_current_span("invoke_agent sql-bot", attributes={
                "gen_ai.operation.name": "invoke_agent", "metadata.agent_id": "a1"}):
            rig.complete()
            # LiteLLM records from a background thread: let it finish while the span is open.
            assert wait_until(lambda: any(s.name == "raw_gen_ai_request" for s in rig.memory.get_finished_spans()))
        spans = {s.name: s for s in rig.recorded(2)}
    finally:
        _reset_litellm()
    assert set(spans) == {"invoke_agent sql-bot", "raw_gen_ai_request"}
    run = spans["invoke_agent sql-bot"]
    # The agent span now reads as an LLM call: agentmon would count it as one, and not as a run.
    assert run.attributes["gen_ai.operation.name"] == "chat"
    assert run.attributes["gen_ai.usage.input_tokens"] == INPUT_TOKENS
    assert run.attributes["metadata.agent_id"] == "a1"
    assert spans["raw_gen_ai_request"].parent.span_id == run.context.span_id


# ---- (1) trace context -----------------------------------------------------------------------


@pytest.mark.parametrize("how", ["agent_metadata", "request_span_env"])
def test_calls_inside_a_run_are_child_spans_and_counted_once(agentmon_stack, rig, monkeypatch, how) -> None:
    """Two LLM calls in one run: each its own litellm_request child of the run (via the explicit parent
    agent_metadata passes, or LiteLLM's USE_OTEL_LITELLM_REQUEST_SPAN=true with no metadata at all)."""
    if how == "request_span_env":
        monkeypatch.setenv("USE_OTEL_LITELLM_REQUEST_SPAN", "true")
    else:
        monkeypatch.delenv("USE_OTEL_LITELLM_REQUEST_SPAN", raising=False)
    agent = agentmon_stack.client().register("sql-bot", "custom")
    with agent_run(agent, input=MESSAGES[0]["content"], tracer=rig.tracer) as run:
        for _ in range(2):
            reply = rig.complete(**({"metadata": agent_metadata(agent)} if how == "agent_metadata" else {}))
            set_output(run, reply.choices[0].message.content)
    recorded = rig.recorded(5)
    run_id = run.get_span_context().span_id
    trace_id = format(run.get_span_context().trace_id, "032x")

    forwarded = agentmon_stack.forwarded(5)
    by_name: dict[str, list] = {}
    for span in forwarded:
        by_name.setdefault(span.name, []).append(span)
    assert {name: len(spans) for name, spans in by_name.items()} == {
        "invoke_agent sql-bot": 1, "litellm_request": 2, "raw_gen_ai_request": 2}
    assert all(s.trace_id == trace_id for s in forwarded)
    assert all(s.parent_span_id == format(run_id, "016x") for s in by_name["litellm_request"])
    assert {s.parent_span_id for s in by_name["raw_gen_ai_request"]} == {s.span_id for s in by_name["litellm_request"]}
    assert {s.stamp for s in forwarded} == {(agent.id, "sql-bot", "custom")}
    assert by_name["invoke_agent sql-bot"][0].attributes["gen_ai.operation.name"] == "invoke_agent"

    tree = agentmon_stack.stored_trace(trace_id, span_count=5)
    assert [s["is_llm"] for s in tree["spans"] if s["name"] == "litellm_request"] == [True, True]
    assert [s["name"] for s in tree["spans"] if s["is_run"]] == ["invoke_agent sql-bot"]
    _check_usage(_stats(agentmon_stack, agent.id), runs=1, llm_calls=2, cost=_cost(recorded))
    [row] = agentmon_stack.agents(search="sql-bot")
    assert (row["id"], row["type"]) == (agent.id, "custom")


def test_parent_passed_as_traceparent_after_the_run_ended(agentmon_stack, rig) -> None:
    """An LLM call made elsewhere (another thread or process) with only the run's traceparent, after
    the run span has already been exported: it still lands in the run's trace, under its agent."""
    agent = agentmon_stack.client().register("report-writer", "custom")
    with agent_run(agent, input="weekly report", tracer=rig.tracer):
        header = traceparent()
    assert agentmon_stack.forwarded(1)
    worker = threading.Thread(target=rig.complete, kwargs={"metadata": agent_metadata(parent=header)})
    worker.start()
    worker.join()
    recorded = rig.recorded(3)
    forwarded = agentmon_stack.forwarded(3)
    assert {s.name for s in forwarded} == {"invoke_agent report-writer", "litellm_request", "raw_gen_ai_request"}
    assert {s.trace_id for s in forwarded} == {header.split("-")[1]}
    assert {s.agent_id for s in forwarded} == {agent.id}
    agentmon_stack.stored_trace(header.split("-")[1], span_count=3)
    _check_usage(_stats(agentmon_stack, agent.id), runs=1, llm_calls=1, cost=_cost(recorded))


def test_async_calls_inside_a_run(agentmon_stack, rig) -> None:
    agent = agentmon_stack.client().register("async-bot", "custom")

    async def run() -> int:
        with agent_run(agent, input="q", tracer=rig.tracer) as span:
            await litellm.acompletion(model=MODEL, messages=MESSAGES, mock_response=ANSWER,
                                      metadata=agent_metadata(agent))
        deadline = time.monotonic() + 15
        while len(rig.memory.get_finished_spans()) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # LiteLLM logs from tasks on this loop: keep it running
        return span.get_span_context().trace_id

    trace_id = asyncio.run(run())
    recorded = rig.recorded(3)
    forwarded = agentmon_stack.forwarded(3)
    assert {s.agent_id for s in forwarded} == {agent.id}
    assert {s.trace_id for s in forwarded} == {format(trace_id, "032x")}
    agentmon_stack.stored_trace(trace_id, span_count=3)
    _check_usage(_stats(agentmon_stack, agent.id), runs=1, llm_calls=1, cost=_cost(recorded))


# ---- (2) requester metadata, no trace context --------------------------------------------------


def test_requester_metadata_alone_names_the_agent(agentmon_stack, rig) -> None:
    """Bare calls (no span around them): LiteLLM keeps only metadata.requester_metadata, a Python repr.
    A registered agent is named by its id; an unknown name becomes a new agent."""
    agent = agentmon_stack.client().register("classifier", "custom")
    rig.complete(metadata=agent_metadata(agent))
    rig.complete(metadata=agent_metadata("nightly-digest"))
    recorded = rig.recorded(4)
    reprs = {s.attributes["metadata.requester_metadata"] for s in recorded if s.name == "litellm_request"}
    assert f"{{'agent_id': '{agent.id}', 'agent_name': 'classifier', 'agent_type': 'custom'}}" in reprs

    forwarded = agentmon_stack.forwarded(4)
    new_id = AgentIdentity(name="nightly-digest").agent_id
    stamps: dict[str, set] = {}
    for span in forwarded:
        stamps.setdefault(span.trace_id, set()).add(span.stamp)
    assert sorted(stamps.values(), key=str) == sorted(
        [{(agent.id, "classifier", "custom")}, {(new_id, "nightly-digest", "custom")}], key=str)
    for trace_id in stamps:
        agentmon_stack.stored_trace(trace_id, span_count=2)
    # A call is not a run: no run, one LLM call each.
    for agent_id, name in ((agent.id, "classifier"), (new_id, "nightly-digest")):
        calls = [s for s in recorded if s.name == "litellm_request"
                 and f"'agent_name': '{name}'" in s.attributes["metadata.requester_metadata"]]
        _check_usage(_stats(agentmon_stack, agent_id), runs=0, llm_calls=1, cost=_cost(calls))
    assert wait_until(lambda: any(a["id"] == new_id for a in agentmon_stack.agents()))
    [row] = [a for a in agentmon_stack.agents() if a["id"] == new_id]
    assert (row["name"], row["type"]) == ("nightly-digest", "custom")


# ---- (3) LITELLM_OTEL_BAGGAGE_METADATA_KEYS ------------------------------------------------------


@pytest.fixture
def baggage_only_stack(tmp_path, monkeypatch, request):
    """agentmon without the rules that read LiteLLM's requester-metadata repr: only litellm.metadata.*."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("disable: [litellm-requester-metadata, litellm-spend-logs-metadata]\n")
    monkeypatch.setenv("AGENTMON_RULES_FILE", str(rules))  # read by Settings when the stack starts
    stack = request.getfixturevalue("agentmon_stack")
    assert stack.settings.rules_file == rules
    yield stack
    _reset_litellm()


def test_baggage_metadata_keys_name_the_agent(baggage_only_stack, monkeypatch) -> None:
    agentmon_stack = baggage_only_stack
    agent = agentmon_stack.client().register("router-bot", "custom")
    monkeypatch.delenv("LITELLM_OTEL_BAGGAGE_METADATA_KEYS", raising=False)
    rig = LiteLLMRig(agentmon_stack.tracer_provider())
    rig.complete(metadata=agent_metadata(agent))  # control: without the keys, nothing names the agent
    rig.recorded(2)
    assert {s.agent_id for s in agentmon_stack.forwarded(2)} == {None}

    monkeypatch.setenv("LITELLM_OTEL_BAGGAGE_METADATA_KEYS",
                       otel_environment()["LITELLM_OTEL_BAGGAGE_METADATA_KEYS"])
    rig.install()
    rig.complete(metadata=agent_metadata(agent))
    recorded = rig.recorded(4)
    [call] = [s for s in recorded[2:] if s.name == "litellm_request"]
    assert call.attributes["litellm.metadata.agent_id"] == agent.id
    assert call.attributes["litellm.metadata.agent_name"] == "router-bot"
    assert call.attributes["litellm.metadata.agent_type"] == "custom"
    forwarded = agentmon_stack.forwarded(4)[2:]
    assert {s.stamp for s in forwarded} == {(agent.id, "router-bot", "custom")}
    agentmon_stack.stored_trace(forwarded[0].trace_id, span_count=2)
    _check_usage(_stats(agentmon_stack, agent.id), runs=0, llm_calls=1, cost=_cost([call]))


# ---- configure_otel, in a fresh process as a user runs it ---------------------------------------

SCRIPT = """
import json, os, sys, time
from opentelemetry import trace
from integrations.litellm import agent_metadata, configure_otel

configure_otel(sys.argv[1], protocol=sys.argv[2], service_name="sql-service")
import litellm
from integrations.client import AgentmonClient
from integrations.runs import agent_run

agent = AgentmonClient().register("env-bot", "custom")
messages = [{"role": "user", "content": "hi"}]
with agent_run(agent, input="hi") as run:  # the global tracer: LiteLLM's provider, made by configure_otel
    litellm.completion(model="gpt-4o-mini", messages=messages, mock_response="x", metadata=agent_metadata(agent))
    litellm.completion(model="gpt-4o-mini", messages=messages, mock_response="y")  # no helper at all
    trace_id = format(run.get_span_context().trace_id, "032x")
time.sleep(1)  # LiteLLM records from a background thread
trace.get_tracer_provider().force_flush()
print(json.dumps({"trace_id": trace_id, "agent_id": agent.id}))
"""


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_configure_otel_in_a_fresh_process(agentmon_stack, protocol) -> None:
    endpoint = (agentmon_stack.otlp_grpc_endpoint if protocol == "grpc" else agentmon_stack.otlp_http_endpoint)
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("OTEL_", "LITELLM_OTEL", "USE_OTEL"))}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", AGENTMON_URL=agentmon_stack.url,
               AGENTMON_API_KEY=agentmon_stack.api_key, OTEL_BSP_SCHEDULE_DELAY="100")
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(SCRIPT), endpoint, protocol], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])

    forwarded = agentmon_stack.forwarded(5)
    assert sorted(s.name for s in forwarded) == sorted(
        ["invoke_agent env-bot", "litellm_request", "litellm_request", "raw_gen_ai_request", "raw_gen_ai_request"])
    assert {s.trace_id for s in forwarded} == {out["trace_id"]}
    assert {s.agent_id for s in forwarded} == {out["agent_id"]}
    assert {s.resource["service.name"] for s in forwarded} == {"sql-service"}
    tree = agentmon_stack.stored_trace(out["trace_id"], span_count=5)
    cost = sum(s["cost_usd"] for s in tree["spans"] if s["is_llm"])
    _check_usage(_stats(agentmon_stack, out["agent_id"]), runs=1, llm_calls=2, cost=cost)


# ---- the LiteLLM proxy ---------------------------------------------------------------------------

PROXY_KEY = "sk-agentmon-test-7f3c9a1e5b2d4c6f"
PROXY_CONFIG = f"""
model_list:
  - model_name: {MODEL}
    litellm_params:
      model: openai/{MODEL}
      api_key: sk-not-used
      mock_response: "{ANSWER}"
litellm_settings:
  callbacks: ["otel"]
"""


@pytest.fixture
def litellm_proxy(agentmon_stack, tmp_path) -> Iterator[str]:
    """``litellm --config`` (the real proxy) exporting to the enricher; its URL."""
    config = tmp_path / "litellm.yaml"
    config.write_text(PROXY_CONFIG)
    port = closed_port()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("OTEL_", "LITELLM_OTEL", "USE_OTEL"))}
    env.update(otel_environment(f"http://{agentmon_stack.otlp_grpc_endpoint}", service_name="litellm-proxy"))
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_MASTER_KEY=PROXY_KEY, OTEL_BSP_SCHEDULE_DELAY="100")
    with running_litellm_proxy(config, port, env=env, cwd=tmp_path, log_path=tmp_path / "proxy.log") as url:
        yield url


def test_proxy_call_joins_the_callers_run(agentmon_stack, litellm_proxy) -> None:
    """An agent calls the proxy with the OpenAI SDK: body metadata and the traceparent header
    (proxy_request_options) put the proxy's spans in the agent's trace, under its agent."""
    import openai

    agent = agentmon_stack.client().register("proxy-bot", "custom")
    tracer = agentmon_stack.tracer_provider(**{"service.name": "agent-app"}).get_tracer("agent-app")
    client = openai.OpenAI(base_url=f"{litellm_proxy}/v1", api_key=PROXY_KEY, max_retries=0)
    with agent_run(agent, input="q", tracer=tracer) as run:
        reply = client.chat.completions.create(model=MODEL, messages=MESSAGES, **proxy_request_options(agent))
    assert reply.choices[0].message.content == ANSWER
    trace_id = format(run.get_span_context().trace_id, "032x")

    def in_trace() -> list:
        return [s for s in agentmon_stack.forwarded() if s.trace_id == trace_id]

    wanted = {"invoke_agent proxy-bot", "Received Proxy Server Request", "litellm_request", "raw_gen_ai_request"}
    assert wait_until(lambda: wanted <= {s.name for s in in_trace()}, 20), [s.name for s in in_trace()]
    time.sleep(0.5)
    spans = in_trace()
    assert {s.agent_id for s in spans} == {agent.id}, [(s.name, s.agent_id) for s in spans]
    [call] = [s for s in spans if s.name == "litellm_request"]
    assert f"'agent_id': '{agent.id}'" in call.attributes["metadata.requester_metadata"]
    assert call.attributes["litellm.metadata.agent_id"] == agent.id
    assert call.attributes["gen_ai.usage.input_tokens"] == INPUT_TOKENS
    [proxy_span] = [s for s in spans if s.name == "Received Proxy Server Request"]
    assert call.parent_span_id == proxy_span.span_id
    assert proxy_span.resource["service.name"] == "litellm-proxy"
    agentmon_stack.stored_trace(trace_id, span_count=len(spans))

    # Body metadata alone (no run, no traceparent): the proxy's trace is the agent's all the same.
    client.chat.completions.create(model=MODEL, messages=MESSAGES, **proxy_request_options(agent, parent=False))

    def bare() -> list:
        traces = {s.trace_id for s in agentmon_stack.forwarded() if s.name == "litellm_request"} - {trace_id}
        return [s for s in agentmon_stack.forwarded() if s.trace_id in traces]

    assert wait_until(lambda: {"Received Proxy Server Request", "litellm_request"} <= {s.name for s in bare()}, 20)
    time.sleep(0.5)
    assert {s.agent_id for s in bare()} == {agent.id}, [(s.name, s.agent_id) for s in bare()]
    bare_trace = bare()[0].trace_id
    agentmon_stack.stored_trace(bare_trace, span_count=len(bare()))

    # One run, two LLM calls (the proxy's litellm_request spans: cost as LiteLLM reported it).
    calls = [s for s in agentmon_stack.forwarded() if s.name == "litellm_request"]
    assert len(calls) == 2 and all(c.attributes["gen_ai.usage.output_tokens"] == OUTPUT_TOKENS for c in calls)
    cost = sum(c.attributes["gen_ai.cost.total_cost"] for c in calls)
    _check_usage(_stats(agentmon_stack, agent.id), runs=1, llm_calls=2, cost=cost)
