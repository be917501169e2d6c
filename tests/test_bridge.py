"""The gevent-to-asyncio bridge (cb.storage.bridge) in a monkey-patched process, as in a worker."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# Every storage call first asks whether the bridge runs. That question must not yield to
# other greenlets: a stream's pump stopped there (its client left) once marked the bridge's
# loop stopped for good, and every later NATS call of the worker failed
# (tests/test_nats_faults.py has the served case).
_ASKING = textwrap.dedent("""
    from gevent import monkey; monkey.patch_all()
    import gevent
    from cb.storage.bridge import Bridge

    bridge = Bridge("test-bridge")
    bridge.start()

    async def answer():
        return 42

    others = []
    gevent.spawn(others.append, "ran")
    asked = [bridge.running for _ in range(100)]
    print(all(asked), others == [], bridge.run(answer(), 5))
""")


def test_asking_whether_the_bridge_runs_lets_no_other_greenlet_run():
    run = subprocess.run(
        [sys.executable, "-c", _ASKING], cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True", "True", "42"]
