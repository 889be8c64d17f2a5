"""Rows for the stock ClickHouse exporter's otel_traces table (enricher/export/clickhouse_rows.py).

Expected values follow /work/shared/reference/clickhouse-row-contract.md and the upstream code
the module docstring cites (collector-contrib exporter/clickhouseexporter, collector
pdata/pcommon/value.go); the pdata cases marked "upstream" are TestValueAsString's own.
"""

from __future__ import annotations

import base64
import json
import math

import clickhouse
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from enricher.export.clickhouse_rows import COLUMNS, any_value_to_string, attributes_to_map, request_to_rows

COL = {name: i for i, name in enumerate(COLUMNS)}

TRACE_ID = bytes.fromhex("5b8efff798038103d269b633813fc60c")
SPAN_ID = bytes.fromhex("eee19b7ec3c1b174")
PARENT_ID = bytes.fromhex("eee19b7ec3c1b173")
T0 = 1_760_000_000_123_456_789


# --- builders -------------------------------------------------------------------------------

def s(v: str) -> AnyValue:
    return AnyValue(string_value=v)


def i(v: int) -> AnyValue:
    return AnyValue(int_value=v)


def d(v: float) -> AnyValue:
    return AnyValue(double_value=v)


def b(v: bool) -> AnyValue:
    return AnyValue(bool_value=v)


def raw(v: bytes) -> AnyValue:
    return AnyValue(bytes_value=v)


def arr(*values: AnyValue) -> AnyValue:
    return AnyValue(array_value=ArrayValue(values=list(values)))


def kvlist(*pairs: tuple[str, AnyValue]) -> AnyValue:
    return AnyValue(kvlist_value=KeyValueList(values=[KeyValue(key=k, value=v) for k, v in pairs]))


def kvs(*pairs: tuple[str, AnyValue]) -> list[KeyValue]:
    return [KeyValue(key=k, value=v) for k, v in pairs]


def make_span(**fields) -> Span:
    base = dict(trace_id=TRACE_ID, span_id=SPAN_ID, parent_span_id=PARENT_ID, name="op",
                start_time_unix_nano=T0, end_time_unix_nano=T0 + 1500)
    base.update(fields)
    return Span(**base)


def request(*spans: Span, resource: list[KeyValue] | None = None, scope: InstrumentationScope | None = None) -> bytes:
    rs = ResourceSpans(resource=Resource(attributes=kvs(("service.name", s("svc"))) if resource is None else resource))
    rs.scope_spans.append(ScopeSpans(scope=scope or InstrumentationScope(), spans=list(spans)))
    return ExportTraceServiceRequest(resource_spans=[rs]).SerializeToString()


def one_row(span: Span, **kwargs) -> dict:
    rows = request_to_rows(request(span, **kwargs))
    assert len(rows) == 1 and len(rows[0]) == len(COLUMNS)
    return dict(zip(COLUMNS, rows[0], strict=True))


# --- columns ------------------------------------------------------------------------------------

def test_columns_are_the_exporters_22_in_its_order():
    assert COLUMNS == (
        "Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName", "SpanKind", "ServiceName",
        "ResourceAttributes", "ScopeName", "ScopeVersion", "SpanAttributes", "Duration", "StatusCode",
        "StatusMessage", "Events.Timestamp", "Events.Name", "Events.Attributes", "Links.TraceId", "Links.SpanId",
        "Links.TraceState", "Links.Attributes",
    )


# --- a known span, field by field ----------------------------------------------------------

