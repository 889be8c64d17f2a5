#!/usr/bin/env bash
# An agent without OTLP whose run calls a LiteLLM proxy: the run's traceparent makes the proxy's spans its children.
# Needs curl and jq, a running proxy (LITELLM_PROXY_URL, default http://127.0.0.1:4000) and its key (LITELLM_API_KEY).
set -euo pipefail
AGENTMON_URL=${AGENTMON_URL:-http://127.0.0.1:8000}
LITELLM_PROXY_URL=${LITELLM_PROXY_URL:-http://127.0.0.1:4000}
AUTH=(-H "X-API-Key: ${AGENTMON_API_KEY:-}" -H 'content-type: application/json')

AGENT=$(curl -sf -X POST "$AGENTMON_URL/agents/register" "${AUTH[@]}" \
        -d '{"name": "digest-bot", "type": "custom"}' | jq -r .id)
RUN=$(curl -sf -X POST "$AGENTMON_URL/agents/$AGENT/trace/start" "${AUTH[@]}" -d '{"input": "Summarise May"}')

ANSWER=$(curl -sf "$LITELLM_PROXY_URL/v1/chat/completions" -H "traceparent: $(echo "$RUN" | jq -r .traceparent)" \
         -H "Authorization: Bearer $LITELLM_API_KEY" -H 'content-type: application/json' \
         -d '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Summarise May"}]}' \
         | jq -r '.choices[0].message.content')

curl -sf -X POST "$AGENTMON_URL/agents/$AGENT/trace/end" "${AUTH[@]}" \
     -d "$(echo "$RUN" | jq --arg out "$ANSWER" '{trace_id, span_id, output: $out}')" | jq -c .
echo "agent: $AGENT"
