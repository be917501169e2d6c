"""Circuit Breaker: one WSGI application serving two APIs on two ports.

``create_app()`` returns the GraphQL Flask app; its ``wsgi_app`` sends every request
that arrived on the OpenAI listener to the OpenAI Flask app instead. The listener is
``environ["SERVER_PORT"]``, which gunicorn and gevent set from the socket, so a Host
header cannot steer a request to the other API.

``python app.py`` serves both ports with gevent for development. The module's ``app``
(built on first access) is what the ``flask`` command finds (``.flaskenv`` sets
FLASK_APP=app): ``flask shell`` and the operators' ``flask cb …`` commands (commands/).
"""

from __future__ import annotations

from flask import Flask

from cb.config import Settings
from cb.services import Services, build_services


class PortDispatcher:
    """WSGI middleware: route by the listener port the request arrived on."""

    def __init__(self, graphql_app, openai_app, openai_port: int):
        self.graphql_app = graphql_app
        self.openai_app = openai_app
        self.openai_port = str(openai_port)

    def __call__(self, environ, start_response):
        if environ.get("SERVER_PORT") == self.openai_port:
            return self.openai_app(environ, start_response)
        return self.graphql_app(environ, start_response)


class _App(Flask):
    """Flask, asking once per view or hook whether it is a coroutine function (Flask asks again
    on every call: three times for each request on the OpenAI port)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sync: dict = {}

    def ensure_sync(self, func):
        sync = self._sync.get(func)
        if sync is None:
            sync = self._sync[func] = super().ensure_sync(func)
        return sync


def _flask_app(name: str, settings: Settings, services: Services) -> Flask:
    app = _App(name)
    app.extensions["circuit_breaker"] = services
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.json.sort_keys = False
    app.json.compact = True
    return app


def create_openai_app(settings: Settings, services: Services) -> Flask:
    from blueprints import gate, health, messages, openai, openapi, responses

    app = _flask_app("circuit_breaker.openai", settings, services)
    openai.install_error_handlers(app)
    gate.install(app, settings)
    app.register_blueprint(health.bp)
    app.register_blueprint(openai.bp)
    app.register_blueprint(messages.bp)
    app.register_blueprint(responses.bp)
    app.register_blueprint(openapi.bp)
    return app


def create_graphql_app(settings: Settings, services: Services) -> Flask:
    from blueprints import (
        auth,
        cors,
        dashboard,
        graphql,
        health,
        hosts,
        limits,
        mcp,
        metrics,
        observability,
        subscriptions,
    )
    from schema import scalars

    scalars.configure_depth(settings.max_json_depth)
    app = _flask_app("circuit_breaker.graphql", settings, services)
    limits.install_graphql_error_handlers(app)
    observability.install(app, "graphql")
    app.register_blueprint(metrics.bp)
    cors.install_graphql(app, settings)
    hosts.install_graphql(app, settings)
    app.register_blueprint(limits.graphql_bp)
    app.register_blueprint(auth.graphql_bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(graphql.bp)
    app.register_blueprint(subscriptions.bp)
    app.register_blueprint(dashboard.bp)
    mcp.install(app, services)
    app.choose_websocket_subprotocol = subscriptions.choose_subprotocol
    return app


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """Build both APIs over one set of services; returns the GraphQL app (the dispatcher).

    Without ``services`` it builds and starts them (a serving worker); given services are
    used as they are, started or not.
    """
    settings = settings or Settings.from_env()
    services = services or build_services(settings).start()
    graphql_app = create_graphql_app(settings, services)
    openai_app = create_openai_app(settings, services)
    graphql_app.wsgi_app = PortDispatcher(graphql_app.wsgi_app, openai_app.wsgi_app, settings.openai_port)
    return graphql_app


def create_cli_app() -> Flask:
    """The app the ``flask`` command loads: ``flask shell`` and the ``cb`` commands.

    It reads no settings and connects nothing until a command needs it, so ``flask --help``
    works anywhere; it serves no requests (run the server with gunicorn or ``python app.py``).
    """
    from commands import install

    app = Flask("circuit_breaker")
    app.wsgi_app = _not_a_server
    install(app)
    return app


def _not_a_server(environ, start_response):
    body = (
        b'{"error": "this is the command-line app (flask shell, flask cb); serve with '
        b'gunicorn -c gunicorn.conf.py wsgi:application, or python app.py"}'
    )
    start_response(
        "503 Service Unavailable", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]


def __getattr__(name: str):
    if name == "app":
        app = globals()["app"] = create_cli_app()
        return app
    raise AttributeError(name)


def main() -> None:
    """Development server: both ports in one process, no gunicorn."""
    from gevent import monkey

    monkey.patch_all()
    import sys

    from gevent.pool import Pool
    from gevent.pywsgi import WSGIServer

    from cb.config import ConfigError
    from cb.errors import StorageUnavailable
    from cb.logs import get_logger, setup_logging
    from cb.network import exposure_warnings
    from cb.services import provider_status_lines
    from wsgi import Handler

    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        sys.exit(f"Configuration error: {exc}")
    setup_logging(settings.rust_log, settings.log_level, settings.environment == "production", settings.secrets)
    log = get_logger("server")
    for ok, line in provider_status_lines(settings):
        (log.info if ok else log.warning)(line)
    for line in exposure_warnings(settings):
        log.warning(line)
    try:
        app = create_app(settings)
    except StorageUnavailable as exc:
        sys.exit(f"Error: {exc.message}")
    servers = []
    for host, port, var in (
        (settings.graphql_host, settings.graphql_port, "GRAPHQL_PORT"),
        (settings.openai_host, settings.openai_port, "OPENAI_PORT"),
    ):
        server = WSGIServer((host, port), app, handler_class=Handler, spawn=Pool(1000), log=None)
        try:
            server.start()
        except OSError:
            sys.exit(f"Address already in use: {port} ({var})")
        servers.append(server)
    log.info(
        "GraphQL API on http://%s:%d, OpenAI API on http://%s:%d",
        settings.graphql_host,
        settings.graphql_port,
        settings.openai_host,
        settings.openai_port,
    )
    try:
        servers[0].serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
