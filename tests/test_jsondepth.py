"""MAX_JSON_DEPTH measured on the raw text: strings, whatever brackets, quotes and backslashes
they hold, never count; the depth is exactly what the parsed value nests."""

from __future__ import annotations

import json
import random

from cb.jsondepth import json_too_deep

TRICKY = ["[", "]", "{", "}", '"', "\\", '\\"', "\\\\", '\\\\"', "]]]]", "[[[[", "\n", "é", "\u2028"]


def depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def nested(rng: random.Random, levels: int):
    text = "".join(rng.choice(TRICKY) for _ in range(rng.randint(0, 6)))
    if levels == 0:
        return text
    inner = [nested(rng, levels - 1), text]
    return {text: inner} if rng.random() < 0.5 else inner


def test_strings_holding_brackets_quotes_and_backslashes_never_count():
    rng = random.Random(28)
    for _ in range(2000):
        value = nested(rng, rng.randint(0, 12))
        for text in (json.dumps(value), json.dumps(value, ensure_ascii=False, indent=1)):
            real = depth(json.loads(text))
            assert not json_too_deep(text, real), text
            assert real == 0 or json_too_deep(text, real - 1), text
