"""The registry API under generated requests (issue 7).

Schemathesis generates requests for every operation from the API's own OpenAPI document
(valid ones, and ones that break the schema) against the real app: SQLite registry, chDB
stats, and runs sent to a real enricher. No request may get a 5xx. Then SQL-injection
strings go into every parameter the OpenAPI document lists (path, query and body fields):
no 5xx, and no effect beyond what the request legitimately asks (the agents table and the
ClickHouse table are unchanged, apart from the rows such a request creates or renames,
which hold the strings literally). The SSE stream /stats/events never ends, so it is left
out of the generated calls and tested once on its own.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import pytest
import schemathesis
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from schemathesis import GenerationMode
from schemathesis.python import asgi

import clickhouse
from agentmon.config import Settings
from enricher.export.clickhouse_rows import COLUMNS, request_to_rows
from registry_api.app import create_app
from registry_api.store.migrate import upgrade_registry
from tests.enricher.conftest import collector, start_enricher  # noqa: F401 (fixtures)


STREAM = "/stats/events"
EXAMPLES = 1000
NOW_NS = time.time_ns()
RUN_TRACE = "5b8efff798038103d269b633813fc60c"
ERROR_TRACE = "0af7651916cd43dd8448eb211c80319c"


@dataclass
class Api:
    app: Any
    client: TestClient
    engine: sa.Engine
    clickhouse: Any
    database: str
    agent_ids: list[str] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=lambda: [RUN_TRACE, ERROR_TRACE])

    def agents(self) -> list[tuple]:
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text("SELECT * FROM agents ORDER BY id"))]

    def tables(self) -> list[str]:
        with self.engine.connect() as conn:
            return sorted(sa.inspect(conn).get_table_names())

    def spans(self) -> tuple:
        """Row count and a checksum of the ClickHouse traces table, and the database's tables."""
        count, digest = self.clickhouse.query(
            "SELECT count(), sum(cityHash64(TraceId, SpanId, SpanName, SpanAttributes)) "
            f"FROM {self.database}.otel_traces"
        ).result_rows[0]
        tables = self.clickhouse.query("SELECT name FROM system.tables WHERE database = {db:String} ORDER BY name",
                                       parameters={"db": self.database}).result_rows
        return count, digest, tables