def test_known_span_field_by_field():
    span = make_span(
        trace_state="rojo=00f067aa0ba902b7",
        name="chat gpt-4o",
        kind=Span.SPAN_KIND_CLIENT,
        start_time_unix_nano=T0,
        end_time_unix_nano=T0 + 2_500_000_000,
        attributes=kvs(("z.last", s("zz")), ("gen_ai.usage.input_tokens", i(120)), ("a.first", b(True)),
                       ("cost", d(0.25)), ("metadata.agent_id", s("agent-7"))),
        status=Status(code=Status.STATUS_CODE_ERROR, message="boom"),
        events=[
            Span.Event(time_unix_nano=T0 + 10, name="exception",
                       attributes=kvs(("exception.type", s("ValueError")), ("attempt", i(2)))),
            Span.Event(time_unix_nano=T0 + 20, name="retry"),
        ],
        links=[
            Span.Link(trace_id=bytes.fromhex("0af7651916cd43dd8448eb211c80319c"),
                      span_id=bytes.fromhex("b7ad6b7169203331"), trace_state="k=v",
                      attributes=kvs(("link.kind", s("follows")))),
            Span.Link(trace_id=bytes(16), span_id=b""),
        ],
    )
    row = one_row(
        span,
        resource=kvs(("service.name", s("agent-service")), ("host.cpus", i(8)), ("deployment.environment", s("prod"))),
        scope=InstrumentationScope(name="litellm", version="1.2.3"),
    )
    assert row == {
        "Timestamp": T0,
        "TraceId": "5b8efff798038103d269b633813fc60c",
        "SpanId": "eee19b7ec3c1b174",
        "ParentSpanId": "eee19b7ec3c1b173",
        "TraceState": "rojo=00f067aa0ba902b7",
        "SpanName": "chat gpt-4o",
        "SpanKind": "Client",
        "ServiceName": "agent-service",
        "ResourceAttributes": {"deployment.environment": "prod", "host.cpus": "8", "service.name": "agent-service"},
        "ScopeName": "litellm",
        "ScopeVersion": "1.2.3",
        "SpanAttributes": {"a.first": "true", "cost": "0.25", "gen_ai.usage.input_tokens": "120",
                           "metadata.agent_id": "agent-7", "z.last": "zz"},
        "Duration": 2_500_000_000,
        "StatusCode": "Error",
        "StatusMessage": "boom",
        "Events.Timestamp": [T0 + 10, T0 + 20],
        "Events.Name": ["exception", "retry"],
        "Events.Attributes": [{"attempt": "2", "exception.type": "ValueError"}, {}],
        "Links.TraceId": ["0af7651916cd43dd8448eb211c80319c", ""],
        "Links.SpanId": ["b7ad6b7169203331", ""],
        "Links.TraceState": ["k=v", ""],
        "Links.Attributes": [{"link.kind": "follows"}, {}],
    }
    # Like the exporter's orderedmap (AttributesToMap sorts by key), the maps are key-ordered.
    assert list(row["SpanAttributes"]) == sorted(row["SpanAttributes"])
    assert list(row["ResourceAttributes"]) == sorted(row["ResourceAttributes"])


def test_span_without_events_links_or_status():
    row = one_row(make_span())
    assert row["StatusCode"] == "Unset" and row["StatusMessage"] == ""
    for name in COLUMNS[15:]:
        assert row[name] == [], name
    assert row["SpanAttributes"] == {} and row["TraceState"] == ""


# --- ids ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("trace_id", "span_id", "parent", "expected"), [
    (TRACE_ID, SPAN_ID, b"", ("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "")),
    (bytes(16), bytes(8), bytes(8), ("", "", "")),
    (b"", b"", b"", ("", "", "")),
    (bytes.fromhex("000000000000000000000000000000ff"), bytes.fromhex("0100000000000000"), PARENT_ID,
     ("000000000000000000000000000000ff", "0100000000000000", "eee19b7ec3c1b173")),
    (bytes.fromhex("ABCDEF0123456789ABCDEF0123456789"), bytes.fromhex("FFFFFFFFFFFFFFFF"), b"",
     ("abcdef0123456789abcdef0123456789", "ffffffffffffffff", "")),
])
def test_ids_lowercase_hex_and_zero_ids_empty(trace_id, span_id, parent, expected):
    row = one_row(make_span(trace_id=trace_id, span_id=span_id, parent_span_id=parent))
    assert (row["TraceId"], row["SpanId"], row["ParentSpanId"]) == expected


# --- enums ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "text"), [
    (Span.SPAN_KIND_UNSPECIFIED, "Unspecified"),
    (Span.SPAN_KIND_INTERNAL, "Internal"),
    (Span.SPAN_KIND_SERVER, "Server"),
    (Span.SPAN_KIND_CLIENT, "Client"),
    (Span.SPAN_KIND_PRODUCER, "Producer"),
    (Span.SPAN_KIND_CONSUMER, "Consumer"),
    (6, ""),  # pdata SpanKind.String() of an unknown number
    (-1, ""),
])
def test_span_kind_text(kind, text):
    assert one_row(make_span(kind=kind))["SpanKind"] == text


