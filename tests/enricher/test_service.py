"""The enricher end to end: real OpenTelemetry SDK exporters in, a test collector out."""

from __future__ import annotations

import uuid

import httpx
from opentelemetry import context as otel_context
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from registry_api.store import AgentIdentity
from tests.enricher.conftest import stamped, tracer_provider, wait_until
from tests.support.otlp_http_sink import OtlpHttpTestSink

FLOW_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
CHATFLOW_ID = "9b2d5c1e-0f4a-4c3b-8e7d-1a2b3c4d5e6f"


def test_genai_agent_run_chat_span_exported_first_both_get_the_same_id(start_enricher, collector) -> None:
    enricher = start_enricher()
    tracer = tracer_provider(enricher).get_tracer("app")
    with tracer.start_as_current_span(
        "invoke_agent planner", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "planner"}
    ):
        with tracer.start_as_current_span("chat gpt-4o-mini", attributes={"gen_ai.operation.name": "chat"}):
            pass  # ends (and is exported) first, in its own request
    assert collector.wait_for_spans(2, 10)
    expected_id = AgentIdentity(name="planner").agent_id
    got = stamped(collector)
    assert got["chat gpt-4o-mini"] == got["invoke_agent planner"] == {
        "metadata.agent_id": expected_id,
        "metadata.agent_name": "planner",
        "metadata.agent_type": "custom",
    }
    roots = stamped(collector, ("metadata.agent_root",))
    assert roots == {"invoke_agent planner": {"metadata.agent_root": "true"}, "chat gpt-4o-mini": {}}
    assert wait_until(lambda: enricher.store.get(expected_id) is not None, 2.0)  # the row exists within 1-2 s
    assert [a.name for a in enricher.store.all()] == ["planner"]


def test_openinference_agent_over_http(start_enricher, collector) -> None:
    enricher = start_enricher()
    tracer = tracer_provider(enricher, http=True).get_tracer("openinference")
    with tracer.start_as_current_span("research", attributes={"openinference.span.kind": "AGENT", "agent.name": "researcher"}):
        with tracer.start_as_current_span("ChatOpenAI", attributes={"openinference.span.kind": "LLM"}):
            pass
        with tracer.start_as_current_span("search", attributes={"openinference.span.kind": "TOOL"}):
            pass
    assert collector.wait_for_spans(3, 10)
    got = stamped(collector)
    assert {got[name]["metadata.agent_name"] for name in ("research", "ChatOpenAI", "search")} == {"researcher"}
    assert len({got[name]["metadata.agent_id"] for name in got}) == 1


