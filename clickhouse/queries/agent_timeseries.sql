-- One agent's usage per time bucket in [from, to).
{span_facts}
SELECT
    toInt64(toUnixTimestamp(toStartOfInterval(Timestamp, toIntervalSecond({bucket_seconds:UInt32})))) * 1000000000 AS bucket_ns,
    countIf(f_is_run) AS runs,
    countIf(f_is_run AND f_is_error) AS failed_runs,
    countIf(f_is_llm) AS llm_calls,
    sumIf(f_input_tokens, f_is_llm) AS input_tokens,
    sumIf(f_output_tokens, f_is_llm) AS output_tokens,
    sumIf(f_cost, f_is_llm) AS cost_usd,
    quantileExactIf(0.95)(Duration, f_is_run) AS p95_run_duration_ns
FROM {database}.{table}
WHERE Timestamp >= fromUnixTimestamp64Nano({from_ns:Int64})
  AND Timestamp < fromUnixTimestamp64Nano({to_ns:Int64})
  AND AgentId = {agent_id:String}
GROUP BY bucket_ns
ORDER BY bucket_ns