@pytest.mark.parametrize(("code", "text"), [
    (Status.STATUS_CODE_UNSET, "Unset"),
    (Status.STATUS_CODE_OK, "Ok"),
    (Status.STATUS_CODE_ERROR, "Error"),
    (3, ""),
])
def test_status_code_text(code, text):
    row = one_row(make_span(status=Status(code=code, message="m")))
    assert row["StatusCode"] == text and row["StatusMessage"] == "m"


# --- duration and timestamps ----------------------------------------------------------------

@pytest.mark.parametrize(("start", "end", "duration"), [
    (T0, T0 + 123_456_789, 123_456_789),
    (T0, T0, 0),
    # pcommon.Timestamp is uint64: end - start wraps, and the exporter appends that uint64
    # into the UInt64 Duration column.
    (T0, T0 - 1, 2**64 - 1),
    (T0, 0, 2**64 - T0),
    (0, 2**64 - 1, 2**64 - 1),
])
def test_duration_is_uint64_end_minus_start(start, end, duration):
    row = one_row(make_span(start_time_unix_nano=start, end_time_unix_nano=end))
    assert row["Duration"] == duration and row["Timestamp"] == start


# --- resource, service name, scope -------------------------------------------------------------

def test_service_name_missing_is_empty():
    row = one_row(make_span(), resource=kvs(("host.name", s("h"))))
    assert row["ServiceName"] == "" and row["ResourceAttributes"] == {"host.name": "h"}


def test_no_resource_attributes_at_all():
    row = one_row(make_span(), resource=[])
    assert row["ServiceName"] == "" and row["ResourceAttributes"] == {}


def test_service_name_is_asstring_of_the_first_entry():
    # internal.GetServiceName: resAttr.Get (first match) then AsString.
    assert one_row(make_span(), resource=kvs(("service.name", i(5))))["ServiceName"] == "5"
    row = one_row(make_span(), resource=kvs(("service.name", s("first")), ("service.name", s("second"))))
    assert row["ServiceName"] == "first" and row["ResourceAttributes"] == {"service.name": "first"}


def test_scope_name_and_version():
    row = one_row(make_span(), scope=InstrumentationScope(name="opentelemetry.instrumentation.httpx", version="0.48b0"))
    assert (row["ScopeName"], row["ScopeVersion"]) == ("opentelemetry.instrumentation.httpx", "0.48b0")
    assert row["SpanAttributes"] == {}  # the 22-column exporter no longer copies the scope into attributes
    row = one_row(make_span())
    assert (row["ScopeName"], row["ScopeVersion"]) == ("", "")


def test_many_resources_and_scopes_keep_order_and_context():
    def rs(service, scopes):
        out = ResourceSpans(resource=Resource(attributes=kvs(("service.name", s(service)))))
        for scope_name, names in scopes:
            out.scope_spans.append(ScopeSpans(scope=InstrumentationScope(name=scope_name),
                                              spans=[make_span(name=n) for n in names]))
        return out

    payload = ExportTraceServiceRequest(resource_spans=[
        rs("a", [("s1", ["a1", "a2"]), ("s2", ["a3"])]),
        rs("b", [("s3", [])]),
        rs("c", [("s4", ["c1"])]),
    ]).SerializeToString()
    rows = request_to_rows(payload)
    got = [(r[COL["ServiceName"]], r[COL["ScopeName"]], r[COL["SpanName"]]) for r in rows]
    assert got == [("a", "s1", "a1"), ("a", "s1", "a2"), ("a", "s2", "a3"), ("c", "s4", "c1")]
    assert request_to_rows(b"") == []


def test_concatenated_requests_merge():
    # Sinks get concatenated serialized requests (enricher/export/base.py).
    payload = request(make_span(name="x")) + request(make_span(name="y"))
    assert [r[COL["SpanName"]] for r in request_to_rows(payload)] == ["x", "y"]


