-- agentmon's ClickHouse schema. Statements are separated by lines holding only ';'
-- and applied in order by agentmon (clickhouse/__init__.py); {database} and {table} are
-- replaced by identifiers from the configuration (AGENTMON_CLICKHOUSE_DATABASE / _TABLE).
--
-- 1-3: the stock OpenTelemetry Collector ClickHouse exporter's traces table, its
-- trace-id lookup table and view, exactly as the exporter creates them (its
-- internal/sqltemplates), so either writer - the stock exporter or agentmon's own -
-- fills the same table with the same rows.
-- 4-: agentmon's additions, which never change the exporter's 22-column insert:
-- MATERIALIZED/ALIAS columns are filled by ClickHouse itself, and views hang off inserts.

CREATE DATABASE IF NOT EXISTS {database}
;
CREATE TABLE IF NOT EXISTS {database}.{table} (
    Timestamp DateTime64(9) CODEC(Delta(8), ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(T64, ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1,
    INDEX idx_lower_span_name lower(SpanName) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 8
) ENGINE = MergeTree()
PARTITION BY toDate(Timestamp)
PRIMARY KEY (ServiceName, SpanName, toDateTime(Timestamp))
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp), Timestamp)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
;
CREATE TABLE IF NOT EXISTS {database}.{table}_trace_id_ts (
    TraceId String CODEC(ZSTD(1)),
    Start SimpleAggregateFunction(min, DateTime) CODEC(ZSTD(1)),
    End SimpleAggregateFunction(max, DateTime) CODEC(ZSTD(1))
) ENGINE = AggregatingMergeTree()
PARTITION BY toStartOfWeek(Start)
ORDER BY (TraceId)
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1
;
CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{table}_trace_id_ts_mv
TO {database}.{table}_trace_id_ts
AS SELECT
    TraceId,
    min(Timestamp) as Start,
    max(Timestamp) as End
FROM {database}.{table}
WHERE TraceId != ''
GROUP BY TraceId
;
-- agentmon: the stamped agent id as a column of its own, computed by ClickHouse on insert.
ALTER TABLE {database}.{table}
    ADD COLUMN IF NOT EXISTS AgentId LowCardinality(String) MATERIALIZED SpanAttributes['metadata.agent_id']
;
ALTER TABLE {database}.{table}
    ADD INDEX IF NOT EXISTS idx_agent_id AgentId TYPE set(0) GRANULARITY 1
;
-- agentmon: the facts every stats query needs, computed once on insert instead of from the
-- SpanAttributes map on every query (reading a Map column is the cost of a scan). Read by
-- queries/span_facts.sql. Token and model keys: current and deprecated GenAI names,
-- OpenInference and OpenLLMetry. LiteLLM's raw_gen_ai_request child repeats its parent's
-- call and agent/chain spans repeat totals, so neither is an LLM call: each call counts once.
-- {llm_operations}: GenAI operation names and OpenLLMetry request types, plus LiteLLM's call
-- types, which it writes into both keys (acompletion, aembedding, responses, ...).
ALTER TABLE {database}.{table}
    ADD COLUMN IF NOT EXISTS IsLlmCall Bool MATERIALIZED
        (SpanAttributes['gen_ai.operation.name'] IN {llm_operations}
            OR SpanAttributes['openinference.span.kind'] IN ('LLM', 'EMBEDDING')
            OR SpanAttributes['llm.request.type'] IN {llm_operations})
        AND SpanName != 'raw_gen_ai_request'
;
ALTER TABLE {database}.{table}
    ADD COLUMN IF NOT EXISTS IsAgentRun Bool MATERIALIZED
        SpanAttributes['metadata.agent_root'] = 'true'
        -- AutoGen announces each agent with a create_agent span: that is not a run of it.
        AND SpanAttributes['gen_ai.operation.name'] != 'create_agent'
        AND NOT IsLlmCall
;
ALTER TABLE {database}.{table}
    ADD COLUMN IF NOT EXISTS InputTokens UInt64 MATERIALIZED toUInt64OrZero(multiIf(
        SpanAttributes['gen_ai.usage.input_tokens'] != '', SpanAttributes['gen_ai.usage.input_tokens'],
        SpanAttributes['gen_ai.usage.prompt_tokens'] != '', SpanAttributes['gen_ai.usage.prompt_tokens'],
        SpanAttributes['llm.token_count.prompt']))
;
ALTER TABLE {database}.{table}
    ADD COLUMN IF NOT EXISTS OutputTokens UInt64 MATERIALIZED toUInt64OrZero(multiIf(
        SpanAttributes['gen_ai.usage.output_tokens'] != '', SpanAttributes['gen_ai.usage.output_tokens'],
        SpanAttributes['gen_ai.usage.completion_tokens'] != '', SpanAttributes['gen_ai.usage.completion_tokens'],
        SpanAttributes['llm.token_count.completion']))
;
ALTER TABLE {database}.{table}
    ADD COLUMN IF NOT EXISTS LlmModel LowCardinality(String) MATERIALIZED multiIf(
        SpanAttributes['gen_ai.response.model'] != '', SpanAttributes['gen_ai.response.model'],
        SpanAttributes['gen_ai.request.model'] != '', SpanAttributes['gen_ai.request.model'],
        SpanAttributes['llm.model_name'])
;
-- The cost the span reports itself (LiteLLM, OpenInference); NULL when it reports none, and
-- the query prices the tokens from the model price table instead.
ALTER TABLE {database}.{table}
    ADD COLUMN IF NOT EXISTS SpanCostUsd Nullable(Float64) MATERIALIZED toFloat64OrNull(multiIf(
        SpanAttributes['gen_ai.cost.total_cost'] != '', SpanAttributes['gen_ai.cost.total_cost'],
        SpanAttributes['llm.cost.total'] != '', SpanAttributes['llm.cost.total'],
        SpanAttributes['litellm.cost.total'] != '', SpanAttributes['litellm.cost.total'],
        SpanAttributes['gen_ai.usage.cost']))
