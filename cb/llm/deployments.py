"""Where deployments come from: the environment, the CB_CONFIG file, and storage.

* The four standard providers come from the environment (OPENAI_API_KEY …).
* ``CB_CONFIG`` names an optional TOML file (see :func:`load_config` for its format and
  ``examples/circuit-breaker.toml``) adding deployments, price overrides, fallback chains
  and the default strategy.
* ``configureLlmProvider`` / ``removeLlmProvider`` manage deployments at run time. They
  live in the storage bucket ``deployments`` (keys sealed by :class:`cb.secrets.SecretBox`),
  and every worker reloads that bucket at most every half second, so all of them route
  with a change within a second. A managed deployment with the id of an environment or
  file deployment overrides it (its key, when not given, stays the original one).
"""

from __future__ import annotations

import re
import tomllib
import uuid
from dataclasses import asdict, dataclass, field, replace

from cb.config import ConfigError, Settings, lookup
from cb.errors import NotFound, ValidationError
from cb.llm.providers.base import Deployment
from cb.llm.providers.openai import is_openai_api
from cb.logs import get_logger, redactor
from cb.network import check_base_url
from cb.secrets import SecretBox, SecretUnavailable
from cb.storage import Reloads, Storage

log = get_logger("llm.deployments")

BUCKET = "deployments"
PROVIDER_TYPES = ("openai", "anthropic", "google", "ollama", "openai_compatible")
KEYED_TYPES = ("openai", "anthropic", "google")
#: types whose endpoints list their own models; without an explicit ``models`` list such a deployment
#: serves only what discovery found (nothing while it is unreachable)
LISTING_TYPES = ("ollama",)
KEY_VARIABLES = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "google": "GOOGLE_API_KEY",
    "ollama": "OLLAMA_BASE_URL",
}
DEFAULT_BASE_URLS = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "google": "https://generativelanguage.googleapis.com",
    "ollama": "http://localhost:11434",
}
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def env_deployments(settings: Settings) -> list[Deployment]:
    """The four standard providers as configured in the environment (configured or not)."""
    return [
        Deployment("openai", "openai", settings.openai_base_url, settings.openai_api_key, "OPENAI_API_KEY", "OpenAI"),
        Deployment(
            "anthropic",
            "anthropic",
            settings.anthropic_base_url,
            settings.anthropic_api_key,
            "ANTHROPIC_API_KEY",
            "Anthropic",
        ),
        Deployment("google", "google", settings.google_base_url, settings.google_api_key, "GOOGLE_API_KEY", "Google"),
        Deployment(
            "ollama",
            "ollama",
            settings.ollama_base_url or "",
            None,
            "OLLAMA_BASE_URL",
            "Ollama",
            enabled=bool(settings.ollama_base_url),
        ),
    ]


def needs_key(deployment: Deployment) -> bool:
    """The hosted providers always need a key; a self-hosted or proxy endpoint speaking OpenAI's
    protocol (``openai_compatible``, or ``openai`` anywhere but OpenAI's own API, such as a vLLM at
    OPENAI_BASE_URL) only when the config names a key variable of its own."""
    if deployment.provider_type == "openai_compatible" or (
        deployment.provider_type == "openai" and not is_openai_api(deployment.base_url)
    ):
        return bool(deployment.key_variable) and deployment.key_variable not in KEY_VARIABLES.values()
    return deployment.provider_type in KEYED_TYPES


def is_configured(deployment: Deployment) -> bool:
    """Enabled, has an address, and has a key if it needs one."""
    if not deployment.enabled or not deployment.base_url:
        return False
    return bool(deployment.api_key) or not needs_key(deployment)


def normalize_type(provider_type: str) -> str:
    value = (provider_type or "").strip().lower().replace("-", "_")
    if value == "gemini":
        value = "google"
    if value not in PROVIDER_TYPES:
        raise ValidationError(f"provider_type {provider_type!r} is not one of {', '.join(PROVIDER_TYPES)}")
    return value


# -- the CB_CONFIG file -----------------------------------------------------------


@dataclass
class RouterConfig:
    """What the TOML file adds to the environment."""

    deployments: list[Deployment] = field(default_factory=list)
    prices: dict[str, list] = field(default_factory=dict)  # model -> parse_prices' list, USD per 1M
    fallbacks: dict[str, list[str]] = field(default_factory=dict)
    context_windows: dict[str, int] = field(default_factory=dict)  # model -> tokens, the last source
    default_strategy: str | None = None
    max_attempts: int | None = None


