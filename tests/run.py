"""`make test`: start a JetStream nats-server on a free port with a temporary store, run
pytest against it, stop it. Extra arguments go to pytest."""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.harness import NatsServer  # noqa: E402


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="cb-nats-") as store:
        nats = NatsServer(Path(store))
        nats.start()
        try:
            env = dict(os.environ, CB_TEST_NATS_URL=nats.url)
            return subprocess.call([sys.executable, "-m", "pytest", *sys.argv[1:]], env=env)
        finally:
            nats.stop()


if __name__ == "__main__":
    sys.exit(main())
