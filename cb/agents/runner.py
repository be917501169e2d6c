"""The agent runner: one per worker. Starts executions, runs the ones it claims, sweeps.

* Every worker hears every token event (bus subject ``events.>``). A token that entered
  a place with an enabled place agent gets an execution whose id is derived from the
  token and its entry into the place, so every worker creates the same one and all but
  the first get a harmless conflict. Each then tries to claim it; the compare-and-set
  lets exactly one win, and only the winner runs it, in a background greenlet.
* While it runs, a heartbeat renews the lease every third of AGENT_LEASE_SECONDS. If the
  worker dies, the lease runs out and a sweeper (one greenlet per worker, every
  AGENT_SWEEP_SECONDS) claims it and carries on: from the start, or, if the result was
  already known, by applying it without calling the model again.
* Attempts are retried with doubling backoff; ``timeout_seconds`` bounds the whole
  execution (TIMEOUT). After the last failure the execution is FAILED and the failure
  transition fires; on success the output is stored in the token's data under
  ``output_key`` and the auto transition fires.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import uuid

import gevent

from cb import metrics
from cb.agents import template
from cb.agents.calls import AgentCaller
from cb.agents.errors import Cancelled, LeaseLost, OutputNotJSON, TemplateError
from cb.agents.executions import ExecutionStore, Lease
from cb.agents.model import COMPLETED, FAILED, TIMEOUT, Execution, Plan
from cb.agents.registry import AgentRegistry
from cb.errors import CircuitBreakerError, Conflict, NotFound, ValidationError
from cb.llm.errors import LLMError, UpstreamError
from cb.logs import get_logger
from cb.workflow import WorkflowEngine
from cb.workflow.model import Token, now

log = get_logger("agents")

EXECUTION_IDS = uuid.UUID("6f1c2d7e-5a4b-4c3d-9e8f-0a1b2c3d4e5f")
MAX_TAKEOVERS = 3
TOKEN_EVENTS = ("token_created", "token_transitioned")


class _TimedOut(BaseException):
    """The execution's timeout_seconds ran out (BaseException: nothing on the way may swallow it)."""


class _Permanent(Exception):
    """A failure no retry can fix (missing field, disabled agent, budget used up)."""


def _ms_since(ts: float) -> float:
    return round((time.time() - ts) * 1000, 3)


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, OutputNotJSON):
        return True
    if isinstance(exc, UpstreamError):
        return exc.retryable or exc.http_status >= 500
    return False


EXPIRY_SECONDS = 60.0  # how often a worker deletes executions past their retention