# --- attribute stringification (pdata Value.AsString) -----------------------------------------

NESTED_MAP = kvlist(
    ("strKey", s("strVal")), ("intKey", i(7)), ("floatKey", d(18.6)), ("boolKey", b(False)), ("nullKey", AnyValue()),
    ("mapKey", kvlist(("keyOne", s("valOne")), ("keyTwo", s("valTwo")))),
    ("arrKey", arr(s("strOne"), s("strTwo"))),
)


@pytest.mark.parametrize(("value", "expected"), [
    # strings and the empty value
    (s("string value"), "string value"),  # upstream
    (s(""), ""),
    (s("<b>&amp;</b> é \u2028"), "<b>&amp;</b> é \u2028"),
    (AnyValue(), ""),  # upstream "empty"
    # bool
    (b(True), "true"),  # upstream
    (b(False), "false"),
    # int: strconv.FormatInt(v, 10)
    (i(42), "42"),  # upstream
    (i(0), "0"),
    (i(-17), "-17"),
    (i(2**63 - 1), "9223372036854775807"),
    (i(-(2**63)), "-9223372036854775808"),
    # double: float64AsString ('f' with shortest digits; 'e' below 1e-6 and from 1e21)
    (d(1.0), "1"),
    (d(0.1), "0.1"),
    (d(1e-7), "1e-7"),
    (d(1e21), "1e+21"),
    (d(123456789.125), "123456789.125"),
    (d(1.61803399), "1.61803399"),  # upstream
    (d(0.000000009), "9e-9"),  # upstream "small float64"
    (d(float("inf")), "json: unsupported value: +Inf"),  # upstream "bad float64"
    (d(float("-inf")), "json: unsupported value: -Inf"),
    (d(float("nan")), "json: unsupported value: NaN"),
    (d(0.0), "0"),
    (d(-0.0), "-0"),
    (d(-2.5), "-2.5"),
    (d(1e-6), "0.000001"),
    (d(9.99e-7), "9.99e-7"),
    (d(1.5e-5), "0.000015"),
    (d(1e-10), "1e-10"),
    (d(-1.25e-100), "-1.25e-100"),
    (d(5e-324), "5e-324"),
    (d(1e16), "10000000000000000"),
    (d(1e20), "100000000000000000000"),
    (d(123456789012345680000.0), "123456789012345680000"),
    (d(-1e21), "-1e+21"),
    (d(1.7976931348623157e308), "1.7976931348623157e+308"),
    (d(2**53 + 0.0), "9007199254740992"),
    # bytes: base64.StdEncoding
    (raw(b"String bytes"), base64.b64encode(b"String bytes").decode()),  # upstream
    (raw(b"\x00\xff\xfe"), "AP/+"),
    (raw(b"ab"), "YWI="),
    (raw(b""), ""),
    # array / map: compact JSON of AsRaw(), map keys sorted
    (arr(s("strVal"), i(7), d(18.6), b(False), AnyValue()), '["strVal",7,18.6,false,null]'),  # upstream
    (arr(), "[]"),  # upstream
    (kvlist(), "{}"),  # upstream
    (NESTED_MAP, '{"arrKey":["strOne","strTwo"],"boolKey":false,"floatKey":18.6,"intKey":7,'
                 '"mapKey":{"keyOne":"valOne","keyTwo":"valTwo"},"nullKey":null,"strKey":"strVal"}'),  # upstream
    (arr(d(1.0), d(1e-7), d(1e21), d(-0.0), i(-3)), "[1,1e-7,1e+21,-0,-3]"),
    (kvlist(("b", raw(b"\x01\x02")), ("e", raw(b"")), ("n", arr(arr(kvlist(("x", b(True))))))),
     '{"b":"AQI=","e":null,"n":[[{"x":true}]]}'),  # nested empty bytes: a nil []byte, JSON null
    (kvlist(("k", s("first")), ("k", s("last"))), '{"k":"last"}'),  # Map.AsRaw: a later duplicate overwrites
    # Go's JSON string escaping (collector 0.160: SetEscapeHTML(false), so < > & stay literal;
    # U+2028/U+2029 are always escaped; \b \f short since Go 1.22; other controls \u00xx)
    (arr(s("<a href=\"x\">&</a>")), '["<a href=\\"x\\">&</a>"]'),
    (kvlist(("<k>", s("&"))), '{"<k>":"&"}'),
    (arr(s("\u2028\u2029")), '["\\u2028\\u2029"]'),
    (arr(s("\b\f\n\r\t\x00\x1f\x7f\\/")), '["\\b\\f\\n\\r\\t\\u0000\\u001f\x7f\\\\/"]'),
    (arr(s("é日本🙂")), '["é日本🙂"]'),
    # NaN/Inf inside a map or array: json.Marshal fails and AsString returns ""
    (arr(d(float("nan"))), ""),
    (kvlist(("ok", i(1)), ("bad", arr(d(float("inf"))))), ""),
])
def test_any_value_to_string(value, expected):
    assert any_value_to_string(value) == expected


