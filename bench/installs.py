"""Installs the competitors on first use, each in its own place under bench/ (git-ignored).

LiteLLM goes into bench/.litellm-venv from bench/requirements-litellm.txt, never into the
project's virtualenv; Portkey's gateway goes into bench/node_modules from bench/package.json
and its lock file. A stamp file holding the requirement's hash marks a finished install.
"""

from __future__ import annotations

import hashlib
import shutil
import sys
from pathlib import Path

from procs import BenchError, run

BENCH = Path(__file__).resolve().parent
LITELLM_VENV = BENCH / ".litellm-venv"
LITELLM_PYTHON = LITELLM_VENV / "bin" / "python"
LITELLM_REQUIREMENTS = BENCH / "requirements-litellm.txt"
PORTKEY_ENTRY = BENCH / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
INSTALL_TIMEOUT = 1200


def _digest(*paths: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in paths)).hexdigest()


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check(done, what: str, log_dir: Path) -> None:
    log = log_dir / f"install-{what}.log"
    log.write_text(f"$ {' '.join(done.args)}\n{done.stdout}\n{done.stderr}")
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()[-5:]
        raise BenchError(f"installing {what} failed ({done.returncode}), see {log}: " + " | ".join(lines))


def ensure_litellm(log_dir: Path) -> None:
    """Create bench/.litellm-venv and install the pinned LiteLLM proxy there when missing."""
    stamp = LITELLM_VENV / ".installed"
    want = _digest(LITELLM_REQUIREMENTS)
    if stamp.exists() and stamp.read_text() == want and LITELLM_PYTHON.exists():
        return
    _say(f"installing LiteLLM into {LITELLM_VENV.relative_to(BENCH.parent)} (first run only, a few minutes)")
    if not LITELLM_PYTHON.exists():
        base = shutil.which("python3.11") or sys.executable
        _check(run([base, "-m", "venv", str(LITELLM_VENV)], timeout=300), "litellm-venv", log_dir)
    pip = [str(LITELLM_PYTHON), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _check(run([*pip, "-r", str(LITELLM_REQUIREMENTS)], timeout=INSTALL_TIMEOUT), "litellm", log_dir)
    stamp.write_text(want)


def ensure_portkey(log_dir: Path) -> None:
    """Install @portkey-ai/gateway into bench/node_modules from the lock file when missing."""
    stamp = BENCH / "node_modules" / ".bench-installed"
    want = _digest(BENCH / "package.json", BENCH / "package-lock.json")
    if stamp.exists() and stamp.read_text() == want and PORTKEY_ENTRY.exists():
        return
    if not shutil.which("node") or not shutil.which("npm"):
        raise BenchError("node and npm are needed to run Portkey's gateway (apt-get install nodejs npm)")
    _say("installing @portkey-ai/gateway into bench/node_modules (first run only)")
    done = run(["npm", "ci", "--no-audit", "--no-fund", "--ignore-scripts"], timeout=INSTALL_TIMEOUT, cwd=str(BENCH))
    _check(done, "portkey", log_dir)
    if not PORTKEY_ENTRY.exists():
        raise BenchError(f"npm installed the gateway but {PORTKEY_ENTRY} is missing")
    stamp.write_text(want)
