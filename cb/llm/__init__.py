"""LLM routing: canonical request/response types, provider adapters, catalog, router, costs."""
