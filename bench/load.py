"""Load generation with wrk: a POST body from a Lua script, results printed by Lua's ``done``.

wrk counts a request when its whole response has arrived, so for a stream the latency is
the time to the last byte. Its ``done`` hook prints one ``BENCH_RESULT {json}`` line with
the count, duration, latency percentiles and error counts, which :func:`parse` reads.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from procs import BenchError, run

RESULT_MARK = "BENCH_RESULT "

DONE_HOOK = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def lua_string(text: str) -> str:
    """A Lua long-bracket string literal that cannot be closed by ``text``."""
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def post_script(path: str, body: str, headers: dict[str, str]) -> str:
    """A wrk script sending ``POST path`` with ``body`` and ``headers`` on every request."""
    lines = ['wrk.method = "POST"', f"wrk.path = {lua_string(path)}", f"wrk.body = {lua_string(body)}"]
    for name, value in headers.items():
        lines.append(f"wrk.headers[ {lua_string(name)} ] = {lua_string(value)}")
    return "\n".join(lines) + "\n" + DONE_HOOK


@dataclass
class LoadResult:
    requests: int
    duration_us: int
    p50_us: int
    p90_us: int
    p99_us: int
    max_us: int
    mean_us: float
    errors: dict = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / (self.duration_us / 1e6) if self.duration_us else 0.0

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def to_dict(self) -> dict:
        return {**asdict(self), "rps": round(self.rps, 1)}


def parse(stdout: str, stderr: str = "") -> LoadResult:
    for line in stdout.splitlines():
        if line.startswith(RESULT_MARK):
            raw = json.loads(line[len(RESULT_MARK) :])
            errors = {
                k: raw.pop(k) for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts")
            }
            raw.pop("bytes", None)
            return LoadResult(errors=errors, **raw)
    raise BenchError(f"wrk printed no result line: {stderr.strip()[-500:]}\n{stdout[-1500:]}")


def wrk_binary() -> str:
    found = shutil.which("wrk")
    if not found:
        raise BenchError("wrk is not installed (make bench installs it with apt-get)")
    return found


def run_wrk(
    url: str, script: Path, connections: int, duration: float, threads: int = 1, timeout_s: float = 10.0
) -> LoadResult:
    """Run wrk against ``url`` (always 127.0.0.1) for ``duration`` seconds and parse its result."""
    if not url.startswith("http://127.0.0.1:"):
        raise BenchError(f"refusing to load {url}: the benchmark only targets 127.0.0.1")
    threads = max(1, min(threads, connections))
    argv = [
        wrk_binary(),
        "--latency",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{duration:g}s",
        "--timeout",
        f"{timeout_s:g}s",
        "-s",
        str(script),
        url,
    ]
    done = run(argv, timeout=duration + timeout_s + 30)
    if done.returncode != 0:
        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return parse(done.stdout, done.stderr)
