"""Circuit Breaker domain core: workflows, LLM routing, agents, storage.

Nothing in this package imports Flask, Ariadne, gevent-websocket or gunicorn; the web
layers in ``blueprints/`` and ``schema/`` call into it.
"""

__version__ = "0.1.0"
