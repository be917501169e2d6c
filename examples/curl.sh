#!/usr/bin/env bash
# Every example of the server guide (SERVER_GUIDE.md), run against a live server with curl.
#
#   make run                 # in another terminal
#   examples/curl.sh
#
# CB_HOST (default localhost), OPENAI_PORT (default 3000) and GRAPHQL_PORT (default 4000)
# say where the server is. Each step prints a "### <step>" line, then the server's answer.
set -euo pipefail

CB_HOST=${CB_HOST:-localhost}
OPENAI_PORT=${OPENAI_PORT:-3000}
GRAPHQL_PORT=${GRAPHQL_PORT:-4000}

# The guide's commands are kept as written; this wrapper only makes curl quiet about its
# progress (-sS), unbuffered for streams (-N), and ends every answer with a newline.
curl() { command curl -sSN --max-time 60 "$@"; echo; }

# POST the GraphQL document read from stdin, JSON-encoded with sed and awk (no jq needed).
graphql() {
  local query
  query=$(sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' | awk '{ printf "%s\\n", $0 }')
  curl -X POST "http://$CB_HOST:$GRAPHQL_PORT/graphql" \
    -H 'Content-Type: application/json' \
    -d "{\"query\": \"$query\"}"
}

step() { printf '### %s\n' "$1"; }

step "OpenAI API health"
curl "http://$CB_HOST:$OPENAI_PORT/health"

step "GraphQL API health"
curl "http://$CB_HOST:$GRAPHQL_PORT/health"

step "List models"
curl "http://$CB_HOST:$OPENAI_PORT/v1/models"

step "Basic chat completion"
curl -X POST "http://$CB_HOST:$OPENAI_PORT/v1/chat/completions" \
  -H 'Content-Type: application/json' \
  -d '{
    "model": "gpt-4",
    "messages": [
      {"role": "user", "content": "Hello, how are you?"}
    ]
  }'

step "Streaming chat completion"
curl -X POST "http://$CB_HOST:$OPENAI_PORT/v1/chat/completions" \
  -H 'Content-Type: application/json' \
  -d '{
    "model": "gpt-4",
    "messages": [
      {"role": "user", "content": "Write a short poem"}
    ],
    "stream": true
  }'

step "List all workflows"
graphql <<'GRAPHQL'
query {
  workflows {
    id
    name
    places
    transitions {
      id
      from_places
      to_place
    }
  }
}
GRAPHQL

step "Create a workflow token"
graphql <<'GRAPHQL'
mutation {
  createToken(input: {
    workflow_id: "document_review"
    place: "draft"
    data: "{\"title\": \"My Document\"}"
  }) {
    id
    place
    data
  }
}
GRAPHQL

step "Create an AI agent"
graphql <<'GRAPHQL'
mutation {
  createAgent(input: {
    name: "Content Reviewer"
    description: "Reviews document content"
    llm_provider: {
      provider_type: "openai"
      model: "gpt-4"
      api_key: "your-key"
    }
    system_prompt: "You are a helpful content reviewer."
  }) {
    id
    name
    status
  }
}
GRAPHQL

step "Cost analytics"
curl -X POST "http://$CB_HOST:$GRAPHQL_PORT/graphql" \
  -H 'Content-Type: application/json' \
  -d '{
    "query": "{ costAnalytics { total_cost daily_usage provider_breakdown } }"
  }'

step "Cost and usage metrics"
graphql <<'GRAPHQL'
query {
  costAnalytics {
    total_cost
    daily_usage
    monthly_usage
    provider_breakdown
    top_models
  }
}
GRAPHQL
