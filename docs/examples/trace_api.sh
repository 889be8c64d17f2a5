#!/usr/bin/env bash
# One run of an agent that cannot speak OTLP, reported with agentmon's trace start/end API.
# Needs curl and jq. Reads AGENTMON_URL (default http://127.0.0.1:8000) and AGENTMON_API_KEY (when the server has one).
set -euo pipefail
AGENTMON_URL=${AGENTMON_URL:-http://127.0.0.1:8000}
AUTH=(-H "X-API-Key: ${AGENTMON_API_KEY:-}" -H 'content-type: application/json')

AGENT=$(curl -sf -X POST "$AGENTMON_URL/agents/register" "${AUTH[@]}" \
        -d '{"name": "report-bot", "type": "custom"}' | jq -r .id)
RUN=$(curl -sf -X POST "$AGENTMON_URL/agents/$AGENT/trace/start" "${AUTH[@]}" \
      -d '{"input": "Summarise May", "attributes": {"session.id": "s-42"}}')
echo "started: $(echo "$RUN" | jq -c '{trace_id, traceparent}')"

# ... the agent works here. Calls it makes with the run's traceparent are children of the run ...

curl -sf -X POST "$AGENTMON_URL/agents/$AGENT/trace/end" "${AUTH[@]}" \
     -d "$(echo "$RUN" | jq '{trace_id, span_id, output: "May was up 4%"}')" | jq -c .
echo "agent: $AGENT"
