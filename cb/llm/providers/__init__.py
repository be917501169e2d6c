"""The provider registry: one adapter per wire protocol, keyed by ``Deployment.provider_type``.

Adding a provider is one module implementing :class:`~cb.llm.providers.base.Provider`
and one line here.
"""

from __future__ import annotations

from cb.llm.providers.anthropic import AnthropicProvider
from cb.llm.providers.base import Provider
from cb.llm.providers.google import GoogleProvider
from cb.llm.providers.ollama import OllamaProvider
from cb.llm.providers.openai import OpenAICompatibleProvider, OpenAIProvider

PROVIDERS: dict[str, Provider] = {
    "openai": OpenAIProvider(),
    "anthropic": AnthropicProvider(),
    "google": GoogleProvider(),
    "ollama": OllamaProvider(),
    "openai_compatible": OpenAICompatibleProvider(),
}
