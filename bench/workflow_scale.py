"""The workflow engine at scale, on NATS: a small listing in a big store, and an idle worker
with a long history.

Listing: 100 workflows of 1,000 tokens each (100,000 tokens) are created through the
engine (:class:`WorkflowEngine` on :class:`NatsStorage`, as a worker writes them, 64 at a
time), 100 tokens of the first workflow are fired into ``done``, then one client lists
``tokens(workflow_id, place: "done")`` (100 tokens) over and over; we report p50/p99.

Idle CPU: 100,000 finished agent executions are written through the :class:`ExecutionStore`,
then a fresh NATS worker starts on that store; after it has settled, the CPU time its
processes (master and worker) use while nobody calls it is read from ``/proc`` over 30 s.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from pathlib import Path

import requests
from gevent.pool import Pool
from graphql_bench import GraphQLServer, start_nats, start_server
from procs import BenchError, Supervisor

from cb.agents.executions import ExecutionStore
from cb.agents.model import COMPLETED, Execution
from cb.events import EventBus
from cb.storage.nats import NatsStorage
from cb.workflow import Workflow, WorkflowEngine
from cb.workflow.model import Transition

WORKFLOWS = 100
TOKENS_PER_WORKFLOW = 1000
LISTED = 100
EXECUTIONS = 100_000
CONCURRENCY = 64
LISTING = 'query($w: ID) { tokens(workflow_id: $w, place: "done") { id place } }'


def _parallel(work, items, concurrency: int = CONCURRENCY) -> None:
    # greenlets of this thread's hub: NatsStorage waits on its asyncio bridge through the hub
    for _ in Pool(concurrency).imap_unordered(work, items):
        pass


def seed_tokens(nats_url: str, prefix: str, say=print) -> list[str]:
    """100 workflows with 1,000 tokens each, written by the engine; 100 of the first fired."""
    storage = NatsStorage(nats_url, prefix=prefix)
    storage.connect()
    try:
        engine = WorkflowEngine(storage, EventBus(storage))
        engine.migrate()  # as a worker does at start: this store has the current layout
        ids = [f"scale_{n:03d}" for n in range(WORKFLOWS)]
        for workflow_id in ids:
            engine.create_workflow(
                Workflow(
                    id=workflow_id,
                    name=workflow_id,
                    places=("start", "done"),
                    initial_place="start",
                    transitions=(Transition("go", "go", ("start",), "done"),),
                )
            )
        started = time.monotonic()
        first: list[str] = []

        def create(n: int) -> None:
            token = engine.create_token(ids[n % WORKFLOWS])
            if n % WORKFLOWS == 0 and len(first) < LISTED:
                first.append(token.id)

        _parallel(create, range(WORKFLOWS * TOKENS_PER_WORKFLOW))
        say(f"  workflow scale: {WORKFLOWS * TOKENS_PER_WORKFLOW} tokens created in {time.monotonic() - started:.0f} s")
        _parallel(lambda token_id: engine.fire(token_id, "go"), first)
        return ids
    finally:
        storage.close()


def seed_executions(nats_url: str, prefix: str, say=print) -> None:
    """100,000 finished agent executions, written as workers write them."""
    storage = NatsStorage(nats_url, prefix=prefix)
    storage.connect()
    try:
        store = ExecutionStore(storage, EventBus(storage))
        store.migrate()
        started = time.monotonic()

        def finish(n: int) -> None:
            execution = Execution(
                id=str(uuid.uuid4()),
                agent_id=f"agent-{n % 10}",
                workflow_id="scale",
                place="review",
                token_id=str(uuid.uuid4()),
            )
            store.create(execution)
            done = Execution.from_dict(execution.to_dict(), execution.revision)
            done.status, done.completed_at = COMPLETED, execution.created_at
            store.update(execution, done)

        _parallel(finish, range(EXECUTIONS))
        say(f"  workflow scale: {EXECUTIONS} finished executions written in {time.monotonic() - started:.0f} s")
    finally:
        storage.close()


def time_listing(server: GraphQLServer, workflow_id: str, rounds: int = 300) -> dict:
    session = requests.Session()
    body = {"query": LISTING, "variables": {"w": workflow_id}}
    for _ in range(20):  # warm-up: connection, document cache
        session.post(server.url + "/graphql", json=body, timeout=30)
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        answer = session.post(server.url + "/graphql", json=body, timeout=30).json()
        samples.append((time.perf_counter() - started) * 1000)
        if len(answer.get("data", {}).get("tokens") or []) != LISTED:
            raise BenchError(f"the listing answered {str(answer)[:300]}")
    samples.sort()
    return {
        "tokens_stored": WORKFLOWS * TOKENS_PER_WORKFLOW,
        "tokens_listed": LISTED,
        "rounds": rounds,
        "p50_ms": round(statistics.median(samples), 2),
        "p99_ms": round(samples[int(rounds * 0.99) - 1], 2),
    }


def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def _process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = [pid]
    for child in children.read_text().split() if children.exists() else []:
        found += _process_tree(int(child))
    return found


def idle_cpu(server: GraphQLServer, settle: float = 15, window: float = 30) -> dict:
    requests.get(server.url + "/health", timeout=10)
    time.sleep(settle)  # start-up work (migrations, first sweeps) is done
    pids = _process_tree(server.proc.pid)
    before, started = _cpu_seconds(pids), time.monotonic()
    time.sleep(window)
    used = _cpu_seconds(pids) - before
    return {
        "executions_stored": EXECUTIONS,
        "processes": len(pids),
        "seconds": window,
        "cpu_percent": round(100 * used / (time.monotonic() - started), 2),
    }


def run_workflow_scale(sup: Supervisor, workdir: Path, say=print) -> dict:
    results: dict = {}
    try:
        nats_url = start_nats(sup, workdir)
        prefix = "scale" + uuid.uuid4().hex[:6]
        say(f"  workflow scale: seeding {WORKFLOWS * TOKENS_PER_WORKFLOW} tokens in {WORKFLOWS} workflows")
        ids = seed_tokens(nats_url, prefix, say)
        server = start_server(sup, workdir, "nats", nats_url, prefix=prefix)
        results["listing"] = time_listing(server, ids[0])
        sup.stop(server.proc)
        say(f"  workflow scale: seeding {EXECUTIONS} finished executions")
        seed_executions(nats_url, prefix, say)
        server = start_server(sup, workdir, "nats", nats_url, prefix=prefix)
        results["idle"] = idle_cpu(server)
        sup.stop(server.proc)
    except (TimeoutError, BenchError, OSError, requests.RequestException) as exc:
        results["error"] = f"{exc.__class__.__name__}: {exc}"[:500]
        say(f"  workflow scale: FAILED {results['error']}")
    return results
