"""Token estimates for when an upstream reports no usage.

One token per four characters of text, rounded up. A prompt counts every message's text
and tool-call arguments, plus four tokens per message; a completion counts its content
and tool-call arguments. Records built from an estimate are marked ``estimated``.
"""

from __future__ import annotations

import math

from cb.llm.types import ChatRequest

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


def estimate_tokens(text_chars: int) -> int:
    return math.ceil(text_chars / CHARS_PER_TOKEN)


def estimate_prompt(request: ChatRequest) -> int:
    chars = sum(len(m.text()) + sum(len(c.arguments) for c in m.tool_calls) for m in request.messages)
    return estimate_tokens(chars) + TOKENS_PER_MESSAGE * len(request.messages)
