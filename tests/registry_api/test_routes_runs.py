"""POST /agents/{id}/trace/start and /trace/end against a real enricher (in front of the
test OTLP collector): the spans they make, and every error answer."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry.propagate import extract
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from agentmon.config import Settings
from enricher.enrichment import RUN_ANNOUNCE_KEY
from enricher.service import Enricher
from registry_api.app import create_app
from registry_api.runs import EnricherUnavailable, OtlpRunExporter, RunService
from registry_api.runs.spans import MAX_ATTRIBUTE_TEXT, MAX_ATTRIBUTES, MAX_TEXT, RunAgent
from registry_api.runs.table import ClosedRun, OpenRun, RunClosed, RunNotFound, RunTable
from registry_api.store.migrate import upgrade_registry
from tests.enricher.conftest import collector, start_enricher, tracer_provider, wait_until  # noqa: F401 (fixtures)
from tests.support.otlp_sink import OtlpTestSink, any_value

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def api_for(tmp_path) -> Iterator[Callable[..., TestClient]]:
    """A running registry API (lifespan entered) whose runs go to ``enricher`` (or ``endpoint``)."""
    clients: list[TestClient] = []

    def make(enricher: Enricher | None = None, *, endpoint: str | None = None, announce_every: float | None = None,
             **settings: Any) -> TestClient:
        if enricher is not None:
            settings.setdefault("registry_url", enricher.settings.registry_url)
            endpoint = endpoint or f"127.0.0.1:{enricher.grpc_port}"
        if "registry_url" not in settings:
            settings["registry_url"] = f"sqlite:///{tmp_path / 'api-registry.db'}"
            upgrade_registry(settings["registry_url"])
        app = create_app(Settings(data_dir=tmp_path / "api", runs_otlp_endpoint=endpoint, **settings))
        if announce_every is not None:
            app.state.runs.exporter.close()
            app.state.runs = RunService(OtlpRunExporter(endpoint), max_open=app.state.settings.runs_max_open,
                                        max_seconds=app.state.settings.run_max_seconds, announce_every=announce_every)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def _register(api: TestClient, name: str = "report-bot", **extra: Any) -> dict:
    response = api.post("/agents/register", json={"name": name, "type": "custom", **extra})
    assert response.status_code in (200, 201), response.text
    return response.json()


def _start(api: TestClient, agent_id: str, **body: Any) -> dict:
    response = api.post(f"/agents/{agent_id}/trace/start", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def _end(api: TestClient, agent_id: str, run: dict, **body: Any):
    return api.post(f"/agents/{agent_id}/trace/end",
                    json={"trace_id": run["trace_id"], "span_id": run["span_id"], **body})


def _span_of(collector: OtlpTestSink, run: dict, timeout: float = 5.0) -> Span:
    found: list[Span] = []

    def arrived() -> bool:
        found[:] = [s for _, _, s in collector.spans() if s.span_id.hex() == run["span_id"]]
        return bool(found)

    assert wait_until(arrived, timeout), f"no span {run['span_id']} arrived"
    return found[0]


def _attrs(span: Span) -> dict[str, Any]:
    return {kv.key: any_value(kv.value) for kv in span.attributes}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ---- the span a run makes --------------------------------------------------------------------


def test_a_run_becomes_one_stamped_agent_span(start_enricher, collector, api_for) -> None:
    enricher = start_enricher()
    api = api_for(enricher)
    agent = _register(api, external_id="conn-7")
    before = time.time_ns()
    run = _start(api, agent["id"], input="What were sales in May?",
                 attributes={"session.id": "s-1", "retries": 2, "temperature": 0.5, "cached": False})
    assert len(run["trace_id"]) == 32 and len(run["span_id"]) == 16
    assert run["traceparent"] == f"00-{run['trace_id']}-{run['span_id']}-01"
    time.sleep(0.05)
    ended = _end(api, agent["id"], run, output={"rows": 3}, attributes={"retries": 3, "tool": "sql"})
    assert ended.status_code == 200, ended.text
    body = ended.json()
    assert body["trace_id"] == run["trace_id"] and body["span_id"] == run["span_id"]
    assert body["status"] == "ok" and 50 <= body["duration_ms"] < 5000

    span = _span_of(collector, run)
    assert span.name == "invoke_agent report-bot"
    assert span.trace_id.hex() == run["trace_id"] and span.parent_span_id == b""
    assert before <= span.start_time_unix_nano < span.end_time_unix_nano
    assert abs((span.end_time_unix_nano - span.start_time_unix_nano) / 1e6 - body["duration_ms"]) < 0.01
    assert span.status.code == Status.STATUS_CODE_UNSET
    attrs = _attrs(span)
    assert attrs["gen_ai.operation.name"] == "invoke_agent" and attrs["gen_ai.agent.name"] == "report-bot"
    assert attrs["metadata.agent_id"] == agent["id"] and attrs["metadata.agent_name"] == "report-bot"
    assert attrs["metadata.agent_type"] == "custom" and attrs["metadata.agent_external_id"] == "conn-7"
    assert attrs["metadata.agent_root"] == "true"  # stamped by the enricher: it counts as a run
    assert attrs["input.value"] == "What were sales in May?" and attrs["output.value"] == '{"rows":3}'
    assert attrs["session.id"] == "s-1" and attrs["retries"] == 3 and attrs["tool"] == "sql"
    assert attrs["temperature"] == 0.5 and attrs["cached"] is False
    assert RUN_ANNOUNCE_KEY not in attrs
    # The announcement sent at start went to the enricher and no further.
    time.sleep(0.3)
    assert collector.span_count() == 1
    assert enricher.metrics.run_announcements._value.get() == 1


def test_a_traceparent_makes_the_run_a_child_of_the_callers_span(start_enricher, collector, api_for) -> None:
    enricher = start_enricher()
    api = api_for(enricher)
    agent = _register(api)
    run = _start(api, agent["id"], traceparent=TRACEPARENT)
    assert run["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and run["span_id"] != "b7ad6b7169203331"
    assert _end(api, agent["id"], run).status_code == 200
    span = _span_of(collector, run)
    assert span.trace_id.hex() == "0af7651916cd43dd8448eb211c80319c"
    assert span.parent_span_id.hex() == "b7ad6b7169203331"
    assert _attrs(span)["metadata.agent_root"] == "true"  # its parent is no span of this agent


def test_an_error_makes_an_error_span(start_enricher, collector, api_for) -> None:
    enricher = start_enricher()
    api = api_for(enricher)
    agent = _register(api)
    run = _start(api, agent["id"])
    ended = _end(api, agent["id"], run, error="the SQL tool timed out")
    assert ended.status_code == 200 and ended.json()["status"] == "error"
    span = _span_of(collector, run)
    assert span.status.code == Status.STATUS_CODE_ERROR and span.status.message == "the SQL tool timed out"
    assert "output.value" not in _attrs(span)


def test_texts_and_attribute_values_are_clipped(start_enricher, collector, api_for) -> None:
    enricher = start_enricher()
    api = api_for(enricher)
    agent = _register(api)
    run = _start(api, agent["id"], input="i" * 10_000, attributes={"note": "n" * 5000})
    assert _end(api, agent["id"], run, output="o" * 10_000, error="e" * 10_000).status_code == 200
    span = _span_of(collector, run)
    attrs = _attrs(span)
    assert len(attrs["input.value"]) == MAX_TEXT and attrs["input.value"].endswith("\u2026")
    assert len(attrs["output.value"]) == MAX_TEXT and len(span.status.message) == MAX_TEXT
    assert len(attrs["note"]) == MAX_ATTRIBUTE_TEXT


def test_a_start_without_a_body_is_a_plain_run(start_enricher, collector, api_for) -> None:
    enricher = start_enricher()
    api = api_for(enricher)
    agent = _register(api)
    response = api.post(f"/agents/{agent['id']}/trace/start")
    assert response.status_code == 201, response.text
    assert _end(api, agent["id"], response.json()).status_code == 200
    assert "input.value" not in _attrs(_span_of(collector, response.json()))


# ---- clear answers ---------------------------------------------------------------------------


def test_end_answers_404_409_for_unknown_repeated_and_foreign_runs(start_enricher, collector, api_for) -> None:
    enricher = start_enricher()
    api = api_for(enricher)
    agent, other = _register(api, "bot-a"), _register(api, "bot-b")
    assert api.post("/agents/no-such-agent/trace/start", json={}).status_code == 404

    never = {"trace_id": "ab" * 16, "span_id": "cd" * 8}
    response = _end(api, agent["id"], never)
    assert response.status_code == 404 and "not open" in response.json()["detail"]

    run = _start(api, agent["id"])
    foreign = _end(api, other["id"], run)
    assert foreign.status_code == 409 and "another agent" in foreign.json()["detail"]
    assert _end(api, "no-such-agent", run).status_code == 409
    assert _end(api, agent["id"], run).status_code == 200  # still open after the refused ends
    again = _end(api, agent["id"], run)
    assert again.status_code == 409 and "already ended" in again.json()["detail"]
    assert _end(api, other["id"], run).status_code == 409
    time.sleep(0.3)
    assert collector.span_count() == 1  # one span, however many ends


@pytest.mark.parametrize(
    "body",
    [
        {"traceparent": "not-a-traceparent"},
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01"},  # short span id
        {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},  # zero trace id
        {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01"},  # zero span id
        {"traceparent": "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},  # forbidden version
        {"traceparent": TRACEPARENT + "-extra"},  # version 00 has no more fields
        {"attributes": {"metadata.agent_id": "someone-else"}},
        {"attributes": {"metadata.agent_name": "x"}},
        {"attributes": {"gen_ai.operation.name": "chat"}},
        {"attributes": {"agentmon.announce": "run"}},
        {"attributes": {"input.value": "x"}},
        {"attributes": {"nested": {"a": 1}}},
        {"attributes": {"list": [1, 2]}},
        {"attributes": {"nothing": None}},
        {"attributes": {"": "empty key"}},
        {"attributes": {"k" * 256: "long key"}},
        {"attributes": {"big": 2**64}},
        {"attributes": {f"a{i}": i for i in range(MAX_ATTRIBUTES + 1)}},
        {"unknown_field": 1},
    ],
)
def test_start_refuses_malformed_input_with_422(body, api_for) -> None:
    api = api_for(endpoint="127.0.0.1:1")  # never reached: validation comes first
    agent = _register(api)
    response = api.post(f"/agents/{agent['id']}/trace/start", json=body)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize(
    "body",
    [
        {"trace_id": "xyz", "span_id": "cd" * 8},
        {"trace_id": "ab" * 15, "span_id": "cd" * 8},
        {"trace_id": "00" * 16, "span_id": "cd" * 8},
        {"trace_id": "ab" * 16, "span_id": "cd" * 7},
        {"trace_id": "ab" * 16, "span_id": "00" * 8},
        {"trace_id": "ab" * 16},
        {"span_id": "cd" * 8},
        {"trace_id": "ab" * 16, "span_id": "cd" * 8, "error": ""},
        {"trace_id": "ab" * 16, "span_id": "cd" * 8, "attributes": {"metadata.agent_type": "vanna"}},
        {"trace_id": "ab" * 16, "span_id": "cd" * 8, "status": "ok"},
    ],
)
def test_end_refuses_malformed_input_with_422(body, api_for) -> None:
    api = api_for(endpoint="127.0.0.1:1")
    agent = _register(api)
    assert api.post(f"/agents/{agent['id']}/trace/end", json=body).status_code == 422


def test_writes_need_the_api_key(start_enricher, collector, api_for) -> None:
    enricher = start_enricher()
    api = api_for(enricher, api_key="s3cret")
    key = {"X-API-Key": "s3cret"}
    agent = api.post("/agents/register", json={"name": "locked", "type": "custom"}, headers=key).json()
    assert api.post(f"/agents/{agent['id']}/trace/start", json={}).status_code == 401
    run = api.post(f"/agents/{agent['id']}/trace/start", json={}, headers=key).json()
    ids = {"trace_id": run["trace_id"], "span_id": run["span_id"]}
    assert api.post(f"/agents/{agent['id']}/trace/end", json=ids).status_code == 401
    ended = api.post(f"/agents/{agent['id']}/trace/end", json=ids, headers={"Authorization": "Bearer s3cret"})
    assert ended.status_code == 200


def test_too_many_open_runs_is_429_with_retry_after(start_enricher, collector, api_for) -> None:
    enricher = start_enricher()
    api = api_for(enricher, runs_max_open=2)
    agent = _register(api)
    first, _second = _start(api, agent["id"]), _start(api, agent["id"])
    refused = api.post(f"/agents/{agent['id']}/trace/start", json={})
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0
    assert _end(api, agent["id"], first).status_code == 200
    _start(api, agent["id"])  # a slot is free again
    assert api.app.state.runs.table.open_count == 2


def test_an_unreachable_enricher_at_start_is_503_and_opens_nothing(api_for) -> None:
    api = api_for(endpoint=f"127.0.0.1:{_free_port()}")
    agent = _register(api)
    response = api.post(f"/agents/{agent['id']}/trace/start", json={"input": "x"})
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert api.app.state.runs.table.open_count == 0


def test_an_unreachable_enricher_at_end_is_503_and_the_run_stays_open_for_a_retry(
    start_enricher, collector, api_for
) -> None:
    enricher = start_enricher()
    port = enricher.grpc_port
    api = api_for(enricher)
    agent = _register(api)
    run = _start(api, agent["id"], input="long job")
    enricher.stop(timeout=5)

    response = _end(api, agent["id"], run, output="done")
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0
    assert api.app.state.runs.table.open_count == 1

    # The enricher comes back on the same port; the client retries its end until it is taken.
    restarted = Enricher(enricher.settings.model_copy(update={"grpc_port": port}))
    restarted.start()
    try:
        deadline = time.monotonic() + 15
        while True:
            response = _end(api, agent["id"], run, output="done")
            if response.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert response.status_code == 200, response.text
        span = _span_of(collector, run)
        assert _attrs(span)["output.value"] == "done" and _attrs(span)["input.value"] == "long job"
        assert _end(api, agent["id"], run).status_code == 409
        time.sleep(0.3)
        assert [s.span_id.hex() for _, _, s in collector.spans()].count(run["span_id"]) == 1
    finally:
        restarted.stop(timeout=5)


# ---- expiry, re-announcement, shutdown ---------------------------------------------------------


def test_a_run_not_ended_in_time_is_closed_as_an_error_and_a_late_end_is_409(
    start_enricher, collector, api_for
) -> None:
    enricher = start_enricher()
    api = api_for(enricher, run_max_seconds=0.3)
    agent = _register(api)
    run = _start(api, agent["id"], input="forgotten")
    span = _span_of(collector, run, timeout=5)
    assert span.status.code == Status.STATUS_CODE_ERROR
    assert span.status.message == "run not ended within 0.3 s"
    attrs = _attrs(span)
    assert attrs["error.type"] == "run_expired" and attrs["metadata.agent_root"] == "true"
    assert attrs["input.value"] == "forgotten"
    assert 250 <= (span.end_time_unix_nano - span.start_time_unix_nano) / 1e6 < 3000
    late = _end(api, agent["id"], run, output="too late")
    assert late.status_code == 409 and "expired" in late.json()["detail"]
    assert api.app.state.runs.table.open_count == 0


def test_a_quiet_long_run_stays_known_to_the_enricher_by_re_announcing(start_enricher, collector, api_for) -> None:
    enricher = start_enricher(hold_seconds=0.5)
    enricher.attributor._trace_ttl = 1.0  # 120 s by default: the enricher forgets quiet traces after it
    api = api_for(enricher, announce_every=0.3)
    agent = _register(api)
    run = _start(api, agent["id"])
    time.sleep(2.0)  # quiet for twice the trace TTL
    assert enricher.metrics.run_announcements._value.get() >= 3
    tracer = tracer_provider(enricher).get_tracer("llm")
    with tracer.start_as_current_span("chat late", context=extract({"traceparent": run["traceparent"]}),
                                      attributes={"gen_ai.operation.name": "chat"}):
        pass
    assert collector.wait_for_spans(1, 5)
    late = next(s for _, _, s in collector.spans() if s.name == "chat late")
    assert _attrs(late).get("metadata.agent_id") == agent["id"]
    assert enricher.metrics.spans_released_on_timeout._value.get() == 0


def test_shutdown_closes_open_runs_as_errors_and_stops_the_reaper(start_enricher, collector, api_for) -> None:
    enricher = start_enricher()
    api = api_for(enricher)
    agent = _register(api)
    run = _start(api, agent["id"])
    service = api.app.state.runs
    assert service.reaper_alive
    api.__exit__(None, None, None)
    assert not service.reaper_alive
    span = _span_of(collector, run)
    assert span.status.code == Status.STATUS_CODE_ERROR and "API stopped" in span.status.message
    assert _attrs(span)["error.type"] == "run_interrupted"
    with pytest.raises(EnricherUnavailable):  # the channel is closed
        service.exporter.send([span])


def test_run_spans_go_to_the_local_enricher_unless_configured(monkeypatch) -> None:
    for name in ("AGENTMON_HOST", "AGENTMON_GRPC_PORT", "AGENTMON_RUNS_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    assert Settings().runs_otlp_target == "127.0.0.1:4317"
    assert Settings(grpc_port=5317).runs_otlp_target == "127.0.0.1:5317"
    assert Settings(host="0.0.0.0").runs_otlp_target == "127.0.0.1:4317"
    assert Settings(host="10.1.2.3").runs_otlp_target == "10.1.2.3:4317"
    assert Settings(runs_otlp_endpoint="enricher:4317", grpc_port=1).runs_otlp_target == "enricher:4317"


# ---- the table's bounds ---------------------------------------------------------------------------


def _open_run(table: RunTable, n: int) -> OpenRun:
    run = OpenRun(agent=RunAgent("a", "a", "custom", "default-project"), trace_id=bytes([n]) * 16,
                  span_id=bytes([n]) * 8, parent_span_id=b"", start_ns=0, started=0.0, deadline=float(n),
                  input_text=None, attributes={}, announced=0.0)
    assert table.add(run)
    return run


def test_closed_runs_are_remembered_in_a_bounded_lru() -> None:
    table = RunTable(max_open=10, max_closed=2)
    runs = [_open_run(table, n) for n in range(1, 4)]
    for run in runs:
        table.close(table.claim(run.key, "a"), ClosedRun("a", expired=False, duration_ms=1.0, status="ok"))
    assert table.open_count == 0 and table.closed_count == 2
    with pytest.raises(RunNotFound):
        table.claim(runs[0].key, "a")  # the oldest is forgotten
    for run in runs[1:]:
        with pytest.raises(RunClosed):
            table.claim(run.key, "a")


def test_the_reaper_claims_only_runs_past_their_deadline() -> None:
    table = RunTable(max_open=10, max_closed=10)
    runs = [_open_run(table, n) for n in range(1, 5)]
    table.claim(runs[0].key, "a")  # being ended by a request: not the reaper's
    assert [r.span_id for r in table.claim_due(2.5)] == [runs[1].span_id]
    assert [r.span_id for r in table.claim_due(10.0)] == [runs[2].span_id, runs[3].span_id]