def test_forwarding_over_otlp_http_with_gzip(start_enricher) -> None:
    with OtlpHttpTestSink() as http_collector:
        enricher = start_enricher(otlp_forward_endpoint=f"http://{http_collector.endpoint}",
                                  otlp_forward_protocol="http/protobuf")
        tracer = tracer_provider(enricher).get_tracer("app")
        with tracer.start_as_current_span("invoke_agent triage", attributes={
            "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "triage"}):
            with tracer.start_as_current_span("chat gpt-4o", attributes={"gen_ai.operation.name": "chat"}):
                pass
        assert http_collector.wait_for_spans(2, 10)
        got = stamped(http_collector)
        assert got["chat gpt-4o"]["metadata.agent_id"] == got["invoke_agent triage"]["metadata.agent_id"] == (
            AgentIdentity(name="triage").agent_id
        )
        assert set(http_collector.content_encodings) == {"gzip"}


def test_litellm_span_with_requester_metadata_joins_the_agent_of_its_parent_trace(start_enricher, collector) -> None:
    enricher = start_enricher()
    tracer = tracer_provider(enricher).get_tracer("app")
    litellm = tracer_provider(enricher, **{"service.name": "litellm"}).get_tracer("litellm")
    with tracer.start_as_current_span(
        "invoke_agent billing", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "billing"}
    ) as agent_span:
        agent_trace = format(agent_span.get_span_context().trace_id, "032x")
        # LiteLLM runs outside the agent's context: its own trace, tied only by metadata (a Python repr).
        token = otel_context.attach(otel_context.Context())
        try:
            with litellm.start_as_current_span(
                "litellm_request",
                attributes={
                    "gen_ai.request.model": "gpt-4o-mini",
                    "metadata.requester_metadata": f"{{'parent_trace_id': '{agent_trace}', 'user': 'u1'}}",
                },
            ):
                with litellm.start_as_current_span("raw_gen_ai_request"):
                    pass
        finally:
            otel_context.detach(token)
    assert collector.wait_for_spans(3, 10)
    got = stamped(collector)
    billing = AgentIdentity(name="billing").agent_id
    assert got["litellm_request"]["metadata.agent_id"] == billing
    assert got["raw_gen_ai_request"]["metadata.agent_id"] == billing  # the rest of LiteLLM's trace too


def test_litellm_span_naming_its_agent_in_requester_metadata(start_enricher, collector) -> None:
    enricher = start_enricher()
    litellm = tracer_provider(enricher, **{"service.name": "litellm"}).get_tracer("litellm")
    with litellm.start_as_current_span(
        "litellm_request", attributes={"metadata.requester_metadata": "{'agent_name': 'sql-helper', 'agent_type': 'vanna'}"}
    ):
        pass
    assert collector.wait_for_spans(1, 10)
    expected = AgentIdentity(name="sql-helper", type="vanna")
    assert stamped(collector)["litellm_request"]["metadata.agent_id"] == expected.agent_id
    assert wait_until(lambda: enricher.store.get(expected.agent_id) is not None)
    assert enricher.store.get(expected.agent_id).type == "vanna"


def test_langflow_phoenix_llm_trace_of_its_own_joins_the_flow(start_enricher, collector) -> None:
    enricher = start_enricher()
    resource = {"service.name": "unknown_service:python", "openinference.project.name": "Support-Flow"}
    tracer = tracer_provider(enricher, **resource).get_tracer("openinference.instrumentation.langchain")
    with tracer.start_as_current_span("ChatOpenAI", attributes={"openinference.span.kind": "LLM"}):
        pass  # Langflow 1.13 + Phoenix: the LLM call is a root trace of its own
    with tracer.start_as_current_span(
        "Langflow",
        attributes={"langflow.flow_id": FLOW_ID, "langflow.flow_name": "Support Flow", "openinference.span.kind": "CHAIN"},
    ):
        with tracer.start_as_current_span("Chat Output", attributes={"openinference.span.kind": "CHAIN"}):
            pass
    assert collector.wait_for_spans(3, 10)
    flow = AgentIdentity(name="Support Flow", type="langflow", external_id=FLOW_ID)
    got = stamped(collector)
    assert {got[name].get("metadata.agent_id") for name in ("ChatOpenAI", "Langflow", "Chat Output")} == {flow.agent_id}
    assert wait_until(lambda: enricher.store.get(flow.agent_id) is not None)
    row = enricher.store.get(flow.agent_id)
    assert (row.type, row.external_id, row.name) == ("langflow", FLOW_ID, "Support Flow")


def test_flowise_trace_is_registered_with_its_chatflow_id(start_enricher, collector) -> None:
    enricher = start_enricher()
    resource = {"service.name": CHATFLOW_ID, "openinference.project.name": CHATFLOW_ID, "telemetry.sdk.language": "nodejs"}
    tracer = tracer_provider(enricher, **resource).get_tracer("@arizeai/openinference-instrumentation-langchain")
    with tracer.start_as_current_span("RunnableSequence", attributes={"openinference.span.kind": "CHAIN"}):
        with tracer.start_as_current_span("ChatOpenAI", attributes={"openinference.span.kind": "LLM", "llm.model_name": "gpt-4o-mini"}):
            pass
    assert collector.wait_for_spans(2, 10)
    flowise = AgentIdentity(name=f"flowise-{CHATFLOW_ID}", type="flowise", external_id=CHATFLOW_ID)
    assert {v["metadata.agent_id"] for v in stamped(collector).values()} == {flowise.agent_id}
    assert wait_until(lambda: enricher.store.get(flowise.agent_id) is not None)
    assert enricher.store.get(flowise.agent_id).type == "flowise"


def test_one_registry_row_per_agent_across_many_runs(start_enricher, collector) -> None:
    enricher = start_enricher()
    tracer = tracer_provider(enricher).get_tracer("app")
    for _ in range(5):
        for name in ("a1", "a2"):
            with tracer.start_as_current_span(f"invoke_agent {name}", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name}):
                with tracer.start_as_current_span("chat"):
                    pass
    assert collector.wait_for_spans(20, 10)
    assert wait_until(lambda: len(enricher.store.all()) == 2)
    assert sorted(a.name for a in enricher.store.all()) == ["a1", "a2"]
    assert wait_until(lambda: all(a.last_used_at is not None for a in enricher.store.all()), 10)  # batched flush


def test_traffic_of_no_agent_passes_through_unchanged(start_enricher, collector) -> None:
    enricher = start_enricher()
    provider = tracer_provider(enricher)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("plain", "1.2")
    with tracer.start_as_current_span("GET /orders", attributes={"http.method": "GET", "n": 3, "ok": True, "ratio": 0.5}):
        with tracer.start_as_current_span("SELECT orders", attributes={"db.system": "postgresql"}) as child:
            child.add_event("rows", {"count": 10})
    assert collector.wait_for_spans(2, 10)
    sent = {s.name: s for rs in encode_spans(memory.get_finished_spans()).resource_spans for ss in rs.scope_spans for s in ss.spans}
    received = {span.name: span for _, _, span in collector.spans()}
    assert received == sent  # byte-for-byte the same spans: nothing added, nothing lost
    assert enricher.store.all() == []


