"""Settings: every environment variable the server reads, parsed and validated once.

Nothing else in the code base reads ``os.environ``. A ``.env`` file in the working
directory is loaded when present; real environment variables win over it. A bad value
raises :class:`ConfigError`, whose message is one line naming the variable and what
is allowed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A variable has a value the server cannot run with."""


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false")


def _port(raw: str) -> int:
    if not raw.strip().isdigit() or not 1 <= int(raw) <= 65535:
        raise ValueError("a port number from 1 to 65535")
    return int(raw)


def _int(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"an integer >= {minimum}") from None
        if value < minimum:
            raise ValueError(f"an integer >= {minimum}")
        return value

    return parse


def _int_between(minimum: int, maximum: int) -> Callable[[str], int]:
    at_least = _int(minimum)

    def parse(raw: str) -> int:
        value = at_least(raw)
        if value > maximum:
            raise ValueError(f"an integer from {minimum} to {maximum}")
        return value

    return parse


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("a number of seconds > 0") from None
    if value <= 0:
        raise ValueError("a number of seconds > 0")
    return value


def _fraction(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("a number between 0 and 1") from None
    if not 0 < value <= 1:
        raise ValueError("a number between 0 and 1")
    return value


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in allowed:
            raise ValueError("one of " + ", ".join(allowed))
        return value

    return parse


def _text(raw: str) -> str:
    return raw.strip()


def _url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if value.split("://", 1)[0] not in ("http", "https", "nats", "tls") or "://" not in value:
        raise ValueError("a URL such as http://host:port")
    return value


def _urls(raw: str) -> str:
    """One URL or several, comma-separated (the servers of one cluster), normalised to ``a,b,c``."""
    parts = [part for part in raw.split(",") if part.strip()]
    if not parts:
        raise ValueError("a URL such as nats://host:4222, or several separated by commas")
    return ",".join(_url(part) for part in parts)


def _csv(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


def _proxy_url(raw: str) -> str:
    value = raw.strip()
    if "://" not in value:
        value = "http://" + value  # what curl and requests assume for host:port
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a bad port)
    except ValueError:
        parts = None
    if parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError("a proxy URL such as http://proxy:3128 (http or https)")
    return value.rstrip("/")


def _existing_path(raw: str) -> str:
    value = raw.strip()
    if not Path(value).exists():
        raise ValueError("an existing CA bundle file or certificate directory")
    return value


def _lower_csv(raw: str) -> tuple[str, ...]:
    return tuple(part.lower() for part in _csv(raw))


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda raw: parse(raw) if raw.strip() else None


ROUTING_STRATEGIES = (
    "balanced",
    "cost_optimized",
    "performance_first",
    "load_balanced",
    "reliability_first",
)


def var(name: str, default: str | None, parse: Callable[[str], Any], doc: str, also: tuple[str, ...] = ()) -> Any:
    """Declare one setting: its variable, default (as the environment would spell it), and
    other names read when the variable is not set (``https_proxy`` for ``HTTPS_PROXY``)."""
    return field(metadata={"env": name, "default": default, "parse": parse, "doc": doc, "also": also})


@dataclass(frozen=True)
class Settings:
    """The server's configuration, read from the environment once at start-up."""

    graphql_host: str = var("GRAPHQL_HOST", "localhost", _text, "GraphQL listener address")
    graphql_port: int = var("GRAPHQL_PORT", "4000", _port, "GraphQL listener port")
    openai_host: str = var("OPENAI_HOST", "0.0.0.0", _text, "OpenAI-compatible listener address")
    openai_port: int = var("OPENAI_PORT", "3000", _port, "OpenAI-compatible listener port")
    openai_cors_enabled: bool = var("OPENAI_CORS_ENABLED", "true", _bool, "CORS on the OpenAI port")
    openai_cors_origins: tuple = var(
        "OPENAI_CORS_ORIGINS",
        "",
        _csv,
        "allowed origins, comma-separated (empty: * when OPENAI_API_KEY_REQUIRED=true, else loopback origins only)",
    )
    graphql_cors_origins: tuple = var(
        "GRAPHQL_CORS_ORIGINS", "", _csv, "allowed origins on the GraphQL port (empty: no CORS)"
    )
    openai_api_key_required: bool = var("OPENAI_API_KEY_REQUIRED", "false", _bool, "require a client key on /v1/*")
    openai_enable_streaming: bool = var("OPENAI_ENABLE_STREAMING", "true", _bool, "allow stream=true")
    rust_log: str = var("RUST_LOG", "info", _text, "log filter: a level, or module=level pairs")
    log_level: str | None = var(
        "LOG_LEVEL", "", _optional(_text), "log level (overrides the default level of RUST_LOG)"
    )
    environment: str = var(
        "ENVIRONMENT",
        "development",
        _choice("development", "test", "staging", "production"),
        "production logs JSON lines",
    )
    storage_backend: str = var("STORAGE_BACKEND", "memory", _choice("memory", "nats"), "where state lives")
    nats_url: str = var(
        "NATS_URL",
        "nats://localhost:4222",
        _urls,
        "NATS server with JetStream, or the servers of a cluster, comma-separated",
    )
    nats_replicas: int = var(
        "NATS_REPLICAS",
        "1",
        _int_between(1, 5),
        "replicas of every KV bucket and stream the server creates (3 on a 3-node cluster)",
    )
    nats_prefix: str = var(
        "NATS_PREFIX", "cb", _text, "prefix of NATS buckets, streams and subjects (one per deployment)"
    )
    openai_api_key: str | None = var("OPENAI_API_KEY", "", _optional(_text), "OpenAI key")
    openai_base_url: str = var("OPENAI_BASE_URL", "https://api.openai.com/v1", _url, "OpenAI or compatible endpoint")
    anthropic_api_key: str | None = var("ANTHROPIC_API_KEY", "", _optional(_text), "Anthropic key")
    anthropic_base_url: str = var("ANTHROPIC_BASE_URL", "https://api.anthropic.com", _url, "Anthropic endpoint")
    google_api_key: str | None = var("GOOGLE_API_KEY", "", _optional(_text), "Google AI (Gemini) key")
    google_base_url: str = var("GOOGLE_BASE_URL", "https://generativelanguage.googleapis.com", _url, "Gemini endpoint")
    ollama_base_url: str | None = var(
        "OLLAMA_BASE_URL", "http://localhost:11434", _optional(_url), "Ollama server (empty: off)"
    )
    ollama_refresh_seconds: float = var(
        "OLLAMA_REFRESH_SECONDS", "60", _seconds, "how often Ollama's model list is refreshed"
    )
    openai_models_refresh_seconds: float = var(
        "OPENAI_MODELS_REFRESH_SECONDS",
        "60",
        _seconds,
        "how often the model lists of OpenAI, Anthropic, Gemini and OpenAI-compatible endpoints are read",
    )
    web_concurrency: int | None = var(
        "WEB_CONCURRENCY", "", _optional(_int(1)), "gunicorn workers with nats (default: CPU count)"
    )
    load_default_workflows: bool = var(
        "CB_LOAD_DEFAULT_WORKFLOWS", "true", _bool, "store the example workflows on first start"
    )
    secret_key: str | None = var("CB_SECRET_KEY", "", _optional(_text), "encrypts provider and agent keys at rest")
    config_file: str | None = var("CB_CONFIG", "", _optional(_text), "TOML file with extra deployments and routing")
    routing_strategy: str = var(
        "ROUTING_STRATEGY", "balanced", _choice(*ROUTING_STRATEGIES), "default routing strategy"
    )
    api_keys: tuple = var("CB_API_KEYS", "", _csv, "client keys accepted on /v1/*, comma-separated")
    rate_limit_rpm: int | None = var(
        "RATE_LIMIT_RPM", "", _optional(_int(1)), "default requests per minute per client key"
    )
    rate_limit_tpm: int | None = var(
        "RATE_LIMIT_TPM", "", _optional(_int(1)), "default tokens per minute per client key"
    )
    graphql_api_key: str | None = var("GRAPHQL_API_KEY", "", _optional(_text), "key required on the GraphQL port")
    mcp_max_sessions: int = var(
        "MCP_MAX_SESSIONS", "1000", _int(1), "most MCP sessions open at once on /mcp (initialize gets 503 beyond)"
    )
    mcp_session_idle_seconds: float = var(
        "MCP_SESSION_IDLE_SECONDS", "3600", _seconds, "an MCP session unused this long expires (the client starts anew)"
    )
    max_request_bytes: int = var(
        "MAX_REQUEST_BYTES", "33554432", _int(1024), "largest request body accepted (after decoding gzip or zstd)"
    )
    max_messages: int = var("MAX_MESSAGES", "2048", _int(1), "most messages accepted in one chat completion request")
    graphql_max_query_bytes: int = var(
        "GRAPHQL_MAX_QUERY_BYTES", "100000", _int(100), "longest GraphQL document accepted"
    )
    max_json_depth: int = var(
        "MAX_JSON_DEPTH",
        "64",
        _int_between(1, 512),
        "deepest nesting of JSON (and GraphQL documents) accepted on both ports",
    )
    body_read_timeout: float = var(
        "REQUEST_BODY_TIMEOUT", "30", _seconds, "seconds a client may take to send its request body"
    )
    connect_timeout: float = var("UPSTREAM_CONNECT_TIMEOUT", "10", _seconds, "seconds to connect to a provider")
    read_timeout: float = var("UPSTREAM_READ_TIMEOUT", "600", _seconds, "seconds to wait between bytes from a provider")
    first_token_timeout: float = var(
        "UPSTREAM_FIRST_TOKEN_TIMEOUT", "120", _seconds, "seconds to wait for a stream's first token"
    )
    stream_idle_timeout: float = var(
        "UPSTREAM_STREAM_IDLE_TIMEOUT",
        "60",
        _seconds,
        "seconds a stream's upstream may stay silent after its first chunk, and a streaming client may take nothing",
    )
    max_response_bytes: int = var(
        "MAX_RESPONSE_BYTES",
        "268435456",
        _int(1024),
        "largest upstream answer read, inflated size (256 MiB: OpenAI's largest embeddings answer is ~200 MB)",
    )
    max_stream_event_bytes: int = var(
        "MAX_STREAM_EVENT_BYTES", "16777216", _int(1024), "longest line of an upstream stream (SSE or NDJSON)"
    )
    https_proxy: str | None = var(
        "HTTPS_PROXY",
        "",
        _optional(_proxy_url),
        "proxy for https:// provider URLs (also read as https_proxy)",
        ("https_proxy",),
    )
    http_proxy: str | None = var(
        "HTTP_PROXY",
        "",
        _optional(_proxy_url),
        "proxy for http:// provider URLs (also read as http_proxy)",
        ("http_proxy",),
    )
    no_proxy: tuple = var(
        "NO_PROXY",
        "",
        _lower_csv,
        "hosts reached without the proxy, comma-separated: names (and their subdomains), IPs, CIDRs, * for all (also read as no_proxy)",
        ("no_proxy",),
    )
    ca_bundle: str | None = var(
        "REQUESTS_CA_BUNDLE",
        "",
        _optional(_existing_path),
        "CA certificates (file or directory) trusted for https:// providers (default: SSL_CERT_FILE, else certifi's bundle)",
    )
    ssl_cert_file: str | None = var(
        "SSL_CERT_FILE", "", _optional(_existing_path), "CA bundle used when REQUESTS_CA_BUNDLE is not set"
    )
    ws_init_timeout: float = var(
        "GRAPHQL_WS_INIT_TIMEOUT", "10", _seconds, "seconds a WebSocket client has to send connection_init"
    )
    ws_max_message_bytes_setting: int | None = var(
        "GRAPHQL_WS_MAX_MESSAGE_BYTES",
        "",
        _optional(_int(100)),
        "largest WebSocket message accepted (default: GRAPHQL_MAX_QUERY_BYTES)",
    )
    ws_max_subscriptions: int = var(
        "GRAPHQL_WS_MAX_SUBSCRIPTIONS", "100", _int(1), "operations one WebSocket connection may run at once"
    )
    ws_max_connections: int = var(
        "GRAPHQL_WS_MAX_CONNECTIONS", "1000", _int(1), "WebSocket connections per worker; more are refused with 503"
    )
    ws_keepalive_seconds: float = var(
        "GRAPHQL_WS_KEEPALIVE_SECONDS", "15", _seconds, "seconds between 'ka' messages (graphql-ws)"
    )
    keepalive_seconds: float = var(
        "SSE_KEEPALIVE_SECONDS", "15", _seconds, "idle seconds before an SSE ': keep-alive' comment"
    )
    graceful_timeout: float = var("GRACEFUL_TIMEOUT", "30", _seconds, "seconds in-flight requests get on shutdown")
    metrics_dir: str | None = var(
        "PROMETHEUS_MULTIPROC_DIR", "", _optional(_text), "where workers share metrics (default: a temp dir)"
    )
    breaker_failure_threshold: int = var(
        "BREAKER_FAILURE_THRESHOLD", "5", _int(1), "consecutive failures that open a deployment's breaker"
    )
    breaker_error_rate: float = var(
        "BREAKER_ERROR_RATE", "0.5", _fraction, "error rate over the window that opens a breaker"
    )
    breaker_window_seconds: float = var("BREAKER_WINDOW_SECONDS", "60", _seconds, "window of the breaker's error rate")
    breaker_min_requests: int = var(
        "BREAKER_MIN_REQUESTS", "10", _int(1), "requests in the window before the error rate counts"
    )
    breaker_cooldown_seconds: float = var(
        "BREAKER_COOLDOWN_SECONDS", "30", _seconds, "seconds an open breaker waits before one probe"
    )
    router_max_attempts: int = var(
        "ROUTER_MAX_ATTEMPTS", "4", _int(1), "deployments tried per request, fallbacks included"
    )
    router_deadline: float = var(
        "ROUTER_DEADLINE_SECONDS", "120", _seconds, "seconds a request may spend trying routes before it fails (504)"
    )
    allowed_hosts: tuple = var(
        "ALLOWED_HOSTS",
        "",
        _csv,
        "Host headers served, comma-separated, * for any (empty: * on a port that requires keys, else loopback names, IP literals and this machine's names)",
    )
    trusted_proxies: tuple = var("TRUSTED_PROXIES", "", _csv, "proxy addresses whose X-Forwarded-For is believed")
    agent_lease_seconds: float = var(
        "AGENT_LEASE_SECONDS",
        "15",
        _seconds,
        "seconds a worker's claim on an agent execution lasts without a heartbeat",
    )
    agent_sweep_seconds: float = var(
        "AGENT_SWEEP_SECONDS", "5", _seconds, "how often each worker looks for abandoned agent executions"
    )
    agent_execution_retention_seconds: float = var(
        "AGENT_EXECUTION_RETENTION_SECONDS",
        "604800",
        _seconds,
        "seconds a finished agent execution is kept before it is deleted (deleted within the hour after)",
    )
    responses_retention_seconds: float = var(
        "RESPONSES_RETENTION_SECONDS",
        "2592000",
        _seconds,
        "seconds a stored Responses API response (store: true) can be retrieved or continued with previous_response_id",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, dotenv: str | Path | None = ".env") -> Settings:
        """Build settings from ``environ`` (default ``os.environ``) over a ``.env`` file."""
        values = dict(read_dotenv(dotenv)) if dotenv else {}
        values.update(os.environ if environ is None else environ)
        parsed = {}
        for f in fields(cls):
            name, default = f.metadata["env"], f.metadata["default"]
            raw = values.get(name)
            for other in f.metadata["also"]:
                if raw is None:
                    name, raw = other, values.get(other)
            if raw is None:
                name, raw = f.metadata["env"], default
            try:
                parsed[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                raise ConfigError(f"{name}={raw!r} is invalid: expected {exc}") from None
        settings = cls(**parsed)
        settings._check()
        return settings

    def _check(self) -> None:
        from cb.logs import parse_filter

        try:
            parse_filter(self.rust_log, self.log_level)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.config_file:
            from cb.llm.deployments import load_config

            load_config(self.config_file)  # a bad CB_CONFIG stops start-up with one line
        from cb.proxies import TrustedProxies

        TrustedProxies(self.trusted_proxies)  # a bad entry stops start-up with one line
        if self.graphql_port == self.openai_port:
            raise ConfigError(
                f"GRAPHQL_PORT and OPENAI_PORT are both {self.graphql_port}: the two APIs need different ports"
            )

    def allowed_hosts_for(self, keys_required: bool) -> tuple[str, ...]:
        """ALLOWED_HOSTS, or the default of a port that does (``*``) or does not require client keys."""
        if self.allowed_hosts or keys_required:
            return self.allowed_hosts or ("*",)
        from cb.network import machine_names

        return tuple(sorted(machine_names()))

    @property
    def ws_max_message_bytes(self) -> int:
        """GRAPHQL_WS_MAX_MESSAGE_BYTES, or GRAPHQL_MAX_QUERY_BYTES when it is not set."""
        return self.ws_max_message_bytes_setting or self.graphql_max_query_bytes

    @property
    def provider_keys(self) -> dict[str, str | None]:
        """Which providers have credentials (Ollama needs only its URL)."""
        return {
            "openai": self.openai_api_key,
            "anthropic": self.anthropic_api_key,
            "google": self.google_api_key,
            "ollama": self.ollama_base_url,
        }

    @property
    def secrets(self) -> list[str]:
        """Values that must never appear in a log line or a response."""
        found = [
            self.openai_api_key,
            self.anthropic_api_key,
            self.google_api_key,
            self.secret_key,
            self.graphql_api_key,
        ]
        return [s for s in (*found, *self.api_keys) if s]


def lookup(name: str) -> str | None:
    """A variable named at run time, e.g. a deployment's key variable in CB_CONFIG (.env included)."""
    return os.environ.get(name) or read_dotenv(".env").get(name) or None


def describe_variables() -> list[tuple[str, str | None, str]]:
    """(variable, default, meaning) for every setting, in declaration order."""
    return [(f.metadata["env"], f.metadata["default"], f.metadata["doc"]) for f in fields(Settings)]


def read_dotenv(path: str | Path) -> dict[str, str]:
    """Parse a ``.env`` file: KEY=value lines, ``#`` comments, optional quotes and ``export``."""
    path = Path(path)
    if not path.is_file():
        return {}
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.removeprefix("export ").strip()
        value = value.strip()
        if value[:1] in "\"'" and value[-1:] == value[:1] and len(value) >= 2:
            value = value[1:-1]
        elif " #" in value:
            value = value.split(" #", 1)[0].rstrip()
        values[key] = value
    return values


def _print_reference(kind: str) -> None:
    if kind == "markdown":
        print("| variable | default | meaning |\n| --- | --- | --- |")
        for name, default, doc in describe_variables():
            print(f"| `{name}` | {f'`{default}`' if default else '(empty)'} | {doc} |")
        return
    print("# Circuit Breaker settings. Copy to .env; real environment variables win over this file.")
    print("# Generated by `python -m cb.config`; every variable, with its default.")
    for name, default, doc in describe_variables():
        print(f"\n# {doc}\n{name}={default or ''}")


if __name__ == "__main__":
    import sys

    _print_reference(sys.argv[1] if len(sys.argv) > 1 else "env")
