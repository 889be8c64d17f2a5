"""Known traffic through the real pipeline (OpenTelemetry SDK -> enricher -> chDB), and
every figure of every stats endpoint equal to a ground truth computed independently
from the spans the SDK itself recorded."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from agentmon.config import Settings
from enricher.service import Enricher
from registry_api.app import create_app
from registry_api.stats import load_prices
from registry_api.store import AgentIdentity
from registry_api.store.migrate import upgrade_registry
from tests.enricher.conftest import tracer_provider, wait_until

PRICES = dict(zip(load_prices().models, zip(load_prices().input_per_million, load_prices().output_per_million, strict=True), strict=True))

# (agent, runs: [ (failed, [ (model, in, out, explicit cost or None, token key style) ]) ])
TRAFFIC = {
    "alpha": [
        (False, [("gpt-4o-mini", 120, 30, None, "current"), ("gpt-4o", 1000, 200, 0.0125, "current")]),
        (True, [("gpt-4o-mini", 50, 5, None, "deprecated")]),
        (False, [("claude-3-5-sonnet", 400, 100, None, "openinference")]),
    ],
    "beta": [
        (False, [("gpt-4.1-mini", 10, 20, None, "current"), ("unknown-model", 7, 7, None, "current")]),
    ],
}


def _llm_attributes(model: str, tokens_in: int, tokens_out: int, cost: float | None, style: str) -> dict:
    if style == "openinference":
        attrs = {"openinference.span.kind": "LLM", "llm.model_name": model,
                 "llm.token_count.prompt": tokens_in, "llm.token_count.completion": tokens_out}
    else:
        prefix = {"current": ("input_tokens", "output_tokens"), "deprecated": ("prompt_tokens", "completion_tokens")}[style]
        attrs = {"gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                 f"gen_ai.usage.{prefix[0]}": tokens_in, f"gen_ai.usage.{prefix[1]}": tokens_out}
    if cost is not None:
        attrs["gen_ai.cost.total_cost"] = cost
    return attrs


def _expected_cost(model: str, tokens_in: int, tokens_out: int, cost: float | None) -> float:
    if cost is not None:
        return cost
    price_in, price_out = PRICES.get(model, (0.0, 0.0))
    return (tokens_in * price_in + tokens_out * price_out) / 1e6


def _quantile_exact(values: list[int], level: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(level * len(ordered)))]


@pytest.fixture
def system(tmp_path, chdb_url, clickhouse_database):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade_registry(url)
    settings = Settings(data_dir=tmp_path / "data", registry_url=url, grpc_port=0, http_port=0,
                        clickhouse_url=chdb_url, clickhouse_database=clickhouse_database,
                        hold_seconds=3.0, registry_refresh_seconds=0.2)
    enricher = Enricher(settings)
    enricher.start()
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield enricher, client
    enricher.stop(timeout=5)


def test_every_stats_figure_equals_the_ground_truth(system) -> None:
    enricher, api = system
    provider = tracer_provider(enricher)
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("app")
    trace_llm: dict[int, list] = {}
    for agent, runs in TRAFFIC.items():
        for failed, calls in runs:
            with tracer.start_as_current_span(
                f"invoke_agent {agent}",
                # The agent span repeats the run's totals, as LiteLLM does on the caller's span:
                # they must not be counted twice.
                attributes={"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent,
                            "gen_ai.usage.input_tokens": sum(c[1] for c in calls)},
            ) as run_span:
                for call in calls:
                    with tracer.start_as_current_span(f"chat {call[0]}", attributes=_llm_attributes(*call)):
                        pass
                if failed:
                    run_span.set_status(Status(StatusCode.ERROR, "tool failed"))
            trace_llm[run_span.get_span_context().trace_id] = calls
    finished = memory.get_finished_spans()
    assert wait_until(lambda: enricher.metrics.spans_forwarded.labels("clickhouse")._value.get() == len(finished), 15)

    # Ground truth, from the SDK's spans.
    expected = {}
    for agent, runs in TRAFFIC.items():
        roots = [s for s in finished if s.name == f"invoke_agent {agent}"]
        durations = [s.end_time - s.start_time for s in roots]
        calls = [c for _, run_calls in runs for c in run_calls]
        agent_spans = [s for s in finished if s.context.trace_id in {r.context.trace_id for r in roots}]
        expected[agent] = {
            "runs": len(roots),
            "llm_calls": len(calls),
            "input_tokens": sum(c[1] for c in calls),
            "output_tokens": sum(c[2] for c in calls),
            "cost_usd": sum(_expected_cost(c[0], c[1], c[2], c[3]) for c in calls),
            "errors": sum(1 for failed, _ in runs if failed),
            "error_rate": sum(1 for failed, _ in runs if failed) / len(roots),
            "p50_run_duration_ms": _quantile_exact(durations, 0.5) / 1e6,
            "p95_run_duration_ms": _quantile_exact(durations, 0.95) / 1e6,
            "p99_run_duration_ms": _quantile_exact(durations, 0.99) / 1e6,
            "last_seen": datetime.fromtimestamp(max(s.end_time for s in agent_spans) / 1e9, tz=UTC),
            "roots": roots,
        }
    ids = {agent: AgentIdentity(name=agent).agent_id for agent in TRAFFIC}
    span = {"from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(), "to": (datetime.now(UTC) + timedelta(minutes=1)).isoformat()}

    def check_usage(got: dict, want: dict) -> None:
        for key in ("runs", "llm_calls", "input_tokens", "output_tokens", "errors"):
            assert got[key] == want[key], key
        for key in ("cost_usd", "error_rate", "p50_run_duration_ms", "p95_run_duration_ms", "p99_run_duration_ms"):
            assert math.isclose(got[key], want[key], rel_tol=1e-9, abs_tol=1e-9), key
        assert abs(datetime.fromisoformat(got["last_seen"]) - want["last_seen"]) < timedelta(milliseconds=1)

    overview = api.get("/stats/agents", params=span)
    assert overview.status_code == 200, overview.text
    rows = {row["name"]: row for row in overview.json()["items"]}
    assert set(rows) == set(TRAFFIC)
    for agent in TRAFFIC:
        check_usage(rows[agent], expected[agent])
        assert rows[agent]["agent_id"] == ids[agent] and rows[agent]["type"] == "custom"
        one = api.get(f"/agents/{ids[agent]}/stats", params=span).json()
        check_usage(one, expected[agent])

    # Time series: everything fell into the current hour bucket.
    series = api.get(f"/agents/{ids['alpha']}/timeseries", params={**span, "bucket": "1h"}).json()["buckets"]
    assert sum(b["runs"] for b in series) == expected["alpha"]["runs"]
    assert sum(b["errors"] for b in series) == expected["alpha"]["errors"]
    assert sum(b["llm_calls"] for b in series) == expected["alpha"]["llm_calls"]
    assert sum(b["input_tokens"] for b in series) == expected["alpha"]["input_tokens"]
    assert math.isclose(sum(b["cost_usd"] for b in series), expected["alpha"]["cost_usd"], rel_tol=1e-9)

    # Runs, newest first, each with its own LLM figures.
    traces = api.get(f"/agents/{ids['alpha']}/traces", params=span).json()
    assert traces["total"] == 3
    roots = sorted(expected["alpha"]["roots"], key=lambda s: s.start_time, reverse=True)
    assert [t["trace_id"] for t in traces["items"]] == [format(r.context.trace_id, "032x") for r in roots]
    for item, root in zip(traces["items"], roots, strict=True):
        calls = trace_llm[root.context.trace_id]
        assert item["status"] == ("error" if root.status.status_code == StatusCode.ERROR else "ok")
        assert item["llm_calls"] == len(calls)
        assert item["input_tokens"] == sum(c[1] for c in calls) and item["output_tokens"] == sum(c[2] for c in calls)
        assert math.isclose(item["cost_usd"], sum(_expected_cost(*c[:4]) for c in calls), rel_tol=1e-9, abs_tol=1e-12)
        assert math.isclose(item["duration_ms"], (root.end_time - root.start_time) / 1e6)
    failed_only = api.get(f"/agents/{ids['alpha']}/traces", params={**span, "status": "error"}).json()
    assert failed_only["total"] == 1 and failed_only["items"][0]["status"] == "error"
    paged = api.get(f"/agents/{ids['alpha']}/traces", params={**span, "limit": 1, "offset": 2}).json()
    assert paged["total"] == 3 and [i["trace_id"] for i in paged["items"]] == [traces["items"][2]["trace_id"]]

    # A trace's tree with its LLM calls.
    first = roots[-1]
    tree = api.get(f"/traces/{format(first.context.trace_id, '032x')}").json()
    assert tree["span_count"] == 3
    assert [r["name"] for r in tree["roots"]] == ["invoke_agent alpha"]
    assert sorted(c["name"] for c in tree["roots"][0]["children"]) == ["chat gpt-4o", "chat gpt-4o-mini"]
    by_model = {c["model"]: c for c in tree["llm_calls"]}
    assert by_model["gpt-4o"]["input_tokens"] == 1000 and math.isclose(by_model["gpt-4o"]["cost_usd"], 0.0125)
    assert math.isclose(by_model["gpt-4o-mini"]["cost_usd"], _expected_cost("gpt-4o-mini", 120, 30, None))


def test_stats_endpoints_validate_and_404(system) -> None:
    _, api = system
    assert api.get("/agents/nope/stats").status_code == 404
    assert api.get("/traces/" + "ab" * 16).status_code == 404
    assert api.get("/traces/not-hex").status_code == 422
    assert api.get("/stats/agents", params={"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}).status_code == 422
    assert api.get("/stats/agents", params={"from": "yesterday"}).status_code == 422
    registered = api.post("/agents/register", json={"name": "quiet", "type": "custom"}).json()
    assert api.get(f"/agents/{registered['id']}/timeseries", params={"bucket": "5x"}).status_code == 422
    assert api.get(f"/agents/{registered['id']}/timeseries", params={"bucket": "1s"}).status_code == 422
    quiet = api.get(f"/agents/{registered['id']}/stats").json()
    assert quiet["runs"] == 0 and quiet["p95_run_duration_ms"] is None
    evil = "x' OR 1=1 --"
    assert api.get(f"/agents/{registered['id']}/traces", params={"status": evil}).status_code == 422
