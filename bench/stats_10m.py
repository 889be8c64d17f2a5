"""Stats queries at scale: load N realistic spans (default 10 million) into embedded chDB
and time the overview and the agent-detail queries, cold and warm. Run by hand:

    .venv/bin/python bench/stats_10m.py --spans 10000000 --dir /tmp/agentmon-bench-chdb

Spans are generated inside ClickHouse (INSERT ... SELECT FROM numbers()) in the exporter's
22 columns: half the traces are agent runs (an agent root span and three LLM calls with
model, tokens and sometimes a cost), half plain HTTP/DB traffic; 200 agents, spread over
seven days. The queries are the ones the API runs (clickhouse/queries).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import clickhouse  # noqa: E402
from registry_api.stats import StatsStore, load_prices  # noqa: E402
from registry_api.stats.store import Window  # noqa: E402

GENERATE = """
INSERT INTO {db}.{table} (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, ServiceName,
    ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, Duration, StatusCode, StatusMessage,
    `Events.Timestamp`, `Events.Name`, `Events.Attributes`, `Links.TraceId`, `Links.SpanId`, `Links.TraceState`,
    `Links.Attributes`)
SELECT
    fromUnixTimestamp64Nano(toInt64({start_ns} + number * {step_ns})) AS Timestamp,
    lower(hex(MD5(toString(intDiv(number, 4))))) AS TraceId,
    substring(lower(hex(MD5(toString(number)))), 1, 16) AS SpanId,
    if(number % 4 = 0, '', substring(lower(hex(MD5(toString(number - number % 4)))), 1, 16)) AS ParentSpanId,
    '' AS TraceState,
    multiIf(agent_trace AND number % 4 = 0, concat('invoke_agent ', agent),
            agent_trace, concat('chat ', model),
            number % 4 = 0, 'GET /orders/{{id}}', 'SELECT orders') AS SpanName,
    if(number % 4 = 0, 'Server', 'Internal') AS SpanKind,
    if(agent_trace, 'agent-service', 'shop') AS ServiceName,
    map('service.name', if(agent_trace, 'agent-service', 'shop'), 'telemetry.sdk.language', 'python') AS ResourceAttributes,
    'bench' AS ScopeName,
    '1.0' AS ScopeVersion,
    multiIf(
        agent_trace AND number % 4 = 0,
        map('metadata.agent_id', agent, 'metadata.agent_name', agent, 'metadata.agent_type', 'custom',
            'metadata.agent_root', 'true', 'gen_ai.operation.name', 'invoke_agent', 'gen_ai.agent.name', agent,
            'session.id', toString(number % 9973), 'user.id', toString(number % 1000)),
        agent_trace,
        map('metadata.agent_id', agent, 'metadata.agent_name', agent, 'metadata.agent_type', 'custom',
            'gen_ai.operation.name', 'chat', 'gen_ai.request.model', model, 'gen_ai.response.model', model,
            'gen_ai.usage.input_tokens', toString(50 + number % 4000), 'gen_ai.usage.output_tokens', toString(10 + number % 900),
            'gen_ai.cost.total_cost', if(number % 3 = 0, toString((60 + number % 4900) * 0.000002), ''),
            'server.address', 'api.openai.com'),
        map('http.method', 'GET', 'http.route', '/orders/{{id}}', 'http.status_code', '200',
            'db.system', 'postgresql', 'net.peer.name', 'db')) AS SpanAttributes,
    toUInt64(if(number % 4 = 0, 200000000 + (number * 7919) % 3000000000, 5000000 + (number * 104729) % 900000000)) AS Duration,
    if((number * 31) % 100 < 3, 'Error', 'Ok') AS StatusCode,
    '' AS StatusMessage,
    [] AS `Events.Timestamp`, [] AS `Events.Name`, [] AS `Events.Attributes`,
    [] AS `Links.TraceId`, [] AS `Links.SpanId`, [] AS `Links.TraceState`, [] AS `Links.Attributes`
FROM (
    SELECT number,
           intDiv(number, 4) % 2 = 0 AS agent_trace,
           concat('agent-', toString(intDiv(number, 8) % 200)) AS agent,
           ['gpt-4o-mini', 'gpt-4o', 'claude-3-5-sonnet', 'unknown-model'][1 + number % 4] AS model
    FROM numbers({offset}, {count})
)
"""


def timed(label: str, call, repeats: int) -> dict:
    cold_start = time.perf_counter()
    call()
    cold = time.perf_counter() - cold_start
    warm = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        warm.append(time.perf_counter() - started)
    result = {"query": label, "cold_ms": cold * 1000, "warm_median_ms": statistics.median(warm) * 1000,
              "warm_max_ms": max(warm) * 1000}
    print(" ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spans", type=int, default=10_000_000)
    parser.add_argument("--dir", default="/tmp/agentmon-bench-chdb")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    client = clickhouse.connect(f"chdb://{args.dir}")
    database, table = "bench", "otel_traces"
    client.command(f"DROP DATABASE IF EXISTS {database}")
    clickhouse.ensure_schema(client, database, table)
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=7)
    step_ns = int(7 * 86400 * 1e9 / args.spans)
    started = time.perf_counter()
    chunk = 1_000_000
    for offset in range(0, args.spans, chunk):
        client.command(GENERATE.format(db=database, table=table, start_ns=int(start.timestamp() * 1e9), step_ns=step_ns,
                                       offset=offset, count=min(chunk, args.spans - offset)))
    client.command(f"OPTIMIZE TABLE {database}.{table} FINAL")
    rows = client.query(f"SELECT count() FROM {database}.{table}").result_rows[0][0]
    print(f"loaded {rows} spans in {time.perf_counter() - started:.1f}s", flush=True)

    stats = StatsStore(client, database=database, table=table, prices=load_prices())
    week = Window(start, end + timedelta(minutes=1))
    agent = "agent-7"
    timed("overview (all agents, 7 days)", lambda: stats.agent_stats(week), args.repeats)
    timed("agent stats (7 days)", lambda: stats.agent_stats(week, agent), args.repeats)
    timed("agent timeseries (7 days, 1h)", lambda: stats.timeseries(week, agent, 3600), args.repeats)
    timed("agent runs page (7 days, 50)", lambda: stats.runs(week, agent, status="", limit=50, offset=0), args.repeats)
    trace_id = stats.runs(week, agent, status="", limit=1, offset=0)[0][0]["trace_id"]
    timed("trace tree", lambda: stats.trace(trace_id), args.repeats)


if __name__ == "__main__":
    main()
