"""clickhouse/schema.sql: agentmon's columns are computed by ClickHouse from the exporter's
rows, so a table filled by the stock exporter answers the stats queries the same way."""

from __future__ import annotations

import clickhouse
import pytest

from enricher.export.clickhouse_rows import COLUMNS

FACTS = ("AgentId", "IsLlmCall", "IsAgentRun", "InputTokens", "OutputTokens", "LlmModel", "SpanCostUsd")


@pytest.fixture
def client(chdb_url, clickhouse_database):
    client = clickhouse.connect(chdb_url)
    yield client
    client.command(f"DROP DATABASE IF EXISTS {clickhouse_database}")


def insert(client, database: str, spans: list[tuple[str, dict[str, str]]]) -> None:
    """Insert (span name, span attributes) rows the way the exporter does: its 22 columns only."""
    rows = []
    for number, (name, attributes) in enumerate(spans):
        row = {column: "" for column in COLUMNS}
        row.update(Timestamp=1_760_000_000_000_000_000 + number, SpanId=f"{number:016x}", SpanName=name,
                   ResourceAttributes={}, SpanAttributes=attributes, Duration=1000)
        for nested in ("Events.Timestamp", "Events.Name", "Events.Attributes", "Links.TraceId", "Links.SpanId",
                       "Links.TraceState", "Links.Attributes"):
            row[nested] = []
        rows.append([row[column] for column in COLUMNS])
    client.insert(f"{database}.otel_traces", rows, column_names=list(COLUMNS))


def facts(client, database: str) -> list[tuple]:
    return client.query(f"SELECT SpanName, {', '.join(FACTS)} FROM {database}.otel_traces ORDER BY SpanId").result_rows


SPANS = [
    ("chat gpt-4o", {"metadata.agent_id": "a1", "gen_ai.operation.name": "chat", "gen_ai.request.model": "gpt-4o",
                     "gen_ai.response.model": "gpt-4o-2024-08-06", "gen_ai.usage.input_tokens": "120",
                     "gen_ai.usage.output_tokens": "30", "gen_ai.cost.total_cost": "0.0015"}),
    # deprecated token keys, the request model only, no cost: priced by the query
    ("completion", {"gen_ai.operation.name": "text_completion", "gen_ai.request.model": "gpt-4o-mini",
                    "gen_ai.usage.prompt_tokens": "7", "gen_ai.usage.completion_tokens": "3"}),
    # OpenInference
    ("ChatOpenAI", {"openinference.span.kind": "LLM", "llm.model_name": "claude-3-5-sonnet",
                    "llm.token_count.prompt": "11", "llm.token_count.completion": "5", "llm.cost.total": "0.25"}),
    # LiteLLM's raw request child repeats its parent's call: not counted again
    ("raw_gen_ai_request", {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": "120"}),
    # an agent run root that repeats its calls' totals: a run, not an LLM call
    ("invoke_agent planner", {"metadata.agent_id": "a1", "metadata.agent_root": "true",
                              "gen_ai.operation.name": "invoke_agent", "gen_ai.usage.input_tokens": "120"}),
    ("GET /", {"http.route": "/", "gen_ai.usage.cost": "not a number"}),
    # AutoGen's create_agent span starts no run, even where the enricher marked it a root
    ("create_agent writer", {"metadata.agent_id": "a2", "metadata.agent_root": "true",
                             "gen_ai.operation.name": "create_agent", "gen_ai.system": "autogen"}),
]

EXPECTED = [
    ("chat gpt-4o", "a1", True, False, 120, 30, "gpt-4o-2024-08-06", 0.0015),
    ("completion", "", True, False, 7, 3, "gpt-4o-mini", None),
    ("ChatOpenAI", "", True, False, 11, 5, "claude-3-5-sonnet", 0.25),
    ("raw_gen_ai_request", "", False, False, 120, 0, "", None),
    ("invoke_agent planner", "a1", False, True, 120, 0, "", None),
    ("GET /", "", False, False, 0, 0, "", None),
    ("create_agent writer", "a2", False, False, 0, 0, "", None),
]


def test_exporter_insert_fills_the_fact_columns(client, clickhouse_database):
    clickhouse.ensure_schema(client, clickhouse_database, "otel_traces")
    insert(client, clickhouse_database, SPANS)
    assert facts(client, clickhouse_database) == EXPECTED


def test_schema_upgrades_a_table_the_exporter_made_and_reapplies_cleanly(client, clickhouse_database):
    # The exporter's own DDL first (the first three statements), with rows already in it.
    statements = clickhouse.schema_statements(clickhouse_database, "otel_traces")
    for statement in statements[:4]:
        client.command(statement)
    insert(client, clickhouse_database, SPANS)
    clickhouse.ensure_schema(client, clickhouse_database, "otel_traces")
    clickhouse.ensure_schema(client, clickhouse_database, "otel_traces")  # idempotent
    assert facts(client, clickhouse_database) == EXPECTED
    kinds = dict(client.query(
        "SELECT name, default_kind FROM system.columns WHERE database = {db:String} AND table = 'otel_traces'",
        parameters={"db": clickhouse_database}).result_rows)
    assert all(kinds[name] == "MATERIALIZED" for name in FACTS)
    assert [name for name, kind in kinds.items() if kind == ""] == list(COLUMNS)


def test_identifiers_are_checked_before_any_sql():
    with pytest.raises(ValueError, match="identifier"):
        clickhouse.schema_statements("otel; DROP TABLE x", "otel_traces")
    with pytest.raises(ValueError, match="identifier"):
        clickhouse.query("agent_stats", "otel", "t`")


def test_an_older_fact_definition_is_brought_up_to_date(client, clickhouse_database) -> None:
    statements = clickhouse.schema_statements(clickhouse_database, "otel_traces")
    for statement in statements[:4]:
        client.command(statement)
    # A table that got IsLlmCall from an older agentmon, with an older definition.
    client.command(f"ALTER TABLE {clickhouse_database}.otel_traces ADD COLUMN IsLlmCall Bool MATERIALIZED false")
    clickhouse.ensure_schema(client, clickhouse_database, "otel_traces")
    insert(client, clickhouse_database, SPANS)
    assert facts(client, clickhouse_database) == EXPECTED