def test_map_keys_sort_by_code_point_like_go_bytes():
    value = kvlist(("é", i(1)), ("Z", i(2)), ("a", i(3)), ("", i(4)), ("aa", i(5)), ("🙂", i(6)), ("日", i(7)))
    out = any_value_to_string(value)
    assert out == '{"":4,"Z":2,"a":3,"aa":5,"é":1,"日":7,"🙂":6}'
    keys = list(json.loads(out))
    assert keys == sorted(keys, key=lambda k: k.encode())


def test_attributes_to_map_first_duplicate_wins_and_keys_sorted():
    attrs = kvs(("b", s("1")), ("a", i(2)), ("b", s("3")), ("c", AnyValue()), ("a", s("4")))
    result = attributes_to_map(attrs)
    assert result == {"a": "2", "b": "1", "c": ""}
    assert list(result) == ["a", "b", "c"]
    row = one_row(make_span(attributes=attrs))
    assert row["SpanAttributes"] == {"a": "2", "b": "1", "c": ""}


def test_every_value_type_as_span_attribute():
    attrs = kvs(("str", s("x")), ("empty_str", s("")), ("bool", b(False)), ("int", i(-1)), ("double", d(1.0)),
                ("bytes", raw(b"hi")), ("empty", AnyValue()), ("array", arr(s("a"), i(1))),
                ("map", kvlist(("z", d(0.5)), ("a", kvlist(("n", AnyValue()))))))
    assert one_row(make_span(attributes=attrs))["SpanAttributes"] == {
        "array": '["a",1]', "bool": "false", "bytes": "aGk=", "double": "1", "empty": "", "empty_str": "",
        "int": "-1", "map": '{"a":{"n":null},"z":0.5}', "str": "x",
    }


# --- chDB: the real table ------------------------------------------------------------------------

@pytest.fixture
def chdb_client(chdb_url, clickhouse_database):
    # chDB opens one path per process: the session's shared one, with a database per test.
    client = clickhouse.connect(chdb_url)
    yield client, clickhouse_database
    client.command(f"DROP DATABASE IF EXISTS {clickhouse_database}")