def load_config(path: str | None) -> RouterConfig:
    """Read the CB_CONFIG TOML file. Every section is optional::

        [routing]
        default_strategy = "cost_optimized"   # overrides ROUTING_STRATEGY
        max_attempts = 4                      # overrides ROUTER_MAX_ATTEMPTS

        [[deployments]]
        id = "vllm-gpu"                       # unique; used in "vllm-gpu/<model>"
        name = "vLLM on the GPU box"
        type = "openai_compatible"            # openai | anthropic | google | ollama | openai_compatible
        base_url = "http://gpu:8000/v1"
        key_variable = "VLLM_API_KEY"         # the environment variable holding its key (optional)
        models = ["llama3.2"]                 # empty: what its /v1/models lists (else the catalog's)
        weight = 2.0                          # share under load_balanced
        priority = 0                          # lower is tried first among equals
        enabled = true
        prices = { "llama3.2" = { input = 0.1, output = 0.2 } }   # this endpoint's own prices (optional)

        [prices]                              # USD per 1M tokens; cached_input, cache_write(_1h) optional
        "gpt-4o" = { input = 2.0, output = 8.0, cached_input = 1.0 }

        [fallbacks]                           # tried, in order, when every deployment failed
        "gpt-4o" = ["claude-3-5-sonnet", "gemini-1.5-pro"]

        [context_windows]                     # tokens, for a model neither its listing nor
        "my-finetune" = 32768                 # genai-prices gives one (else 8192)

    Raises :class:`ConfigError` naming the file and the problem.
    """
    if not path:
        return RouterConfig()
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"CB_CONFIG={path!r} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"CB_CONFIG={path!r} is not valid TOML: {exc}") from None
    try:
        return _parse_config(data)
    except (ValidationError, KeyError, TypeError, ValueError) as exc:
        detail = exc.message if isinstance(exc, ValidationError) else str(exc)
        raise ConfigError(f"CB_CONFIG={path!r} is invalid: {detail}") from None


def _parse_config(data: dict) -> RouterConfig:
    from cb.llm.strategies import normalize_strategy

    config = RouterConfig()
    routing = data.get("routing", {})
    config.default_strategy = normalize_strategy(routing.get("default_strategy"))
    if "max_attempts" in routing:
        config.max_attempts = int(routing["max_attempts"])
        if config.max_attempts < 1:
            raise ValueError("routing.max_attempts must be >= 1")
    for i, entry in enumerate(data.get("deployments", [])):
        if "id" not in entry or "type" not in entry:
            raise ValueError(f"deployments[{i}] needs an id and a type")
        variable = entry.get("key_variable")
        ptype = normalize_type(entry["type"])
        deployment = Deployment(
            id=_check_id(str(entry["id"])),
            provider_type=ptype,
            base_url=str(entry.get("base_url") or DEFAULT_BASE_URLS.get(ptype, "")).rstrip("/"),
            api_key=lookup(variable) if variable else None,
            key_variable=variable,
            name=entry.get("name") or entry["id"],
            models=[str(m) for m in entry.get("models", [])],
            weight=float(entry.get("weight", 1.0)),
            priority=int(entry.get("priority", 0)),
            enabled=bool(entry.get("enabled", True)),
            prices=parse_prices(entry.get("prices") or {}),
        )
        if not deployment.base_url:
            raise ValueError(f"deployment {deployment.id!r} needs a base_url")
        check_base_url(deployment.base_url, f"deployments[{i}].base_url")
        redactor.add(deployment.api_key)
        config.deployments.append(deployment)
    config.prices = parse_prices(data.get("prices", {}))
    for model, chain in data.get("fallbacks", {}).items():
        config.fallbacks[model] = [str(m) for m in chain]
    for model, tokens in data.get("context_windows", {}).items():
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            raise ValueError(f"context_windows.{model} must be a whole number of tokens above 0")
        config.context_windows[str(model)] = tokens
    return config


#: the keys of a price, USD per 1M tokens: cached_input (prompt tokens read from the provider's
#: cache), cache_write (written to it for 5 minutes) and cache_write_1h (for an hour) are
#: optional: the input price where missing (a 1-hour write: the cache_write price)
PRICE_KEYS = ("input", "output", "cached_input", "cache_write", "cache_write_1h")


def parse_prices(prices: dict) -> dict[str, list]:
    """``{model: {input, output[, cached_input, cache_write, cache_write_1h]}}`` -> ``{model: [input, output[,
    cached_input, cache_write, cache_write_1h]]}`` (None for a cached rate not given before one that is)."""
    parsed = {}
    for model, price in prices.items():
        values = [float(price["input"]), float(price["output"])]
        values += [None if price.get(key) is None else float(price[key]) for key in PRICE_KEYS[2:]]
        if min(v for v in values if v is not None) < 0:
            raise ValidationError(f"prices of {model!r} must not be negative")
        while values[-1] is None:
            values.pop()
        parsed[str(model)] = values
    return parsed


def _check_id(value: str) -> str:
    if not _ID.match(value):
        raise ValidationError(f"deployment id {value!r} must be letters, digits, '_', '.', ':' or '-' (no '/')")
    return value


# -- the registry -----------------------------------------------------------------


