"""A run reported over HTTP (trace/start, trace/end) by an agent that cannot speak OTLP, with
an LLM call made under the returned traceparent, through the real enricher into chDB: the
call is attributed at once although the run's span only comes after the hold expired, and
the stats count one run with its call and tokens."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from opentelemetry.propagate import extract

from agentmon.config import Settings
from enricher.service import Enricher
from registry_api.app import create_app
from registry_api.store.migrate import upgrade_registry
from tests.enricher.conftest import tracer_provider, wait_until

HOLD_SECONDS = 1.0


@pytest.fixture
def system(tmp_path, chdb_url, clickhouse_database):
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade_registry(url)
    settings = Settings(data_dir=tmp_path / "data", registry_url=url, grpc_port=0, http_port=0,
                        clickhouse_url=chdb_url, clickhouse_database=clickhouse_database,
                        hold_seconds=HOLD_SECONDS, registry_refresh_seconds=0.2)
    enricher = Enricher(settings)
    enricher.start()
    api_settings = settings.model_copy(update={"runs_otlp_endpoint": f"127.0.0.1:{enricher.grpc_port}"})
    with TestClient(create_app(api_settings), raise_server_exceptions=False) as client:
        yield enricher, client
    enricher.stop(timeout=5)


def _stored(enricher: Enricher) -> float:
    return enricher.metrics.spans_forwarded.labels("clickhouse")._value.get()


def test_an_http_run_and_its_llm_call_are_attributed_stored_and_counted(system) -> None:
    enricher, api = system
    agent = api.post("/agents/register", json={"name": "http-bot", "type": "custom"}).json()
    window = {"from": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
              "to": (datetime.now(UTC) + timedelta(minutes=5)).isoformat()}

    started = api.post(f"/agents/{agent['id']}/trace/start", json={"input": "summarise the report"})
    assert started.status_code == 201, started.text
    run = started.json()

    # What LiteLLM does with the traceparent it is handed: its call span is a child of the run.
    tracer = tracer_provider(enricher).get_tracer("litellm")
    with tracer.start_as_current_span(
        "litellm_request",
        context=extract({"traceparent": run["traceparent"]}),
        attributes={"gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.usage.input_tokens": 321, "gen_ai.usage.output_tokens": 45},
    ) as call:
        pass
    assert format(call.get_span_context().trace_id, "032x") == run["trace_id"]

    # The call is stored, stamped with the agent, before the run ends and although the hold
    # (1 s) expires long before the run's own span comes.
    assert wait_until(lambda: _stored(enricher) == 1, 10)
    time.sleep(HOLD_SECONDS + 0.5)
    tree = api.get(f"/traces/{run['trace_id']}").json()
    assert tree["span_count"] == 1
    assert [c["agent_id"] for c in tree["llm_calls"]] == [agent["id"]]

    ended = api.post(f"/agents/{agent['id']}/trace/end",
                     json={"trace_id": run["trace_id"], "span_id": run["span_id"], "output": "done"})
    assert ended.status_code == 200, ended.text
    assert wait_until(lambda: _stored(enricher) == 2, 10)

    stats = api.get(f"/agents/{agent['id']}/stats", params=window).json()
    assert stats["runs"] == 1 and stats["llm_calls"] == 1 and stats["errors"] == 0
    assert stats["input_tokens"] == 321 and stats["output_tokens"] == 45
    assert stats["cost_usd"] > 0
    assert abs(stats["p50_run_duration_ms"] - ended.json()["duration_ms"]) < 0.01

    traces = api.get(f"/agents/{agent['id']}/traces", params=window).json()
    assert traces["total"] == 1
    (item,) = traces["items"]
    assert item["trace_id"] == run["trace_id"] and item["status"] == "ok"
    assert item["llm_calls"] == 1 and item["input_tokens"] == 321

    tree = api.get(f"/traces/{run['trace_id']}").json()
    assert tree["span_count"] == 2  # the run and its call: the announcement is not stored
    (root,) = tree["roots"]
    assert root["name"] == "invoke_agent http-bot" and root["span_id"] == run["span_id"]
    assert [child["name"] for child in root["children"]] == ["litellm_request"]
    assert enricher.metrics.run_announcements._value.get() == 1
    assert enricher.metrics.spans_released_on_timeout._value.get() == 0


def test_an_expired_http_run_is_stored_as_a_failed_run(tmp_path, chdb_url, clickhouse_database) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    upgrade_registry(url)
    settings = Settings(data_dir=tmp_path / "data", registry_url=url, grpc_port=0, http_port=0,
                        clickhouse_url=chdb_url, clickhouse_database=clickhouse_database, hold_seconds=1.0,
                        registry_refresh_seconds=0.2)
    enricher = Enricher(settings)
    enricher.start()
    try:
        api_settings = settings.model_copy(update={"runs_otlp_endpoint": f"127.0.0.1:{enricher.grpc_port}",
                                                   "run_max_seconds": 0.5})
        with TestClient(create_app(api_settings), raise_server_exceptions=False) as api:
            agent = api.post("/agents/register", json={"name": "forgetful", "type": "custom"}).json()
            run = api.post(f"/agents/{agent['id']}/trace/start", json={}).json()
            assert wait_until(lambda: _stored(enricher) == 1, 10)
            stats = api.get(f"/agents/{agent['id']}/stats").json()
            assert stats["runs"] == 1 and stats["errors"] == 1 and stats["error_rate"] == 1.0
            failed = api.get(f"/agents/{agent['id']}/traces", params={"status": "error"}).json()
            assert [i["trace_id"] for i in failed["items"]] == [run["trace_id"]]
            late = api.post(f"/agents/{agent['id']}/trace/end",
                            json={"trace_id": run["trace_id"], "span_id": run["span_id"]})
            assert late.status_code == 409
    finally:
        enricher.stop(timeout=5)