def test_insert_into_schema_table_and_read_back(chdb_client):
    client, database = chdb_client
    statements = clickhouse.schema_statements(database, "otel_traces")
    assert len(statements) >= 4
    for statement in statements:
        client.command(statement)

    columns = client.query(
        f"SELECT name, default_kind FROM system.columns WHERE database = {database!r} AND table = 'otel_traces' "
        "ORDER BY position"
    ).result_rows
    # The exporter's 22 columns are exactly the table's ordinary columns, in table order;
    # agentmon's own columns are computed by ClickHouse and never named by an insert.
    assert [name for name, kind in columns if kind == ""] == list(COLUMNS)
    assert ("AgentId", "MATERIALIZED") in columns
    assert "AgentId" not in COLUMNS

    agent_trace = bytes.fromhex("11111111111111111111111111111111")
    spans = [
        make_span(
            trace_id=agent_trace, span_id=bytes.fromhex("aaaaaaaaaaaaaaaa"), parent_span_id=b"",
            name="invoke_agent a", kind=Span.SPAN_KIND_SERVER, trace_state="a=b",
            start_time_unix_nano=T0, end_time_unix_nano=T0 + 3_000_000_001,
            attributes=kvs(("metadata.agent_id", s("agent-42")), ("gen_ai.usage.total_tokens", i(1234)),
                           ("retry", b(False)), ("cost", d(1e-7)), ("tags", arr(s("<x>"), d(2.0))),
                           ("blob", raw(b"\x00\x01"))),
            status=Status(code=Status.STATUS_CODE_OK),
            events=[Span.Event(time_unix_nano=T0 + 5, name="start", attributes=kvs(("n", i(1)))),
                    Span.Event(time_unix_nano=T0 + 987_654_321, name="end")],
            links=[Span.Link(trace_id=TRACE_ID, span_id=SPAN_ID, trace_state="x=y",
                             attributes=kvs(("rel", s("parent")))),
                   Span.Link(trace_id=bytes(16), span_id=bytes(8))],
        ),
        make_span(  # no agent id, zero ids, end before start, unknown kind
            trace_id=bytes(16), span_id=bytes.fromhex("bbbbbbbbbbbbbbbb"), parent_span_id=bytes(8),
            name="GET /", kind=99, start_time_unix_nano=T0 + 1, end_time_unix_nano=T0,
            status=Status(code=Status.STATUS_CODE_ERROR, message="failed"),
        ),
        make_span(
            trace_id=agent_trace, span_id=bytes.fromhex("cccccccccccccccc"),
            parent_span_id=bytes.fromhex("aaaaaaaaaaaaaaaa"), name="chat gpt-4o", kind=Span.SPAN_KIND_CLIENT,
            start_time_unix_nano=T0 + 100, end_time_unix_nano=T0 + 200,
            attributes=kvs(("metadata.agent_id", s("agent-42")), ("z", s("1")), ("a", s("2"))),
        ),
    ]
    rows = request_to_rows(request(*spans, resource=kvs(("service.name", s("svc-é")), ("k8s.pod.uid", s("u"))),
                                   scope=InstrumentationScope(name="scope", version="9")))
    assert len(rows) == 3

    client.insert("otel_traces", rows, column_names=COLUMNS, database=database)

    select = ", ".join(
        "toUnixTimestamp64Nano(Timestamp)" if name == "Timestamp"
        else "arrayMap(t -> toUnixTimestamp64Nano(t), `Events.Timestamp`)" if name == "Events.Timestamp"
        else f"`{name}`"
        for name in COLUMNS
    )
    back = client.query(f"SELECT {select} FROM {database}.otel_traces").result_rows
    back = sorted((list(r) for r in back), key=lambda r: r[COL["SpanId"]])
    expected = sorted(rows, key=lambda r: r[COL["SpanId"]])
    assert back == expected
    for got, want in zip(back, expected):
        for name in ("ResourceAttributes", "SpanAttributes"):
            assert list(got[COL[name]]) == list(want[COL[name]])  # map entry order kept (sorted keys)
    assert back[1][COL["Duration"]] == 2**64 - 1 and back[1][COL["SpanKind"]] == ""
    assert back[1][COL["TraceId"]] == "" and back[1][COL["ParentSpanId"]] == ""

    agent_ids = client.query(
        f"SELECT SpanId, AgentId, SpanAttributes['metadata.agent_id'] FROM {database}.otel_traces ORDER BY SpanId"
    ).result_rows
    assert agent_ids == [
        ("aaaaaaaaaaaaaaaa", "agent-42", "agent-42"),
        ("bbbbbbbbbbbbbbbb", "", ""),
        ("cccccccccccccccc", "agent-42", "agent-42"),
    ]
    attrs = client.query(
        "SELECT SpanAttributes['cost'], SpanAttributes['tags'], SpanAttributes['blob'], SpanAttributes['retry'] "
        f"FROM {database}.otel_traces WHERE SpanId = 'aaaaaaaaaaaaaaaa'"
    ).result_rows
    assert attrs == [("1e-7", '["<x>",2]', "AAE=", "false")]

    # The schema's trace-id lookup view sees the rows (zero TraceId excluded by its WHERE).
    lookup = client.query(f"SELECT DISTINCT TraceId FROM {database}.otel_traces_trace_id_ts").result_rows
    assert lookup == [("11111111111111111111111111111111",)]


# --- hypothesis ----------------------------------------------------------------------------------

INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
UINT64 = st.integers(min_value=0, max_value=2**64 - 1)
scalar_values = st.one_of(
    st.text().map(s),
    INT64.map(i),
    st.floats(allow_nan=True, allow_infinity=True).map(d),
    st.booleans().map(b),
    st.binary(max_size=20).map(raw),
    st.just(AnyValue()),
)
any_values = st.recursive(
    scalar_values,
    lambda children: st.one_of(
        st.lists(children, max_size=4).map(lambda xs: arr(*xs)),
        st.lists(st.tuples(st.text(max_size=5), children), max_size=4).map(lambda ps: kvlist(*ps)),
    ),
    max_leaves=12,
)


def expected_raw(v: AnyValue):
    """What json.loads of Go's encoding of Value.AsRaw() gives."""
    which = v.WhichOneof("value")
    if which == "kvlist_value":
        out = {}
        for kv in v.kvlist_value.values:
            out[kv.key] = expected_raw(kv.value)
        return out
    if which == "array_value":
        return [expected_raw(x) for x in v.array_value.values]
    if which == "bytes_value":
        return base64.b64encode(v.bytes_value).decode() if v.bytes_value else None
    if which is None:
        return None
    return getattr(v, which)


def same_json(got, want) -> bool:
    """json.loads output vs expected_raw: Go writes integral doubles without a point ("1"), so a
    float is compared by value; bools must stay bools."""
    if isinstance(want, bool) or want is None or isinstance(want, str):
        return type(got) is type(want) and got == want
    if isinstance(want, float):
        return type(got) in (int, float) and float(got) == want
    if isinstance(want, int):
        return type(got) is int and got == want
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(same_json, got, want))
    return (isinstance(got, dict) and list(got) == sorted(want)
            and all(same_json(got[k], want[k]) for k in want))


def has_non_finite(v: AnyValue) -> bool:
    which = v.WhichOneof("value")
    if which == "double_value":
        return not math.isfinite(v.double_value)
    if which == "kvlist_value":
        # Map.AsRaw keeps the last of duplicate keys: a NaN that a later duplicate replaced
        # never reaches json.Marshal.
        surviving = {kv.key: kv.value for kv in v.kvlist_value.values}
        return any(has_non_finite(value) for value in surviving.values())
    if which == "array_value":
        return any(has_non_finite(x) for x in v.array_value.values)
    return False


@settings(max_examples=300, deadline=None)
@given(any_values)
@example(kvlist(("", arr(d(math.inf))), ("", AnyValue())))  # a duplicate key replaces the inf: '{"":null}'
def test_any_value_to_string_never_raises(value):
    out = any_value_to_string(value)
    assert isinstance(out, str)
    which = value.WhichOneof("value")
    if which in ("kvlist_value", "array_value"):
        if has_non_finite(value):
            assert out == ""
        else:
            assert same_json(json.loads(out), expected_raw(value)), out
            assert "\u2028" not in out and "\u2029" not in out
    elif which == "double_value":
        f = value.double_value
        if math.isfinite(f):
            assert float(out) == f and not out.endswith(".0")
            assert ("e" in out) == (f != 0 and not 1e-6 <= abs(f) < 1e21)
        else:
            assert out.startswith("json: unsupported value: ")
    elif which == "bytes_value":
        assert base64.b64decode(out) == value.bytes_value
    elif which == "int_value":
        assert int(out) == value.int_value


ids16 = st.one_of(st.just(b""), st.just(bytes(16)), st.binary(min_size=16, max_size=16))
ids8 = st.one_of(st.just(b""), st.just(bytes(8)), st.binary(min_size=8, max_size=8))
# Span-level values: mostly scalars (the nested encoder has its own test above); small keys so
# that duplicates happen.
span_values = st.one_of(scalar_values, st.lists(scalar_values, max_size=2).map(lambda xs: arr(*xs)),
                        st.lists(st.tuples(st.text(max_size=2), scalar_values), max_size=2).map(lambda ps: kvlist(*ps)))
attribute_lists = st.lists(st.tuples(st.text(max_size=2), span_values), max_size=5).map(lambda ps: kvs(*ps))
events = st.builds(lambda t, n, a: Span.Event(time_unix_nano=t, name=n, attributes=a), UINT64, st.text(max_size=8),
                   attribute_lists)
