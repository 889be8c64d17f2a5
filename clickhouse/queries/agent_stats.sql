-- Usage per agent in [from, to): the overview (agent_id = '') or one agent.
{span_facts}
SELECT
    AgentId AS agent_id,
    countIf(f_is_run) AS runs,
    countIf(f_is_llm) AS llm_calls,
    sumIf(f_input_tokens, f_is_llm) AS input_tokens,
    sumIf(f_output_tokens, f_is_llm) AS output_tokens,
    sumIf(f_cost, f_is_llm) AS cost_usd,
    countIf(f_is_run AND f_is_error) AS failed_runs,
    quantilesExactIf(0.5, 0.95, 0.99)(Duration, f_is_run) AS run_duration_ns,
    max(toUnixTimestamp64Nano(Timestamp) + Duration) AS last_seen_ns
FROM {database}.{table}
WHERE Timestamp >= fromUnixTimestamp64Nano({from_ns:Int64})
  AND Timestamp < fromUnixTimestamp64Nano({to_ns:Int64})
  AND AgentId != ''
  AND ({agent_id:String} = '' OR AgentId = {agent_id:String})
GROUP BY AgentId
ORDER BY AgentId
