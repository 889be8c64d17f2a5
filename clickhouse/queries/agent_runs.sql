-- One agent's runs (traces in which it has a run) in [from, to), newest first.
-- status: '' for all, 'error' or 'ok'.
{span_facts}
SELECT
    TraceId AS trace_id,
    toUnixTimestamp64Nano(minIf(Timestamp, f_is_run)) AS start_ns,
    maxIf(Duration, f_is_run) AS duration_ns,
    countIf(f_is_run AND f_is_error) > 0 AS failed,
    countIf(f_is_run) AS runs,
    countIf(f_is_llm) AS llm_calls,
    sumIf(f_input_tokens, f_is_llm) AS input_tokens,
    sumIf(f_output_tokens, f_is_llm) AS output_tokens,
    sumIf(f_cost, f_is_llm) AS cost_usd,
    count() OVER () AS total
FROM {database}.{table}
WHERE Timestamp >= fromUnixTimestamp64Nano({from_ns:Int64})
  AND Timestamp < fromUnixTimestamp64Nano({to_ns:Int64})
  AND AgentId = {agent_id:String}
GROUP BY TraceId
HAVING runs > 0 AND ({status:String} = '' OR failed = ({status:String} = 'error'))
ORDER BY start_ns DESC, trace_id
LIMIT {limit:UInt32} OFFSET {offset:UInt32}