class AgentRunner:
    """Runs this worker's share of the executions."""

    def __init__(
        self,
        registry: AgentRegistry,
        store: ExecutionStore,
        workflows: WorkflowEngine,
        caller: AgentCaller,
        lease_seconds: float = 15.0,
        sweep_seconds: float = 5.0,
        retention_seconds: float = 604800.0,
    ):
        self.registry, self.store, self.workflows, self.caller = registry, store, workflows, caller
        self.lease_seconds = lease_seconds
        self.sweep_seconds = sweep_seconds
        self.retention_seconds = retention_seconds
        self._next_expiry = 0.0
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.running: dict[str, gevent.Greenlet] = {}
        self._subscriptions: list = []
        self._sweeper: gevent.Greenlet | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        bus = self.store.bus
        self._subscriptions = [
            bus.subscribe("events.>", self._on_token_event),
            bus.subscribe("agents.control", self._on_control),
        ]
        self._sweeper = gevent.spawn(self._sweep_forever)

    def stop(self) -> None:
        """Stop taking work; executions running here are left to the others once their lease ends."""
        for subscription in self._subscriptions:
            subscription.close()
        if self._sweeper is not None:
            self._sweeper.kill(block=False)
        for greenlet in list(self.running.values()):
            greenlet.kill(block=False)

    # -- triggers ---------------------------------------------------------------------------

    def _on_token_event(self, _subject: str, event: dict) -> None:
        if event.get("type") not in TOKEN_EVENTS or not event.get("token"):
            return
        try:
            self.token_arrived(Token.from_dict(event["token"]))
        except CircuitBreakerError as exc:  # the sweeper retries anything already created
            log.warning("could not start an agent for token %s: %s", event.get("token_id"), exc.message)

    def token_arrived(self, token: Token) -> Execution | None:
        """Create (once, whichever worker is first) and try to claim the execution this arrival starts."""
        place_agent = self.registry.place_agent(token.workflow_id, token.place)
        if place_agent is None or not place_agent.enabled:
            return None
        try:
            agent = self.registry.get(place_agent.agent_id)
        except NotFound:
            agent = None
        if agent is None or agent.status != "ACTIVE":
            log.info("token %s entered %s, whose agent %s is not active", token.id, token.place, place_agent.agent_id)
            return None
        entry = len(token.history)
        execution = Execution(
            id=str(uuid.uuid5(EXECUTION_IDS, f"{token.id}/{entry}")),
            agent_id=place_agent.agent_id,
            token_id=token.id,
            workflow_id=token.workflow_id,
            place=token.place,
            plan=Plan.of(place_agent),
            entry=entry,
        )
        if self.store.create(execution):
            log.info(
                "execution %s created: agent %s on token %s in %s",
                execution.id,
                execution.agent_id,
                token.id,
                token.place,
            )
        else:
            execution = self.store.get(execution.id)
        self._claim(execution)
        return execution

    def run_manual(
        self, agent_id: str, token_id: str, output_key: str | None = None, parse_json: bool = False
    ) -> Execution:
        """runAgent: run an agent on a token now; returns at once, the execution proceeds in the background."""
        agent = self.registry.get(agent_id)
        if agent.status != "ACTIVE":
            raise ValidationError(f"agent {agent_id!r} is {agent.status}")
        token = self.workflows.get_token(token_id)
        execution = Execution(
            id=str(uuid.uuid4()),
            agent_id=agent_id,
            token_id=token.id,
            workflow_id=token.workflow_id,
            place=token.place,
            plan=Plan(output_key=output_key or None, parse_json=parse_json),
            trigger="manual",
            entry=len(token.history),
        )
        self.store.create(execution)
        return self._claim(execution) or execution

    def _on_control(self, _subject: str, event: dict) -> None:
        running = self.running.get(event.get("execution_id"))
        if event.get("type") == "cancel" and running is not None:
            running.kill(Cancelled("cancelled"), block=False)

    def _claim(self, execution: Execution) -> Execution | None:
        if execution.id in self.running:
            return None
        lease = self.store.claim(execution, self.worker, self.lease_seconds)
        if lease is None:
            return None
        self.running[execution.id] = gevent.spawn(self._run, lease)
        return lease.execution

    # -- the sweeper ------------------------------------------------------------------------

    def _sweep_forever(self) -> None:
        while True:
            gevent.sleep(self.sweep_seconds * random.uniform(0.8, 1.2))
            try:
                self.sweep()
                if time.monotonic() >= self._next_expiry:
                    self._next_expiry = time.monotonic() + EXPIRY_SECONDS * random.uniform(0.8, 1.2)
                    self.store.expire(self.retention_seconds)
            except CircuitBreakerError as exc:
                log.debug("sweep skipped: %s", exc.message)
            except Exception:
                log.exception("sweep failed")

    def sweep(self) -> int:
        """Claim every execution that waits for a worker or whose lease ran out; returns how many."""
        claimed = 0
        at = time.time()
        for execution in self.store.unfinished():
            if execution.id not in self.running and execution.claimable(at) and self._claim(execution):
                claimed += 1
        return claimed

    # -- running ----------------------------------------------------------------------------

    def _run(self, lease: Lease) -> None:
        execution = lease.execution
        me = gevent.getcurrent()
        heart = gevent.spawn(self._heartbeat, lease, me)
        try:
            self.store.publish_status(execution)
            if execution.outcome is None:
                self._work(lease)
            self._finish(lease)
        except Cancelled:
            log.info("execution %s cancelled", execution.id)
        except LeaseLost as exc:
            log.warning("execution %s: stopped here, %s", execution.id, exc)
        except CircuitBreakerError as exc:  # storage away: the lease runs out and a worker resumes it
            log.warning("execution %s interrupted: %s", execution.id, exc.message)
        except Exception:
            log.exception("execution %s failed unexpectedly", execution.id)
            self._fail_quietly(lease, "internal error while running the agent")
        finally:
            heart.kill(block=False)
            self.running.pop(execution.id, None)

    def _heartbeat(self, lease: Lease, worker: gevent.Greenlet) -> None:
        while True:
            gevent.sleep(lease.seconds / 3)
            try:
                lease.write()
            except (Cancelled, LeaseLost) as exc:
                worker.kill(exc, block=False)
                return
            except CircuitBreakerError as exc:
                if lease.expires_in < lease.seconds / 3:  # somebody may take over soon: stop first
                    worker.kill(LeaseLost(f"could not renew the lease ({exc.message})"), block=False)
                    return

    def _work(self, lease: Lease) -> None:
        """Call the model until it succeeds or the attempts run out; records the outcome."""
        execution = lease.execution
        plan = execution.plan
        left = plan.timeout_seconds - (time.time() - (execution.started_ts or time.time()))
        timer = gevent.Timeout(max(left, 0.001), _TimedOut)
        timer.start()
        try:
            self._attempts(lease)
        except _TimedOut:
            self._outcome(lease, TIMEOUT, error=f"the agent did not finish within {plan.timeout_seconds:g} seconds")
        except _Permanent as exc:
            self._outcome(lease, FAILED, error=str(exc))
        finally:
            timer.close()

    def _prepare(self, execution: Execution):
        try:
            agent = self.registry.get(execution.agent_id)
            token = self.workflows.get_token(execution.token_id)
        except NotFound as exc:
            raise _Permanent(exc.message) from None
        if agent.status != "ACTIVE":
            raise _Permanent(f"agent {agent.id!r} is {agent.status}")
        if execution.trigger == "place" and (token.place != execution.place or len(token.history) != execution.entry):
            raise _Permanent(f"the token left place {execution.place!r} before the agent ran")
        try:
            prompt = template.render(agent.user_template, token.to_dict())
        except TemplateError as exc:
            raise _Permanent(exc.message) from None
        return agent, prompt

    def _attempts(self, lease: Lease) -> None:
        execution = lease.execution
        if execution.takeovers > MAX_TAKEOVERS:
            raise _Permanent(f"abandoned by {execution.takeovers} workers in a row")
        agent, prompt = self._prepare(execution)
        model = self.caller.model_name(agent)

        def set_input(x: Execution) -> None:
            x.input = {"model": model, "system": agent.system_prompt or None, "prompt": prompt}

        lease.write(set_input)
        allowed = execution.plan.retry.max_attempts + min(execution.takeovers, MAX_TAKEOVERS)
        while True:
            execution = lease.write(lambda x: setattr(x, "attempts", x.attempts + 1))
            try:
                key = self.registry.api_key(agent)
                result = self.caller.call(
                    agent,
                    prompt,
                    key,
                    execution.workflow_id,
                    lambda text: self.store.publish_output(lease.execution, text),
                )
                output = self._parse(result.text, execution.plan.parse_json)
            except (LLMError, OutputNotJSON, CircuitBreakerError) as exc:
                message = getattr(exc, "message", str(exc))
                if isinstance(exc, CircuitBreakerError) and not isinstance(exc, (LLMError, OutputNotJSON)):
                    raise  # storage trouble, not the agent's: leave it to the lease
                if not _retryable(exc) or execution.attempts >= allowed:
                    self._outcome(lease, FAILED, error=f"attempt {execution.attempts}: {message}")
                    return
                log.warning("execution %s attempt %d failed, retrying: %s", execution.id, execution.attempts, message)
                execution = lease.write(lambda x, m=message: setattr(x, "error", m))
                self.store.publish_status(execution)
                gevent.sleep(execution.plan.retry.delay(execution.attempts))
                continue
            self._outcome(lease, COMPLETED, output=output, usage=result.usage(), cost=result.cost_usd)
            return

    @staticmethod
    def _parse(text: str, parse_json: bool):
        if not parse_json:
            return text
        stripped = text.strip()
        if stripped.startswith("```"):  # a fenced block: take what is inside
            stripped = stripped.strip("`").removeprefix("json").strip()
        try:
            return json.loads(stripped)
        except ValueError as exc:
            raise OutputNotJSON(
                f"the output is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): {text[:200]!r}"
            ) from None

    def _outcome(
        self,
        lease: Lease,
        outcome: str,
        error: str | None = None,
        output=None,
        usage: dict | None = None,
        cost: float = 0.0,
    ) -> None:
        def record(x: Execution) -> None:
            x.outcome, x.error, x.output = outcome, error, output
            if usage is not None:
                x.usage, x.cost_usd = usage, round(x.cost_usd + cost, 10)

        lease.write(record)

    # -- effects on the token -----------------------------------------------------------

    def _finish(self, lease: Lease) -> None:
        """Apply the outcome to the token (once), then record the final status."""
        execution = lease.execution
        status, error = execution.outcome, execution.error
        if status == COMPLETED:
            problem = self._store_output(execution)
            if problem:
                status, error = FAILED, problem
        if status in (FAILED, TIMEOUT) and execution.plan.failure_transition:
            problem = self._fire_once(execution, execution.plan.failure_transition, {})
            if problem:
                error = f"{error}; {problem}"

        def final(x: Execution) -> None:
            x.status, x.error, x.owner = status, error, None
            x.completed_at = now()
            x.duration_ms = _ms_since(x.started_ts or time.time())

        execution = lease.write(final)
        metrics.agent_executions.labels(execution.status).inc()
        log.info(
            "execution %s %s after %d attempt(s) on %s%s",
            execution.id,
            execution.status,
            execution.attempts,
            self.worker,
            f": {execution.error}" if execution.error else "",
        )
        self.store.publish_status(execution)

    def _store_output(self, execution: Execution) -> str | None:
        plan = execution.plan
        data = {plan.output_key: execution.output} if plan.output_key else {}
        if plan.auto_transition:
            return self._fire_once(execution, plan.auto_transition, data)
        if data:
            try:
                self.workflows.merge_data(execution.token_id, data)
            except CircuitBreakerError as exc:
                if isinstance(exc, NotFound):
                    return f"the output could not be stored: {exc.message}"
                raise
        return None

    def _fire_once(self, execution: Execution, transition: str, data: dict) -> str | None:
        """Fire ``transition`` unless this execution already did (a worker before us); a problem or None."""

        def fired() -> bool:
            history = self.workflows.get_token(execution.token_id).history
            return len(history) > execution.entry and history[execution.entry].transition == transition

        try:
            if fired():
                return None
            self.workflows.fire(execution.token_id, transition, data)
            return None
        except (Conflict, CircuitBreakerError) as exc:
            if isinstance(exc, CircuitBreakerError) and exc.code == "STORAGE_UNAVAILABLE":
                raise
            try:
                if fired():
                    return None
            except NotFound:
                pass
            return f"transition {transition!r} could not fire: {exc.message}"

    def _fail_quietly(self, lease: Lease, message: str) -> None:
        try:
            if not lease.execution.finished:
                self._outcome(lease, FAILED, error=message)
                self._finish(lease)
        except Exception:  # the lease will run out; another worker retries
            log.warning("execution %s could not be marked FAILED", lease.execution.id)