links = st.builds(lambda t, sp, ts, a: Span.Link(trace_id=t, span_id=sp, trace_state=ts, attributes=a), ids16, ids8,
                  st.text(max_size=8), attribute_lists)
spans = st.builds(
    lambda tid, sid, pid, name, kind, start, end, attrs, evs, lks, code, msg, ts: Span(
        trace_id=tid, span_id=sid, parent_span_id=pid, name=name, kind=kind, start_time_unix_nano=start,
        end_time_unix_nano=end, attributes=attrs, events=evs, links=lks, status=Status(code=code, message=msg),
        trace_state=ts),
    ids16, ids8, ids8, st.text(max_size=10), st.integers(-3, 9), UINT64, UINT64, attribute_lists,
    st.lists(events, max_size=2), st.lists(links, max_size=2), st.integers(-1, 4), st.text(max_size=8),
    st.text(max_size=8),
)


def hex_or_empty(v: bytes) -> str:
    return "" if not any(v) else v.hex()


def reference_map(attrs) -> dict[str, str]:
    out: dict[str, str] = {}
    for kv in attrs:
        out.setdefault(kv.key, any_value_to_string(kv.value))
    return dict(sorted(out.items()))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(attribute_lists, st.text(max_size=5), st.lists(spans, max_size=3)), max_size=3))
def test_request_to_rows_handles_arbitrary_spans(resources):
    request_msg = ExportTraceServiceRequest()
    for resource_attrs, scope_name, span_list in resources:
        rs = request_msg.resource_spans.add()
        rs.resource.attributes.extend(resource_attrs)
        rs.scope_spans.add(scope=InstrumentationScope(name=scope_name), spans=span_list)
    rows = request_to_rows(request_msg.SerializeToString())

    expected_spans = [(rs, ss, sp) for rs in request_msg.resource_spans for ss in rs.scope_spans for sp in ss.spans]
    assert len(rows) == len(expected_spans)
    for row, (rs, ss, sp) in zip(rows, expected_spans):
        r = dict(zip(COLUMNS, row, strict=True))
        resource_map = reference_map(rs.resource.attributes)
        assert r["Timestamp"] == sp.start_time_unix_nano
        assert r["TraceId"] == hex_or_empty(sp.trace_id)
        assert r["SpanId"] == hex_or_empty(sp.span_id)
        assert r["ParentSpanId"] == hex_or_empty(sp.parent_span_id)
        assert r["SpanName"] == sp.name and r["TraceState"] == sp.trace_state
        assert r["SpanKind"] == {0: "Unspecified", 1: "Internal", 2: "Server", 3: "Client", 4: "Producer",
                                 5: "Consumer"}.get(sp.kind, "")
        assert r["StatusCode"] == {0: "Unset", 1: "Ok", 2: "Error"}.get(sp.status.code, "")
        assert r["ServiceName"] == resource_map.get("service.name", "")
        assert r["ResourceAttributes"] == resource_map and list(r["ResourceAttributes"]) == list(resource_map)
        assert r["SpanAttributes"] == reference_map(sp.attributes)
        assert list(r["SpanAttributes"]) == sorted(r["SpanAttributes"])
        assert r["ScopeName"] == ss.scope.name and r["ScopeVersion"] == ""
        assert 0 <= r["Duration"] < 2**64
        assert r["Duration"] == (sp.end_time_unix_nano - sp.start_time_unix_nano) % 2**64
        assert r["Events.Timestamp"] == [e.time_unix_nano for e in sp.events]
        assert r["Events.Name"] == [e.name for e in sp.events]
        assert r["Events.Attributes"] == [reference_map(e.attributes) for e in sp.events]
        assert r["Links.TraceId"] == [hex_or_empty(lk.trace_id) for lk in sp.links]
        assert r["Links.SpanId"] == [hex_or_empty(lk.span_id) for lk in sp.links]
        assert r["Links.TraceState"] == [lk.trace_state for lk in sp.links]
        assert r["Links.Attributes"] == [reference_map(lk.attributes) for lk in sp.links]
