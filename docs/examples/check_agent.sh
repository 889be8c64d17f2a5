#!/usr/bin/env bash
# What agentmon knows about an agent: its registry row, its usage in the last 24 hours, its dashboard page.
# Usage: docs/examples/check_agent.sh NAME   (all or part of the name; AGENTMON_URL, default http://127.0.0.1:8000)
set -euo pipefail
AGENTMON_URL=${AGENTMON_URL:-http://127.0.0.1:8000}
ID=$(curl -sf --get "$AGENTMON_URL/agents" --data-urlencode "search=$1" | jq -r '.items[0].id // empty')
[ -n "$ID" ] || { echo "no agent named like '$1'" >&2; exit 1; }
curl -sf "$AGENTMON_URL/agents/$ID" | jq -c '{id, name, type, external_id, project_id}'
curl -sf "$AGENTMON_URL/agents/$ID/stats" | jq -c '{runs, llm_calls, input_tokens, output_tokens, cost_usd, errors}'
echo "dashboard: $AGENTMON_URL/ui/agents/$ID"
