"""What a fake model says next, independent of any wire format.

A test queues :class:`Answer`\\ s on a fake upstream (``upstream.say(Answer(...))``); the
upstream renders each one in its provider's own protocol, streamed or not. With nothing
queued it gives :data:`DEFAULT`.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field


@dataclass
class Answer:
    text: str = "Hello from the fake model."
    tool_calls: list[tuple[str, dict]] = field(default_factory=list)  # (function name, arguments)
    finish: str | None = None  # the provider's own stop reason; None: the natural one
    prompt_tokens: int = 12
    completion_tokens: int = 7
    pieces: list[str] | None = None  # how the text is streamed; default: word by word
    error_after: int | None = None  # streams: the provider's error event after this many text pieces
    cached_tokens: int = 0  # of prompt_tokens, read from the provider's prompt cache
    cache_write_tokens: int = 0  # of prompt_tokens, written to it (Anthropic)
    cache_write_1h_tokens: int = 0  # of cache_write_tokens, kept for an hour (Anthropic)
    reasoning_tokens: int = 0  # thinking, besides completion_tokens (Gemini's thoughtsTokenCount)

    def text_pieces(self) -> list[str]:
        if self.pieces is not None:
            return self.pieces
        words = self.text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words) if w or i == 0] if self.text else []


DEFAULT = Answer()


class Scripted:
    """Mixin: a queue of answers, consumed one per chat request."""

    def __init__(self) -> None:
        super().__init__()
        self.answers: deque[Answer] = deque()
        self._answers_lock = threading.Lock()

    def say(self, *answers: Answer) -> None:
        with self._answers_lock:
            self.answers.extend(answers)

    def next_answer(self) -> Answer:
        with self._answers_lock:
            return self.answers.popleft() if self.answers else DEFAULT


def split_json(arguments: str, size: int = 7) -> list[str]:
    """A JSON text cut into pieces, the way providers stream tool arguments."""
    return [arguments[i : i + size] for i in range(0, len(arguments), size)]