def _span_request(agent_id: str) -> bytes:
    """Two runs of ``agent_id`` (one failed), each with an LLM call, an hour ago."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.add(key="service.name", value=AnyValue(string_value="fuzz-app"))
    spans = resource_spans.scope_spans.add().spans
    start = NOW_NS - 3600 * 10**9
    for trace, failed in ((RUN_TRACE, False), (ERROR_TRACE, True)):
        root = spans.add(trace_id=bytes.fromhex(trace), span_id=b"\x01" * 8, name="invoke_agent fuzz",
                         start_time_unix_nano=start, end_time_unix_nano=start + 2 * 10**9)
        if failed:
            root.status.code = 2
        call = spans.add(trace_id=bytes.fromhex(trace), span_id=b"\x02" * 8, parent_span_id=b"\x01" * 8,
                         name="chat gpt-4o", start_time_unix_nano=start + 10**8, end_time_unix_nano=start + 10**9)
        for span, attributes in (
            (root, {"metadata.agent_id": agent_id, "metadata.agent_root": "true",
                    "gen_ai.operation.name": "invoke_agent"}),
            (call, {"metadata.agent_id": agent_id, "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                    "gen_ai.usage.input_tokens": "12", "gen_ai.usage.output_tokens": "3"}),
        ):
            for key, value in attributes.items():
                span.attributes.add(key=key, value=AnyValue(string_value=value))
    return request.SerializeToString()


@pytest.fixture
def api(tmp_path, chdb_url, clickhouse_database, start_enricher) -> Iterator[Api]:  # noqa: F811
    enricher = start_enricher()
    url = f"sqlite:///{tmp_path / 'api-registry.db'}"
    upgrade_registry(url)
    app = create_app(Settings(
        data_dir=tmp_path / "api", registry_url=url, clickhouse_url=chdb_url, clickhouse_database=clickhouse_database,
        runs_otlp_endpoint=f"127.0.0.1:{enricher.grpc_port}",
    ))
    # Not entered: Schemathesis runs the app's lifespan itself (and ends it after the test).
    client = TestClient(app, raise_server_exceptions=False)
    ch = clickhouse.connect(chdb_url)
    state = Api(app, client, sa.create_engine(url), ch, clickhouse_database)
    for body in ({"name": "fuzz-agent", "type": "custom"},
                 {"name": "flow", "type": "langflow", "project_id": "team-a", "external_id": "flow-1",
                  "config": {"k": [1, {"x": None}]}},
                 {"name": "Ünïcode ✓", "type": "vanna"}):
        response = client.post("/agents/register", json=body)
        assert response.status_code == 201, response.text
        state.agent_ids.append(response.json()["id"])
    ch.insert(f"{clickhouse_database}.otel_traces", request_to_rows(_span_request(state.agent_ids[0])),
              column_names=list(COLUMNS))
    assert client.get(f"/agents/{state.agent_ids[0]}/stats").json()["runs"] == 2
    yield state
    app.state.runs.close()
    state.engine.dispose()
    ch.command(f"DROP DATABASE IF EXISTS {clickhouse_database}")


def _known(case, api: Api) -> None:
    """Point about half the generated ids at agents and traces that exist, so that the
    operations get past their 404s. Chosen from the case itself: a re-run is the same."""
    params = case.path_parameters or {}
    pick = zlib.crc32(repr(sorted(params.items())).encode())
    if "agent_id" in params and pick % 2:
        params["agent_id"] = api.agent_ids[pick % len(api.agent_ids)]
    if "trace_id" in params and pick % 2:
        params["trace_id"] = api.trace_ids[pick % len(api.trace_ids)]
    if case.path.endswith("/trace/end") and isinstance(case.body, dict) and pick % 2:
        # end a run that is open, with the rest of the generated body
        params["agent_id"] = api.agent_ids[0]
        run = api.client.post(f"/agents/{api.agent_ids[0]}/trace/start", json={}).json()
        case.body["trace_id"], case.body["span_id"] = run["trace_id"], run["span_id"]


def _check_answer(response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        body = response.json()  # every error is JSON with a detail
        assert "detail" in body, body
        assert "Traceback" not in response.text


# ---- generated from the OpenAPI document -------------------------------------------------


def test_no_operation_answers_a_server_error(api: Api) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.app).exclude(path=STREAM)
    operations = {(op.ok().method.upper(), op.ok().path) for op in schema.get_all_operations()}
    strategy = st.one_of(schema.as_strategy(generation_mode=GenerationMode.POSITIVE),
                         schema.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    answers: Counter = Counter()

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    @given(case=strategy)
    def generated(case) -> None:
        _known(case, api)
        response = case.call()
        answers[(case.method.upper(), case.path, response.status_code // 100)] += 1
        _check_answer(response)

    try:
        generated()
    finally:
        asgi.shutdown_lifespans()
    # still serving: a plain write and read work after all that
    registered = api.client.post("/agents/register", json={"name": "after-fuzz", "type": "custom"})
    assert registered.status_code == 201, registered.text
    assert api.client.get(f"/agents/{registered.json()['id']}").status_code == 200
    # Every operation was called, and every one got past validation at least once.
    assert {(method, path) for method, path, _ in answers} == operations
    assert {(method, path) for method, path, kind in answers if kind == 2} == operations, answers
    print(f"{sum(answers.values())} generated requests:", dict(sorted(answers.items())))


# ---- SQL injection in every parameter ----------------------------------------------------

INJECTIONS = [
    "' OR 1=1 --",
    "\"; DROP TABLE agents; --",
    "1) UNION SELECT id, name, type, project_id, external_id, config, 1, 'active', NULL, NULL FROM agents --",
    "%' --",
    "') FORMAT JSONEachRow --",
    "' UNION ALL SELECT * FROM system.tables --",
    "1; DELETE FROM agents",
    "'; DROP DATABASE {db}; --",
    "{agent_id:String}",
    "%_%",
    "\\",
    "`agents`",
    "x\x00' OR '1'='1",
]


def _operations(document: dict) -> Iterator[tuple[str, str, dict]]:
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            if path != STREAM:
                yield path, method.upper(), operation


def _body_schema(document: dict, operation: dict) -> dict | None:
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return None
    schema = content["schema"]
    if "anyOf" in schema:  # Optional bodies
        schema = next(s for s in schema["anyOf"] if "$ref" in s)
    return document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]


def _valid_body(path: str, api: Api, runs: list[dict]) -> dict:
    if path == "/agents/register":
        return {"name": "inj-base", "type": "custom"}
    if path.endswith("/trace/end"):
        return {"trace_id": runs[-1]["trace_id"], "span_id": runs[-1]["span_id"]}
    return {}


def test_sql_injection_in_every_parameter_is_harmless(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    victim = api.agent_ids[1]  # PATCHed with the strings: it is the only existing row that may change
    before_agents = {row[0]: row for row in api.agents()}
    before_tables, before_spans = api.tables(), api.spans()
    created: dict[str, dict] = {}
    answers: Counter = Counter()
    sent = 0

    def call(method: str, path: str, *, params=None, body=None):
        nonlocal sent
        sent += 1
        response = api.client.request(method, path, params=params, json=body)
        answers[(method, path.split("/")[1], response.status_code)] += 1
        _check_answer(response)
        if method == "POST" and path == "/agents/register" and response.status_code == 201:
            created[response.json()["id"]] = body
        return response

    def run_for(agent_id: str) -> dict:
        response = api.client.post(f"/agents/{agent_id}/trace/start", json={})
        assert response.status_code == 201, response.text
        return response.json()

    runs: list[dict] = []
    for path, method, operation in _operations(document):
        for injection in INJECTIONS:
            injection = injection.replace("{db}", api.database)
            for parameter in operation.get("parameters", []):
                # the parameter carries the string; the others stay valid
                values = {p["name"]: api.agent_ids[0] for p in operation["parameters"] if p["in"] == "path"}
                params = {}
                if parameter["in"] == "path":
                    values[parameter["name"]] = injection
                else:
                    params[parameter["name"]] = injection
                target = path.format(**{k: quote(v, safe="") for k, v in values.items()})
                if path.endswith("/trace/end"):
                    runs.append(run_for(api.agent_ids[0]))
                body = _valid_body(path, api, runs) if "requestBody" in operation else None
                response = call(method, target, params=params or None, body=body)
                if parameter["name"] == "search" and response.status_code == 200:
                    assert all(injection.lower() in item["name"].lower() for item in response.json()["items"])
                if parameter["name"] == "project_id" and response.status_code == 200:
                    assert all(item["project_id"] == injection for item in response.json()["items"])
            body_schema = _body_schema(document, operation)
            if body_schema is None:
                continue
            agent_in_path = victim if method == "PATCH" else api.agent_ids[0]
            target = path.replace("{agent_id}", agent_in_path)
            for name, prop in body_schema.get("properties", {}).items():
                if path.endswith("/trace/end"):
                    runs.append(run_for(api.agent_ids[0]))
                body = _valid_body(path, api, runs)
                is_map = prop.get("type") == "object" or any(s.get("type") == "object" for s in prop.get("anyOf", []))
                for value in ([{injection: "v"}, {"k": injection}] if is_map else [injection]):
                    if path == "/agents/register" and name == "name":
                        body = {**body, "name": value}
                    elif path == "/agents/register":
                        body = {**body, "name": f"inj {sent}", name: value}
                    else:
                        body = {**body, name: value}
                    response = call(method, target, body=body)
                    if method == "PATCH" and response.status_code == 200:
                        assert response.json()[name] == value  # stored literally
            # the string as the whole body, too
            call(method, target, body=injection)

    # Nothing but what the requests asked for changed.
    after_agents = {row[0]: row for row in api.agents()}
    assert api.tables() == before_tables
    assert api.spans() == before_spans
    assert len(after_agents) == len(before_agents) + len(created)
    for agent_id, row in before_agents.items():
        if agent_id != victim:
            assert after_agents[agent_id] == row
    for agent_id, body in created.items():
        stored = api.client.get(f"/agents/{agent_id}").json()
        for key, value in body.items():
            assert stored[key] == (value.strip() if isinstance(value, str) else value), (key, value, stored)
    assert sent > 400
    print(f"{sent} injection requests:", dict(sorted(answers.items())))


# ---- the stream, once --------------------------------------------------------------------


def test_stats_events_stream_answers_and_can_be_left(api: Api) -> None:
    with api.client.stream("GET", STREAM) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        seen = []
        for line in lines:
            seen.append(line)
            if line.startswith("data: "):
                break
    assert "retry: 2000" in seen and "event: spans" in seen
    assert json.loads(seen[-1].removeprefix("data: "))["version"] >= 1
    assert api.client.get("/healthz").status_code == 200  # still serving after the client left


# ---- edge cases the fuzzing found (each was a 5xx or a wrong answer) -----------------------


CALENDAR_EDGES = [
    "from=0001-01-01T00:00:00%2B01:00",  # to UTC: before year 1 (OverflowError)
    "to=9999-12-31T23:59:59-01:00",  # to UTC: after year 9999
    "to=0001-01-01T00:00:00",  # the default `from` (24 h before) is before year 1
    "from=0001-01-01T00:00:00&to=0001-01-01T00:00:01",
]


def test_calendar_edges_are_answered_not_500(api: Api) -> None:
    for query in CALENDAR_EDGES:
        for path in ("/stats/agents", f"/agents/{api.agent_ids[0]}/stats", f"/agents/{api.agent_ids[0]}/traces",
                     f"/agents/{api.agent_ids[0]}/timeseries"):
            response = api.client.get(f"{path}?{query}")
            assert response.status_code in (200, 422), (path, query, response.status_code, response.text)
            _check_answer(response)


def test_windows_beyond_int64_nanoseconds_still_count_the_runs(api: Api) -> None:
    """Span times are Int64 nanoseconds (1677..2262): a wider window must still see the runs in it,
    not overflow the query parameters into an empty answer."""
    agent = api.agent_ids[0]
    for query in ("from=2000-01-01T00:00:00&to=9999-12-31T00:00:00", "from=0001-01-01T00:00:00",
                  "from=1000-01-01T00:00:00%2B05:00&to=3000-01-01T00:00:00"):
        assert api.client.get(f"/agents/{agent}/stats?{query}").json()["runs"] == 2, query
        assert api.client.get(f"/agents/{agent}/traces?{query}").json()["total"] == 2, query
        overview = api.client.get(f"/stats/agents?{query}").json()["items"]
        assert {item["agent_id"]: item["runs"] for item in overview}[agent] == 2, query


def test_bucket_wider_than_clickhouse_takes_is_422(api: Api) -> None:
    agent = api.agent_ids[0]
    for bucket in ("49711d", "5000000d", "99999999999999999999d", "4294967296s"):
        response = api.client.get(f"/agents/{agent}/timeseries?bucket={bucket}")
        assert response.status_code == 422, (bucket, response.text)
    ok = api.client.get(f"/agents/{agent}/timeseries?bucket=1d&from=2000-01-01T00:00:00").json()
    assert sum(bucket["runs"] for bucket in ok["buckets"]) == 2


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def test_deeply_nested_config_is_refused_and_does_not_poison_the_list(api: Api) -> None:
    """A config nested deeper than the response serialiser goes used to be stored, then every
    answer that included the agent (its register reply, GET /agents) failed with 500."""
    for depth in (65, 300, 600):
        _refuse_deep_config(api, depth)
    shallow = api.client.patch(f"/agents/{api.agent_ids[0]}", json={"config": json.loads(_nested(64))})
    assert shallow.status_code == 200
    assert api.client.get("/agents").status_code == 200


def _refuse_deep_config(api: Api, depth: int) -> None:
    body = '{"name": "deep", "type": "custom", "config": ' + _nested(depth) + "}"
    response = api.client.post("/agents/register", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text[:300]
    response = api.client.patch(f"/agents/{api.agent_ids[0]}", content='{"config": ' + _nested(depth) + "}",
                                headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text[:300]
    listing = api.client.get("/agents")
    assert listing.status_code == 200 and listing.json()["total"] == len(api.agent_ids)


UNENCODABLE = [
    ("POST", "/agents/register", b'{"name": "\\ud800", "type": "custom"}'),
    ("POST", "/agents/register", b'{"name": "a", "type": "\\udfff"}'),
    ("PATCH", "/agents/{agent}", b'{"name": "\\ud800x"}'),
    ("POST", "/agents/{agent}/trace/start", b'{"traceparent": "\\ud800"}'),
    ("POST", "/agents/{agent}/trace/start", b'{"attributes": {"k": "\\ud800"}}'),
    ("POST", "/agents/{agent}/trace/start", b'{"attributes": {"\\ud800": "v"}}'),
    ("POST", "/agents/{agent}/trace/start", b'{"input": "\\ud800"}'),
    ("POST", "/agents/{agent}/trace/end", b'{"trace_id": "\\ud800", "span_id": "00f067aa0ba902b7"}'),
    ("POST", "/agents/register", b'{"name": "a", "type": "custom", "\\ud800": 1}'),
    # Python's JSON reads NaN and Infinity; echoing them back used to fail the same way
    ("POST", "/agents/register", b'{"name": NaN, "type": "custom"}'),
    ("POST", "/agents/register", b'{"name": "a", "type": "custom", "bogus": -Infinity}'),
    ("POST", "/agents/register", b"NaN"),
    ("PATCH", "/agents/{agent}", b'[Infinity]'),
]


def test_unencodable_input_gets_clear_errors_not_500(api: Api) -> None:
    """JSON may spell a lone UTF-16 surrogate; it is no text, and echoing it back in a 422 used to
    fail to encode (500). A run started with one in its input or attributes could never be ended."""
    for method, path, body in UNENCODABLE:
        _send_unencodable(api, method, path, body)


def _send_unencodable(api: Api, method: str, path: str, body: bytes) -> None:
    response = api.client.request(method, path.format(agent=api.agent_ids[0]), content=body,
                                  headers={"content-type": "application/json"})
    _check_answer(response)
    assert response.status_code in (201, 422), response.text
    if response.status_code == 201:  # the run can be ended: its span is built and taken
        run = response.json()
        end = '{"trace_id": "%s", "span_id": "%s", "output": "x\\ud800"}' % (run["trace_id"], run["span_id"])
        ended = api.client.post(path.format(agent=api.agent_ids[0]).replace("start", "end"), content=end.encode(),
                                headers={"content-type": "application/json"})
        assert ended.status_code == 200, ended.text


def test_control_characters_in_identity_fields_are_422(api: Api) -> None:
    for field, value in [("name", "a\x1fb"), ("project_id", "p\x1fq"), ("external_id", "e\x00"),
                         ("name", "line\nbreak"), ("name", "del\x7f")]:
        response = api.client.post("/agents/register", json={"name": "ctl", "type": "custom", field: value})
        assert response.status_code == 422, (field, value, response.text)
        assert "control" in response.text
    response = api.client.patch(f"/agents/{api.agent_ids[0]}", json={"name": "a\x00b"})
    assert response.status_code == 422 and "control" in response.text


def test_identities_that_differ_only_around_a_separator_do_not_collide(api: Api) -> None:
    """The agent id hashes the identity fields joined by U+001F: with the separator inside a field,
    two different agents got the same id, and the second registration answered 503."""
    first = api.client.post("/agents/register", json={"name": "billing", "type": "custom", "project_id": "team\x1fx"})
    second = api.client.post("/agents/register", json={"name": "x\x1fbilling", "type": "custom", "project_id": "team"})
    assert first.status_code < 500 and second.status_code < 500, (first.text, second.text)


def test_identity_keys_are_unambiguous() -> None:
    # Identities the enricher reads from span attributes may hold control characters: they are
    # dropped, so the U+001F that joins the key's fields can never come from a field.
    from registry_api.store.identity import AgentIdentity

    assert (AgentIdentity(name="x\x1fbilling", project_id="team").agent_id
            != AgentIdentity(name="billing", project_id="team\x1fx").agent_id)


_OFFSETS = st.one_of(st.none(), st.timedeltas(min_value=-timedelta(hours=23, minutes=59),
                                              max_value=timedelta(hours=23, minutes=59)).map(timezone))


@st.composite
def moments(draw) -> str:
    """An ISO 8601 time anywhere in the calendar, in any offset, often near the seeded runs."""
    zone = draw(_OFFSETS)
    if draw(st.booleans()):
        around = datetime.fromtimestamp(NOW_NS / 1e9, UTC) + draw(st.timedeltas(min_value=-timedelta(days=3),
                                                                                  max_value=timedelta(days=3)))
        moment = around if zone is None else around.astimezone(zone)
        moment = moment.replace(tzinfo=None) if zone is None else moment
    else:
        moment = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59),
                                   timezones=st.just(zone) if zone is not None else st.none()))
    return moment.isoformat()


def test_any_time_window_is_answered_and_counts_what_it_covers(api: Api) -> None:
    agent = api.agent_ids[0]
    run_start = datetime.fromtimestamp((NOW_NS - 3600 * 10**9) / 1e9, UTC)
    answers: Counter = Counter()

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(start=st.one_of(st.none(), moments()), end=st.one_of(st.none(), moments()))
    def window(start: str | None, end: str | None) -> None:
        params = {key: value for key, value in (("from", start), ("to", end)) if value is not None}
        response = api.client.get(f"/agents/{agent}/stats", params=params)
        answers[response.status_code] += 1
        _check_answer(response)
        if response.status_code == 200:
            body = response.json()
            covered = datetime.fromisoformat(body["from"]) <= run_start < datetime.fromisoformat(body["to"])
            assert body["runs"] == (2 if covered else 0), (params, body["from"], body["to"])

    window()
    assert answers[200] > 30, answers
