"""Shared fixtures: free ports, a real nats-server, a real gunicorn server."""

from __future__ import annotations

import pytest

from tests.harness import NatsServer, Server


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory):
    """One JetStream nats-server for the whole run (``make test`` exports CB_TEST_NATS_URL)."""
    server = NatsServer.from_env_or_start(tmp_path_factory.mktemp("nats"))
    yield server
    server.stop()


@pytest.fixture(params=["memory", "nats"])
def backend(request):
    """Run a test once per storage backend."""
    return request.param


@pytest.fixture
def connected_storage(backend, request):
    """A connected storage of the test's backend (NATS in a namespace of its own), closed after it."""
    from cb.storage.memory import MemoryStorage
    from cb.storage.nats import NatsStorage

    if backend == "memory":
        store = MemoryStorage()
    else:
        store = NatsStorage(request.getfixturevalue("nats_server").url, prefix=Server.fresh_namespace())
    store.connect()
    yield store
    store.close()


@pytest.fixture
def server_factory(tmp_path, request):
    """Start gunicorn servers with extra environment; all stopped after the test."""
    started: list[Server] = []

    def start(backend: str = "memory", **env) -> Server:
        if backend == "nats":
            nats = request.getfixturevalue("nats_server")
            env.setdefault("NATS_URL", nats.url)
            env.setdefault("NATS_PREFIX", Server.fresh_namespace())
        server = Server(tmp_path, backend=backend, env=env)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.close()


@pytest.fixture
def server(server_factory):
    """A gunicorn server with memory storage and no providers."""
    return server_factory()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Leave each phase's report on the test item (``rep_setup``, ``rep_call``) for fixtures to read."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