def test_spans_already_naming_another_agent_id_are_kept_and_counted(start_enricher, collector) -> None:
    enricher = start_enricher()
    tracer = tracer_provider(enricher).get_tracer("app")
    other = str(uuid.uuid4())
    with tracer.start_as_current_span("invoke_agent p", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "p"}):
        with tracer.start_as_current_span("chat", attributes={"metadata.agent_id": other}):
            pass
    assert collector.wait_for_spans(2, 10)
    assert stamped(collector)["chat"] == {"metadata.agent_id": other}
    assert enricher.metrics.agent_id_conflicts._value.get() == 1


def test_monitoring_off_drops_the_agents_spans_within_seconds(start_enricher, collector) -> None:
    enricher = start_enricher()
    tracer = tracer_provider(enricher).get_tracer("app")

    def run(tag: str) -> None:
        with tracer.start_as_current_span(f"invoke_agent {tag}", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "noisy"}):
            with tracer.start_as_current_span(f"chat {tag}"):
                pass

    run("before")
    assert collector.wait_for_spans(2, 10)
    agent_id = AgentIdentity(name="noisy").agent_id
    assert wait_until(lambda: enricher.store.get(agent_id) is not None)
    enricher.store.update(agent_id, {"monitoring_enabled": False})  # what PATCH /agents/{id} does
    assert wait_until(lambda: not enricher.directory.by_id(agent_id).monitored, 5)
    run("after")
    assert wait_until(lambda: enricher.metrics.spans_dropped.labels("monitoring_off")._value.get() == 2, 5)
    assert collector.span_count() == 2


def test_metrics_endpoint(start_enricher, collector) -> None:
    enricher = start_enricher()
    tracer = tracer_provider(enricher).get_tracer("app")
    with tracer.start_as_current_span("invoke_agent m", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "m"}):
        pass
    assert collector.wait_for_spans(1, 10)
    assert wait_until(lambda: "agentmon_agents_created_total 1.0" in httpx.get(f"http://127.0.0.1:{enricher.http_port}/metrics").text)
    text = httpx.get(f"http://127.0.0.1:{enricher.http_port}/metrics").text
    for line in ("agentmon_spans_received_total 1.0", "agentmon_spans_stamped_total 1.0", 'agentmon_spans_forwarded_total{sink="otlp"} 1.0', "agentmon_spans_held 0.0"):
        assert line in text, line


def test_registry_down_spans_still_stamped(start_enricher, collector, tmp_path) -> None:
    enricher = start_enricher(registry_url="mysql+pymysql://root@127.0.0.1:1/none")
    tracer = tracer_provider(enricher).get_tracer("app")
    with tracer.start_as_current_span("invoke_agent offline", attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "offline"}):
        pass
    assert collector.wait_for_spans(1, 10)
    assert stamped(collector)["invoke_agent offline"]["metadata.agent_id"] == AgentIdentity(name="offline").agent_id
    assert wait_until(lambda: enricher.metrics.registry_errors._value.get() >= 1)


def test_acknowledged_spans_survive_an_enricher_restart_with_the_collector_down(start_enricher, collector, tmp_path) -> None:
    collector.stop()
    first = start_enricher(data_dir=tmp_path / "state")
    tracer = tracer_provider(first).get_tracer("app")
    for i in range(5):
        with tracer.start_as_current_span(f"work {i}"):
            pass
    assert wait_until(lambda: first.metrics.spans_received._value.get() == 5)
    first.stop(timeout=1)  # cannot deliver: nothing is committed, the journal keeps it all
    collector.start()
    second = start_enricher(data_dir=tmp_path / "state", registry_url=first.settings.registry_url)
    assert collector.wait_for_spans(5, 15)
    assert sorted(span.name for _, _, span in collector.spans()) == [f"work {i}" for i in range(5)]
    assert wait_until(lambda: second.journal.pending_records == 0, 5)


def test_autogen_team_message_traces_tied_by_links_join_the_agent(start_enricher, collector) -> None:
    from opentelemetry import trace

    enricher = start_enricher()
    tracer = tracer_provider(enricher).get_tracer("autogen-core")
    with tracer.start_as_current_span(
        "invoke_agent writer",
        attributes={"gen_ai.system": "autogen", "gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "writer"},
    ) as agent_span:
        agent_context = agent_span.get_span_context()
    assert collector.wait_for_spans(1, 10)
    # The runtime starts a new trace for the next message, tied to the first only by a link.
    token = otel_context.attach(otel_context.Context())
    try:
        with tracer.start_as_current_span("autogen process writer_team/default", links=[trace.Link(agent_context)]):
            with tracer.start_as_current_span("chat gpt-4o"):
                pass
    finally:
        otel_context.detach(token)
    assert collector.wait_for_spans(3, 10)
    writer = AgentIdentity(name="writer", type="autogen").agent_id
    assert {v["metadata.agent_id"] for v in stamped(collector).values()} == {writer}