class DeploymentRegistry:
    """Every deployment this worker routes with: environment + file, overridden by storage."""

    def __init__(
        self,
        env: list[Deployment],
        config: list[Deployment],
        storage: Storage,
        box: SecretBox,
        refresh_seconds: float = 0.5,
    ):
        self.env_ids = {d.id for d in env}
        self.base = {d.id: d for d in (*env, *config)}
        self.storage = storage
        self.box = box
        self._managed_ids: set[str] = set()
        self._merged: list[Deployment] = list(self.base.values())
        self._reloads = Reloads(refresh_seconds)

    def all(self) -> list[Deployment]:
        """The current deployments (reloaded from storage when older than ``refresh_seconds``)."""
        self._reloads.when_due(self.refresh)
        return self._merged

    def get(self, deployment_id: str) -> Deployment | None:
        return next((d for d in self.all() if d.id == deployment_id), None)

    def source(self, deployment_id: str) -> str:
        """managed (GraphQL), environment or config (CB_CONFIG)."""
        if deployment_id in self._managed_ids:
            return "managed"
        return "environment" if deployment_id in self.env_ids else "config"

    def refresh(self) -> None:
        try:
            entries = self.storage.list(BUCKET)
        except Exception as exc:  # keep routing with what we had
            log.warning("could not reload deployments from storage: %s", exc)
            self._reloads.loaded()
            return
        stored = {}
        for entry in entries:
            try:
                stored[entry.key] = self._from_stored(entry.value)
            except (SecretUnavailable, TypeError, KeyError) as exc:
                log.warning("deployment %s is unusable: %s", entry.key, getattr(exc, "message", exc))
        merged = []
        for deployment in self.base.values():
            override = stored.pop(deployment.id, None)
            merged.append(self._inherit_key(override) if override else deployment)
        self._merged = merged + sorted(stored.values(), key=lambda d: d.id)
        self._managed_ids = {e.key for e in entries}
        self._reloads.loaded()

    def _inherit_key(self, deployment: Deployment) -> Deployment:
        base = self.base[deployment.id]
        if not deployment.api_key and base.api_key:
            return replace(deployment, api_key=base.api_key, key_variable=base.key_variable)
        return deployment

    def _from_stored(self, value: dict) -> Deployment:
        data = dict(value)
        data["api_key"] = self.box.open(data.get("api_key"))
        return Deployment(**{k: data[k] for k in Deployment.__dataclass_fields__ if k in data})

    def configure(self, spec: dict) -> Deployment:
        """Add or update a managed deployment from GraphQL input (fields left out keep their value)."""
        deployment_id = _check_id(str(spec.get("id") or uuid.uuid4().hex[:12]))
        entry = self.storage.get(BUCKET, deployment_id)
        if entry is not None:
            updated = self._from_stored(entry.value)
        elif deployment_id in self.base:
            updated = replace(self.base[deployment_id], api_key=None)  # the original key is inherited, not copied
        else:
            if not spec.get("provider_type"):
                raise ValidationError("provider_type is required for a new deployment")
            ptype = normalize_type(spec["provider_type"])
            updated = Deployment(deployment_id, ptype, DEFAULT_BASE_URLS.get(ptype, ""), name=deployment_id)
        if spec.get("provider_type"):
            updated.provider_type = normalize_type(spec["provider_type"])
        if spec.get("name") is not None:
            updated.name = str(spec["name"]).strip() or deployment_id
        if spec.get("base_url") is not None:
            updated.base_url = _check_url(spec["base_url"])
        if spec.get("api_key") is not None:
            updated.api_key = str(spec["api_key"]).strip() or None
        if spec.get("models") is not None:
            updated.models = [str(m).strip() for m in spec["models"] if str(m).strip()]
        if spec.get("weight") is not None:
            if float(spec["weight"]) <= 0:
                raise ValidationError("weight must be greater than 0")
            updated.weight = float(spec["weight"])
        if spec.get("priority") is not None:
            updated.priority = int(spec["priority"])
        if spec.get("enabled") is not None:
            updated.enabled = bool(spec["enabled"])
        if spec.get("prices") is not None:
            try:
                updated.prices = parse_prices(spec["prices"])
            except (KeyError, TypeError, ValueError, AttributeError):
                raise ValidationError(
                    'prices must map model names to {"input": USD, "output": USD} per 1M tokens '
                    '(and optionally "cached_input", "cache_write", "cache_write_1h")'
                ) from None
        if not updated.base_url:
            raise ValidationError("base_url is required for an openai_compatible deployment")
        stored = asdict(updated)
        stored["api_key"] = self.box.seal(updated.api_key)
        self.storage.put(BUCKET, deployment_id, stored)
        self.refresh()
        return self.get(deployment_id) or updated

    def remove(self, deployment_id: str) -> Deployment:
        """Remove a managed deployment (an environment or file one reverts to its original settings)."""
        if self.storage.get(BUCKET, deployment_id) is None:
            if deployment_id in self.base:
                raise ValidationError(
                    f"deployment {deployment_id!r} comes from the environment or CB_CONFIG; "
                    "disable it with configureLlmProvider(input: {id, enabled: false})"
                )
            raise NotFound(f"no LLM provider deployment with id {deployment_id!r}")
        removed = self.get(deployment_id)
        self.storage.delete(BUCKET, deployment_id)
        self.refresh()
        return removed


def _check_url(value: str) -> str:
    url = str(value).strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValidationError(f"base_url {value!r} must start with http:// or https://")
    return check_base_url(url)
