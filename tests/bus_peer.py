"""A separate process on the event bus, monkey-patched like a gunicorn worker.

``python tests/bus_peer.py subscribe URL PREFIX PATTERN`` prints ``ready``, then one JSON
line per event received, until stdin closes.
``python tests/bus_peer.py publish URL PREFIX SUBJECT COUNT`` publishes COUNT events.
"""

from gevent import monkey

monkey.patch_all()

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import gevent  # noqa: E402
from gevent.os import tp_read  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cb.events import EventBus  # noqa: E402
from cb.storage.nats import NatsStorage  # noqa: E402


def main(mode: str, url: str, prefix: str, subject: str, count: str = "1") -> None:
    storage = NatsStorage(url, prefix=prefix)
    storage.connect()
    bus = EventBus(storage)
    if mode == "subscribe":

        def show(name, event):
            print(json.dumps({"subject": name, "event": event}), flush=True)

        bus.subscribe(subject, show)
        print("ready", flush=True)
        while tp_read(sys.stdin.fileno(), 1):  # until the parent closes our stdin
            pass
    else:
        for n in range(int(count)):
            bus.publish(subject, {"n": n})
        gevent.sleep(0.1)
    storage.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
