-- Every span of one trace, for its tree.
{span_facts}
SELECT
    SpanId AS span_id,
    ParentSpanId AS parent_span_id,
    SpanName AS name,
    SpanKind AS kind,
    ServiceName AS service,
    toUnixTimestamp64Nano(Timestamp) AS start_ns,
    Duration AS duration_ns,
    StatusCode AS status,
    StatusMessage AS status_message,
    AgentId AS agent_id,
    SpanAttributes['metadata.agent_name'] AS agent_name,
    f_is_run AS is_run,
    f_is_llm AS is_llm,
    f_model AS model,
    f_input_tokens AS input_tokens,
    f_output_tokens AS output_tokens,
    if(f_is_llm, f_cost, 0.) AS cost_usd
FROM {database}.{table}
WHERE TraceId = {trace_id:String}
ORDER BY Timestamp, SpanId
LIMIT 10000
