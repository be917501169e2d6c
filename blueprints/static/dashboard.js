// The dashboard: every figure comes from /graphql (one query per refresh) and the
// workflowEvents subscription on /ws. When the server requires GRAPHQL_API_KEY the page
// asks for it and keeps it in sessionStorage (this tab only), sending it as a Bearer
// header and in the WebSocket's connection_init.
"use strict";

(() => {
  const GRAPHQL = document.body.dataset.graphql;
  const WS_PATH = document.body.dataset.ws;
  const KEY_NAME = "cb-graphql-api-key";
  const MAX_SUBSCRIPTIONS = 100; // GRAPHQL_WS_MAX_SUBSCRIPTIONS' default
  const MAX_EVENTS = 30;

  const QUERY = `query Dashboard($range: CostAnalyticsInput, $granularity: UsageGranularity) {
    costAnalytics(input: $range) {
      total_cost total_requests total_tokens prompt_tokens completion_tokens unpriced_requests
      model_breakdown provider_breakdown top_models period_start period_end
      usage_series(granularity: $granularity) { start cost requests tokens providers }
    }
    budgets { scope scope_id period limit_usd used_usd remaining_usd percentage_used is_warning is_exhausted }
    llmProviders {
      id name provider_type enabled configured
      health { is_healthy circuit_state error_rate average_latency_ms average_ttft_ms consecutive_failures last_error in_flight }
    }
    workflows {
      id name description places initial_place
      transitions { id name from_places to_place conditions }
      place_counts { place tokens }
    }
    agentExecutions(last: 20) {
      id agent_id workflow_id token_id place status attempts duration_ms cost_usd created_at error
      usage { total_tokens model }
    }
  }`;
  const COUNTS = `query PlaceCounts($id: ID!) { workflow(id: $id) { place_counts { place tokens } } }`;
  const EVENTS = `subscription WorkflowEvents($id: ID!) {
    workflowEvents(workflow_id: $id) { type workflow_id token_id transition from_place to_place timestamp actor }
  }`;

  const $ = (id) => document.getElementById(id);
  const state = { key: sessionStorage.getItem(KEY_NAME), timer: null, loads: 0, events: [], diagrams: {}, counts: {},
                  subscriptions: {}, ws: null, reconcile: {} };

  class Unauthenticated extends Error {}

  // --- formatting -----------------------------------------------------------------

  function usd(value) {
    if (!value) return "$0";
    const digits = value >= 100 ? 2 : value >= 0.01 ? 4 : 6;
    return "$" + value.toFixed(digits);
  }
  const int = (value) => (value ?? 0).toLocaleString("en-US");
  const ms = (value) => (value === null || value === undefined ? "–" : `${Math.round(value)} ms`);
  const pct = (value) => `${(100 * (value || 0)).toFixed(1)}%`;
  const utcDay = (date) => date.toISOString().slice(0, 10);

  function cell(content, className) {
    const td = document.createElement("td");
    if (content instanceof Node) td.append(content);
    else td.textContent = content ?? "";
    if (className) td.className = className;
    return td;
  }
  function badge(label, kind) {
    const span = document.createElement("span");
    span.className = `badge ${kind ?? label}`;
    span.textContent = label;
    return span;
  }
  // columns: [[heading, (row) -> content, className?, (row) -> data-value?]]
  function table(node, columns, rows, empty) {
    node.replaceChildren();
    const head = document.createElement("tr");
    for (const [heading, , className] of columns) {
      const th = document.createElement("th");
      th.textContent = heading;
      if (className) th.className = className;
      head.append(th);
    }
    node.append(head);
    if (!rows.length) {
      const tr = document.createElement("tr");
      const td = cell(empty, "empty");
      td.colSpan = columns.length;
      tr.append(td);
      node.append(tr);
      return;
    }
    for (const row of rows) {
      const tr = document.createElement("tr");
      for (const [heading, value, className, raw] of columns) {
        const td = cell(value(row), className);
        td.dataset.column = heading;
        if (raw) td.dataset.value = raw(row);
        tr.append(td);
      }
      node.append(tr);
    }
  }

  // --- talking to the server --------------------------------------------------------

  async function graphql(query, variables) {
    const headers = { "Content-Type": "application/json" };
    if (state.key) headers.Authorization = `Bearer ${state.key}`;
    const response = await fetch(GRAPHQL, { method: "POST", headers, body: JSON.stringify({ query, variables }) });
    let body;
    try {
      body = await response.json();
    } catch {
      throw new Error(`${GRAPHQL} answered ${response.status} without JSON`);
    }
    if (response.status === 401 || body.errors?.some((e) => e.extensions?.code === "UNAUTHENTICATED")) {
      throw new Unauthenticated(body.errors?.[0]?.message || "unauthenticated");
    }
    if (body.errors?.length) throw new Error(body.errors.map((e) => e.message).join("; "));
    return body.data;
  }

  function range() {
    return { start_date: $("range-start").value, end_date: $("range-end").value };
  }

  async function load() {
    try {
      const data = await graphql(QUERY, { range: range(), granularity: $("granularity").value.toUpperCase() });
      $("key-form").hidden = true;
      $("content").hidden = false;
      $("forget-key").hidden = !state.key;
      render(data);
      state.loads += 1;
      document.body.dataset.loads = String(state.loads);
      status(`Updated ${new Date().toLocaleTimeString()}`);
      connectLive(data.workflows);
    } catch (error) {
      if (error instanceof Unauthenticated) return askForKey(state.key ? "The server refused this key." : "");
      status(error.message, true);
    }
  }

  function status(message, isError = false) {
    $("status").textContent = message;
    $("status").className = isError ? "error" : "";
  }

  function askForKey(message) {
    $("content").hidden = true;
    $("key-form").hidden = false;
    $("key-error").textContent = message;
    status("");
    $("api-key").focus();
  }

  // --- rendering --------------------------------------------------------------------

  function render(data) {
    const costs = data.costAnalytics;
    renderTotals(costs, data.llmProviders);
    renderSeries(costs.usage_series);
    const models = Object.entries(costs.model_breakdown).map(([model, v]) => ({ model, ...v }))
      .sort((a, b) => b.requests - a.requests || a.model.localeCompare(b.model));
    table($("models"), [
      ["model", (r) => r.model],
      ["requests", (r) => int(r.requests), "num", (r) => r.requests],
      ["prompt tokens", (r) => int(r.prompt_tokens), "num", (r) => r.prompt_tokens],
      ["completion tokens", (r) => int(r.completion_tokens), "num", (r) => r.completion_tokens],
      ["tokens", (r) => int(r.tokens), "num", (r) => r.tokens],
      ["cost", (r) => (r.unpriced_requests === r.requests ? "unpriced" : usd(r.cost)), "num", (r) => r.cost],
      ["unpriced", (r) => int(r.unpriced_requests || 0), "num", (r) => r.unpriced_requests || 0],
    ], models, "no requests in this period");
    Charts.horizontalBars($("top-models"), costs.top_models.map((m) => ({ label: m.model, value: m.cost })), usd);
    const providers = Object.entries(costs.provider_breakdown).map(([provider, v]) => ({ provider, ...v }));
    table($("providers"), [
      ["provider", (r) => r.provider],
      ["requests", (r) => int(r.requests), "num", (r) => r.requests],
      ["tokens", (r) => int(r.tokens), "num", (r) => r.tokens],
      ["cost", (r) => usd(r.cost), "num", (r) => r.cost],
    ], providers, "no requests in this period");
    renderBudgets(data.budgets);
    renderDeployments(data.llmProviders);
    renderWorkflows(data.workflows);
    renderExecutions(data.agentExecutions);
  }

  function renderTotals(costs, deployments) {
    const serving = deployments.filter((d) => d.enabled && d.configured);
    const healthy = serving.filter((d) => d.health.is_healthy).length;
    const tiles = [
      ["total cost", usd(costs.total_cost), "total_cost", costs.total_cost],
      ["requests", int(costs.total_requests), "total_requests", costs.total_requests],
      ["tokens", int(costs.total_tokens), "total_tokens", costs.total_tokens],
      ["prompt / completion", `${int(costs.prompt_tokens)} / ${int(costs.completion_tokens)}`, "prompt_tokens", costs.prompt_tokens],
      // requests of models nobody prices: not in the total cost; an operator adds a price for them
      ["unpriced requests", int(costs.unpriced_requests), "unpriced_requests", costs.unpriced_requests],
      ["healthy deployments", `${healthy} of ${serving.length} configured`, "healthy", healthy],
    ];
    $("totals").replaceChildren(...tiles.map(([label, shown, name, value]) => {
      const tile = document.createElement("div");
      tile.className = "tile";
      tile.dataset.name = name;
      tile.dataset.value = value;
      const l = document.createElement("div"), v = document.createElement("div");
      l.className = "label"; l.textContent = label;
      v.className = "value"; v.textContent = shown;
      tile.append(l, v);
      return tile;
    }));
  }

  // every hour or day of the range, empty ones included, so gaps show as gaps
  function renderSeries(series) {
    const hourly = $("granularity").value === "hour";
    const stepMs = (hourly ? 3600 : 86400) * 1000;
    const byStart = new Map(series.map((b) => [Date.parse(b.start), b]));
    const { start_date, end_date } = range();
    const first = Date.parse(start_date + "T00:00:00Z"), last = Date.parse(end_date + "T00:00:00Z") + 86400000;
    const buckets = [];
    for (let t = first; t < last && buckets.length < 5000; t += stepMs) {
      const found = byStart.get(t);
      const iso = new Date(t).toISOString();
      const parts = {};
      for (const [provider, v] of Object.entries(found?.providers || {})) parts[provider] = v.cost;
      buckets.push({
        start: iso.replace(".000Z", "Z"), label: hourly ? `${iso.slice(5, 10)} ${iso.slice(11, 13)}h` : iso.slice(5, 10),
        total: found?.cost || 0, parts,
        note: (provider) => `(${int(found.providers[provider].requests)} requests, ${int(found.providers[provider].tokens)} tokens)`,
      });
    }
    $("series-note").textContent = `per ${hourly ? "hour" : "day"}, UTC, ${start_date} to ${end_date}`;
    Charts.stackedBars($("cost-chart"), buckets, usd);
  }

  function renderBudgets(budgets) {
    const box = $("budgets");
    box.replaceChildren();
    if (!budgets.length) {
      const p = document.createElement("p");
      p.className = "empty";
      p.textContent = "no budgets (setBudget creates one)";
      box.append(p);
      return;
    }
    for (const b of budgets) {
      const row = document.createElement("div");
      row.className = "budget";
      row.dataset.scope = b.scope;
      row.dataset.scopeId = b.scope_id ?? "";
      row.dataset.used = b.used_usd;
      const name = document.createElement("div");
      name.textContent = `${b.scope}${b.scope_id ? " " + b.scope_id : ""} · ${b.period.toLowerCase()}`;
      const bar = document.createElement("div");
      bar.className = "bar" + (b.is_exhausted ? " exhausted" : b.is_warning ? " warning" : "");
      const fill = document.createElement("div");
      fill.style.width = `${Math.min(100, b.percentage_used)}%`;
      bar.append(fill);
      const figures = document.createElement("div");
      figures.textContent = `${usd(b.used_usd)} of ${usd(b.limit_usd)} (${b.percentage_used.toFixed(1)}%), ${usd(b.remaining_usd)} left`;
      row.append(name, bar, figures);
      box.append(row);
    }
  }

  function renderDeployments(deployments) {
    table($("deployments"), [
      ["deployment", (d) => (d.name && d.name !== d.id ? `${d.id} (${d.name})` : d.id)],
      ["type", (d) => d.provider_type],
      ["health", (d) => (!d.enabled ? badge("disabled", "open") : !d.configured ? badge("not configured", "half_open")
        : badge(d.health.is_healthy ? "healthy" : "unhealthy"))],
      ["breaker", (d) => badge(d.health.circuit_state)],
      ["latency", (d) => ms(d.health.average_latency_ms), "num"],
      ["first token", (d) => ms(d.health.average_ttft_ms), "num"],
      ["error rate", (d) => pct(d.health.error_rate), "num", (d) => d.health.error_rate],
      ["in flight", (d) => int(d.health.in_flight), "num"],
      ["failures in a row", (d) => int(d.health.consecutive_failures), "num"],
      ["last error", (d) => d.health.last_error || "", "wrap"],
    ], deployments, "no deployments configured");
    for (const [i, row] of [...$("deployments").querySelectorAll("tr")].slice(1).entries()) {
      if (deployments[i]) row.dataset.deployment = deployments[i].id;
    }
  }

  function renderWorkflows(workflows) {
    const box = $("workflows");
    const seen = new Set();
    for (const wf of workflows) {
      seen.add(wf.id);
      const counts = Object.fromEntries(wf.place_counts.map((c) => [c.place, c.tokens]));
      state.counts[wf.id] = counts;
      const shape = JSON.stringify([wf.places, wf.initial_place, wf.transitions]);
      let entry = state.diagrams[wf.id];
      if (!entry || entry.shape !== shape) {
        entry?.node.remove();
        const node = document.createElement("div");
        node.className = "workflow";
        node.dataset.workflow = wf.id;
        const h3 = document.createElement("h3");
        const small = document.createElement("small");
        h3.append(wf.name, " ", small);
        const picture = document.createElement("div");
        node.append(h3, picture);
        box.append(node);
        entry = state.diagrams[wf.id] = { node, small, shape, diagram: Charts.workflowDiagram(picture, wf, counts) };
      }
      entry.wf = wf;
      showCounts(wf.id);
    }
    for (const id of Object.keys(state.diagrams)) {
      if (!seen.has(id)) { state.diagrams[id].node.remove(); delete state.diagrams[id]; }
    }
    if (!workflows.length) {
      box.textContent = "no workflows (createWorkflow creates one)";
      box.className = "empty";
    } else {
      box.className = "";
      for (const child of [...box.childNodes]) if (child.nodeType === Node.TEXT_NODE) child.remove();
    }
  }

  function showCounts(workflowId) {
    const entry = state.diagrams[workflowId];
    if (!entry) return;
    const counts = state.counts[workflowId];
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    entry.small.textContent = `${workflowId} · ${int(total)} token${total === 1 ? "" : "s"}`;
    entry.diagram.setCounts(counts);
  }

  function renderExecutions(executions) {
    table($("executions"), [
      ["created", (x) => x.created_at.replace("T", " ").slice(0, 19)],
      ["status", (x) => badge(x.status)],
      ["agent", (x) => x.agent_id],
      ["workflow · place", (x) => `${x.workflow_id} · ${x.place}`],
      ["token", (x) => x.token_id.slice(0, 8)],
      ["attempts", (x) => int(x.attempts), "num"],
      ["duration", (x) => ms(x.duration_ms), "num"],
      ["tokens", (x) => int(x.usage?.total_tokens), "num"],
      ["cost", (x) => usd(x.cost_usd), "num", (x) => x.cost_usd],
      ["error", (x) => x.error || "", "wrap"],
    ], [...executions].reverse(), "no agent executions yet");
  }

  function renderEvents() {
    table($("transitions"), [
      ["time", (e) => e.timestamp.replace("T", " ").slice(0, 19)],
      ["workflow", (e) => state.diagrams[e.workflow_id]?.wf.name || e.workflow_id],
      ["token", (e) => e.token_id.slice(0, 8)],
      ["event", (e) => (e.type === "token_transitioned" ? e.transition : e.type.replace("token_", ""))],
      ["from → to", (e) => (e.from_place ? `${e.from_place} → ${e.to_place}` : e.to_place || "")],
      ["by", (e) => e.actor || ""],  // e.g. mcp:claude-code for a token an MCP client moved
    ], state.events, "none since this page opened (they arrive live from workflowEvents)");
  }

  // --- live updates over /ws ----------------------------------------------------------

  function connectLive(workflows) {
    if (!state.ws) {
      const url = new URL(WS_PATH, location.href);
      url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
      state.ws = graphqlWs.createClient({
        url: url.href,
        connectionParams: () => (state.key ? { Authorization: `Bearer ${state.key}` } : {}),
        retryAttempts: Infinity,
        shouldRetry: () => true,
        on: {
          connected: () => live("connected", "live"),
          closed: () => live("closed", "live: reconnecting"),
          connecting: () => live("connecting", "live: connecting"),
        },
      });
    }
    const wanted = new Set(workflows.slice(0, MAX_SUBSCRIPTIONS).map((w) => w.id));
    for (const [id, stop] of Object.entries(state.subscriptions)) {
      if (!wanted.has(id)) { stop(); delete state.subscriptions[id]; }
    }
    for (const id of wanted) {
      if (state.subscriptions[id]) continue;
      state.subscriptions[id] = state.ws.subscribe({ query: EVENTS, variables: { id } }, {
        next: (message) => message.data && onEvent(message.data.workflowEvents),
        error: (error) => status(`workflowEvents(${id}): ${error.message || error[0]?.message || error}`, true),
        complete: () => delete state.subscriptions[id],
      });
    }
  }

  function live(name, label) {
    $("live").dataset.state = name;
    $("live").textContent = label;
  }

  function onEvent(event) {
    const counts = state.counts[event.workflow_id];
    if (counts) {
      const move = (place, by) => { if (place in counts) counts[place] = Math.max(0, counts[place] + by); };
      if (event.type === "token_created") move(event.to_place, 1);
      else if (event.type === "token_transitioned") { move(event.from_place, -1); move(event.to_place, 1); }
      else if (event.type === "token_deleted") move(event.to_place, -1);
      showCounts(event.workflow_id);
      reconcileSoon(event.workflow_id);
    }
    if (event.type !== "token_updated") {
      state.events.unshift(event);
      state.events.length = Math.min(state.events.length, MAX_EVENTS);
      renderEvents();
    }
  }

  // the counts the server holds, shortly after a burst of events (an event missed while
  // reconnecting, or one counted twice, is corrected here)
  function reconcileSoon(workflowId) {
    clearTimeout(state.reconcile[workflowId]);
    state.reconcile[workflowId] = setTimeout(async () => {
      try {
        const data = await graphql(COUNTS, { id: workflowId });
        if (data.workflow) {
          state.counts[workflowId] = Object.fromEntries(data.workflow.place_counts.map((c) => [c.place, c.tokens]));
          showCounts(workflowId);
        }
      } catch (error) {
        status(error.message, true);
      }
    }, 1500);
  }

  // --- controls -------------------------------------------------------------------------

  function schedule() {
    clearInterval(state.timer);
    const seconds = Number($("refresh").value);
    if (seconds > 0) state.timer = setInterval(load, seconds * 1000);
  }

  function restartLive() {
    for (const stop of Object.values(state.subscriptions)) stop();
    state.subscriptions = {};
    state.ws?.dispose();
    state.ws = null;
  }

  $("range").addEventListener("submit", (event) => {
    event.preventDefault();
    if ($("range-end").value < $("range-start").value) return status("The end of the range is before its start.", true);
    load();
  });
  $("granularity").addEventListener("change", () => $("range").requestSubmit());
  $("refresh").addEventListener("change", schedule);
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("api-key").value.trim();
    sessionStorage.setItem(KEY_NAME, state.key);
    $("api-key").value = "";
    restartLive();
    load();
  });
  $("forget-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_NAME);
    state.key = null;
    restartLive();
    load(); // asks for a key again if the server requires one
  });

  const today = new Date();
  $("range-end").value = utcDay(today);
  $("range-start").value = utcDay(new Date(today.getTime() - 6 * 86400000));
  renderEvents();
  schedule();
  load();
})();
