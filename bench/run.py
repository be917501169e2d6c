"""``make bench``: our server against LiteLLM's proxy, Portkey's gateway, nginx itself and
the stack's ceiling.

Starts nginx as a fixed local upstream, the targets (direct; ceiling, a minimal Flask view
forwarding with urllib3 on our gunicorn worker; ours; LiteLLM; Portkey; one worker each;
and ours on NATS with two workers), loads them with wrk at each concurrency for JSON and streamed chat
completions, interleaving the targets cell by cell, then runs the GraphQL benchmark, prints
the table and writes bench/results/<timestamp>.md and .json. Every process it starts is
stopped when it ends, fails or is interrupted. Only 127.0.0.1 is ever contacted.

Settings (environment or flags): BENCH_DURATION (seconds per cell, 10), BENCH_WARMUP (2),
BENCH_CONCURRENCY (1,32,128), BENCH_TARGETS (direct,ceiling,essential,ceiling_2w,ours,ours_nats,litellm,portkey), BENCH_MODES
(json,stream,agent: a Claude Code-sized Messages stream, direct and ours only), BENCH_WRK_THREADS (1), BENCH_GRAPHQL (1 runs it, 0 skips), BENCH_SUBSCRIBERS
(100), BENCH_GRAPHQL_CONNECTIONS (32), BENCH_BASE_REV (6312fbd: the commit the ours_base target, not in
the default list, runs), BENCH_KEEP_LOGS (1 keeps the temp directory).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from graphql_bench import run_graphql_bench  # noqa: E402
from load import post_script, run_wrk, wrk_binary  # noqa: E402
from procs import BenchError, Supervisor, nats_server_binary, run, tree_cpu_seconds  # noqa: E402
from report import render  # noqa: E402
from targets import ALL, Target  # noqa: E402
from upstream import start_upstream  # noqa: E402
from workflow_scale import run_workflow_scale  # noqa: E402

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=float(env("BENCH_DURATION", "10")))
    p.add_argument("--warmup", type=float, default=float(env("BENCH_WARMUP", "2")))
    p.add_argument("--concurrency", default=env("BENCH_CONCURRENCY", "1,32,128"))
    p.add_argument(
        "--targets", default=env("BENCH_TARGETS", "direct,ceiling,essential,ceiling_2w,ours,ours_nats,litellm,portkey")
    )
    p.add_argument("--modes", default=env("BENCH_MODES", "json,stream,agent"))
    p.add_argument("--wrk-threads", type=int, default=int(env("BENCH_WRK_THREADS", "1")))
    p.add_argument("--gateway", type=int, default=int(env("BENCH_GATEWAY", "1")))
    p.add_argument("--graphql", type=int, default=int(env("BENCH_GRAPHQL", "1")))
    p.add_argument("--subscribers", type=int, default=int(env("BENCH_SUBSCRIBERS", "100")))
    p.add_argument("--graphql-connections", type=int, default=int(env("BENCH_GRAPHQL_CONNECTIONS", "32")))
    p.add_argument("--workflow-scale", type=int, default=int(env("BENCH_WORKFLOW_SCALE", "1")))
    p.add_argument("--keep-logs", type=int, default=int(env("BENCH_KEEP_LOGS", "0")))
    args = p.parse_args(argv)
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    known = {cls.name for cls in ALL}
    if unknown := set(args.targets) - known:
        p.error(f"unknown targets {sorted(unknown)} (known: {sorted(known)})")
    if unknown := set(args.modes) - {"json", "stream", "agent"}:
        p.error(f"unknown modes {sorted(unknown)}")
    if not 0 < args.duration <= 600 or args.warmup < 0 or not args.concurrency or min(args.concurrency) < 1:
        p.error("duration must be in (0, 600] seconds, warm-up >= 0, concurrency >= 1")
    return args


def start_targets(sup: Supervisor, upstream, workdir: Path, names: list[str]) -> tuple[list[Target], dict]:
    started, failed = [], {}
    for cls in ALL:
        if cls.name not in names:
            continue
        target = cls()
        say(f"starting {target.label}")
        try:
            target.start(sup, upstream, workdir)
            started.append(target)
        except BenchError as exc:
            failed[target.name] = f"did not start: {exc}"
            say(f"  {target.label} did not start: {exc}")
    return started, failed


def prepare_modes(targets: list[Target], workdir: Path, args) -> dict:
    """Probe each target in each mode with one real request, write wrk scripts, warm up.

    Returns {(target, mode): script path or an error string}.
    """
    ready = {}
    for target in targets:
        for mode in args.modes:
            if mode not in target.modes:
                continue
            reason = target.probe(mode)
            if reason:
                ready[(target.name, mode)] = f"{mode} request failed: {reason}"
                say(f"  {target.label} {mode}: FAILS ({reason})")
                continue
            url, path, body, headers = target.request(mode)
            script = workdir / f"{target.name}-{mode}.lua"
            script.write_text(post_script(path, body, headers))
            ready[(target.name, mode)] = script
            if args.warmup:
                run_wrk(url, script, max(args.concurrency), args.warmup, args.wrk_threads)
    return ready


def run_matrix(targets: list[Target], ready: dict, failed: dict, args) -> list[dict]:
    """One wrk run per (mode, concurrency, target); the target order rotates from cell to cell."""
    cells, order = [], [t for t in targets]
    for mode in args.modes:
        for concurrency in args.concurrency:
            row = {"mode": mode, "concurrency": concurrency, "targets": {}}
            for target in order:
                if mode not in target.modes:
                    continue
                prepared = ready.get((target.name, mode))
                if not isinstance(prepared, Path):
                    row["targets"][target.name] = {"error": prepared or "not prepared"}
                    continue
                say(f"  {mode:6} c={concurrency:<4} {target.label}")
                pid = target.pid(mode)
                cpu_before = tree_cpu_seconds(pid) if pid else None
                try:
                    result = run_wrk(target.request(mode)[0], prepared, concurrency, args.duration, args.wrk_threads)
                    row["targets"][target.name] = {**result.to_dict(), "error_count": result.error_count}
                    cpu_after = tree_cpu_seconds(pid) if cpu_before is not None else None
                    if cpu_after is not None and result.requests:
                        # the whole server (master and workers); requests in flight at the cell's edges are noise
                        row["targets"][target.name]["cpu_ms_per_request"] = round(
                            (cpu_after - cpu_before) * 1000 / result.requests, 3
                        )
                except BenchError as exc:
                    row["targets"][target.name] = {"error": str(exc)[:300]}
            for name, reason in failed.items():
                if any(cls.name == name and mode in cls.modes for cls in ALL):
                    row["targets"][name] = {"error": reason}
            row["targets"] = {cls.name: row["targets"][cls.name] for cls in ALL if cls.name in row["targets"]}
            cells.append(row)
            order = order[1:] + order[:1]
    return cells


def versions(targets: list[Target]) -> dict:
    found = {"python": platform.python_version()}
    for target in targets:
        try:
            found[target.name if target.name != "direct" else "nginx"] = target.version()
        except (BenchError, OSError) as exc:
            found[target.name] = f"? ({exc.__class__.__name__})"
    try:
        found["wrk"] = run([wrk_binary(), "-v"], timeout=10).stdout.split()[1]
    except (BenchError, OSError, IndexError):
        found["wrk"] = "?"
    if shutil.which("node"):
        found["node"] = run(["node", "--version"], timeout=10).stdout.strip()
    nats = nats_server_binary()
    if Path(nats).exists():
        found["nats-server"] = run([nats, "--version"], timeout=10).stdout.strip().split()[-1]
    return found


def write_results(results: dict) -> tuple[Path, str]:
    RESULTS.mkdir(exist_ok=True)
    stamp = results["started"].replace(":", "").replace("-", "")
    text = render(results)
    (RESULTS / f"{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    path = RESULTS / f"{stamp}.md"
    path.write_text(text)
    return path, text


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["PATH"] = os.environ.get("PATH", "") + ":/usr/sbin"
    workdir = Path(tempfile.mkdtemp(prefix="cb-bench-"))
    started = datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
    t0, keep = time.monotonic(), bool(args.keep_logs)
    results = {
        "started": started,
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "loadavg_start": os.getloadavg()},
        "settings": {
            "duration": args.duration,
            "warmup": args.warmup,
            "concurrency": args.concurrency,
            "wrk_threads": args.wrk_threads,
            "modes": args.modes,
            "targets": args.targets,
        },
        "notes": [],
    }
    try:
        with Supervisor(workdir) as sup:
            results["cells"] = []
            if args.gateway:
                upstream = start_upstream(sup, workdir)
                say(f"nginx upstream on 127.0.0.1:{upstream.json_port} (JSON) and :{upstream.sse_port} (SSE)")
                targets, failed = start_targets(sup, upstream, workdir, args.targets)
                keep = keep or bool(failed)
                say("probing and warming up")
                ready = prepare_modes(targets, workdir, args)
                say("measuring")
                results["cells"] = run_matrix(targets, ready, failed, args)
                results["versions"] = versions(targets)
                sup.stop_all()
            if args.graphql:
                say("GraphQL benchmark")
                results["graphql"] = run_graphql_bench(
                    sup, workdir, args.duration, args.graphql_connections, args.subscribers, say=say
                )
                sup.stop_all()
            if args.workflow_scale:
                say("workflow engine at scale (NATS)")
                results["workflow_scale"] = run_workflow_scale(sup, workdir, say=say)
    except KeyboardInterrupt:
        say("interrupted: all benchmark processes stopped")
        return 130
    except BenchError as exc:
        say(f"benchmark failed: {exc}\nlogs kept in {workdir}")
        return 1
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results["machine"]["loadavg_end"] = os.getloadavg()
    results["seconds"] = round(time.monotonic() - t0, 1)
    if max(results["machine"]["loadavg_start"][0], results["machine"]["loadavg_end"][0]) > 0.5 * (os.cpu_count() or 1):
        results["notes"].append(
            f"other processes were using the CPU (load average {results['machine']['loadavg_start'][0]:.1f}"
            f" at the start, {results['machine']['loadavg_end'][0]:.1f} at the end): numbers are noisy"
        )
    path, text = write_results(results)
    print(text)
    say(
        f"written to {path} and {path.with_suffix('.json')} in {results['seconds']:.0f}s"
        + (f"; logs kept in {workdir}" if keep else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
