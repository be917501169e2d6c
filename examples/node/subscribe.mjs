// A live subscription with `graphql-ws` (the graphql-transport-ws protocol): print every event
// of a workflow while this script moves a token through it over HTTP.
//
//   node examples/node/subscribe.mjs [N]
//
// Subscribes to workflowEvents of CB_WORKFLOW (default document_review), creates a token and
// fires submit, review and approve, and exits after N events (default 4). CB_WS_URL (default
// ws://localhost:4000/ws) and CB_GRAPHQL_URL (default http://localhost:4000/graphql) say where.
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const wsUrl = process.env.CB_WS_URL ?? 'ws://localhost:4000/ws';
const graphqlUrl = process.env.CB_GRAPHQL_URL ?? 'http://localhost:4000/graphql';
const workflow = process.env.CB_WORKFLOW ?? 'document_review';
const count = Number(process.argv[2] ?? 4);

// graphql-transport-ws has no "subscribed" message, but the server reads a socket's messages
// in order: a ping sent right after our subscribe message is answered only once the
// subscription is registered. This WebSocket sends that ping; its pong resolves `subscribed`.
let markSubscribed;
const subscribed = new Promise((resolve) => (markSubscribed = resolve));
class ProbingWebSocket extends WebSocket {
  send(data, ...rest) {
    super.send(data, ...rest);
    if (JSON.parse(data).type === 'subscribe') super.send(JSON.stringify({ type: 'ping', payload: { probe: true } }));
  }
}

const client = createClient({
  url: wsUrl,
  webSocketImpl: ProbingWebSocket,
  on: { pong: (received, payload) => received && payload?.probe && markSubscribed() },
});

async function graphql(query, variables) {
  const response = await fetch(graphqlUrl, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ query, variables }),
  });
  const body = await response.json();
  if (body.errors) throw new Error(body.errors.map((e) => e.message).join('; '));
  return body.data;
}

async function moveAToken() {
  const { createToken } = await graphql(
    'mutation($input: CreateTokenInput!) { createToken(input: $input) { id } }',
    { input: { workflow_id: workflow, data: { title: 'My Document' } } },
  );
  for (const transition of ['submit', 'review', 'approve']) {
    await graphql('mutation($input: FireTransitionInput!) { fireTransition(input: $input) { place } }', {
      input: { token_id: createToken.id, transition_id: transition },
    });
  }
}

const timeout = setTimeout(() => {
  console.error(`timed out waiting for ${count} events`);
  process.exit(1);
}, Number(process.env.CB_TIMEOUT ?? 30) * 1000);

const events = client.iterate({
  query: `subscription($workflow: ID!) {
    workflowEvents(workflow_id: $workflow) { type token_id transition from_place to_place timestamp }
  }`,
  variables: { workflow },
});

let received = 0;
const listening = (async () => {
  for await (const result of events) {
    if (result.errors) throw new Error(result.errors.map((e) => e.message).join('; '));
    const event = result.data.workflowEvents;
    received += 1;
    const step = event.transition
      ? `${event.transition}: ${event.from_place} -> ${event.to_place}`
      : `in ${event.to_place}`;
    console.log(`event ${received}: ${event.type} token ${event.token_id} ${step}`);
    if (received === count) break; // leaving the loop completes the subscription
  }
})();

await subscribed;
await moveAToken();
await listening;
console.log(`received ${received} events`);
clearTimeout(timeout);
await client.dispose();
