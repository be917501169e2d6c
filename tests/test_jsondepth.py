"""MAX_JSON_DEPTH measured on the raw text: strings, whatever brackets, quotes and backslashes
they hold, never count; the depth is exactly what the parsed value nests."""

from __future__ import annotations

import json
import random

import pytest

from cb.jsondepth import NestingTooDeep, json_too_deep, loads_within

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


def test_a_parsed_body_is_measured_the_same_way():
    rng = random.Random(27)
    for _ in range(500):
        value = nested(rng, rng.randint(1, 12))
        text = json.dumps(value).encode()
        real = depth(value)
        assert loads_within(text, real) == value
        with pytest.raises(NestingTooDeep):
            loads_within(text, real - 1)


def test_nesting_past_the_parsers_own_limit_is_too_deep_not_a_crash():
    for text in (b"[" * 100_000, b'{"a":' * 100_000, b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(NestingTooDeep):
            loads_within(text, 64)
    with pytest.raises(ValueError):
        loads_within(b"[[[1]", 64)  # not JSON: the caller's parser words it


def wide(rng: random.Random, levels: int):
    """A value of every JSON kind, several members per container, empty containers among them."""
    roll = rng.random()
    if levels == 0 or roll < 0.25:
        return rng.choice(["", "x", 0, -1.5, 10**30, True, False, None, [], {}])
    members = [wide(rng, levels - 1) for _ in range(rng.randint(0, 4))]
    if roll < 0.6:
        return {f"k{i}": member for i, member in enumerate(members)}
    return members


def test_wide_bodies_of_every_kind_of_value_are_measured_exactly():
    rng = random.Random(2812)
    for _ in range(2000):
        value = wide(rng, rng.randint(0, 9))
        text = json.dumps(value).encode()
        real = depth(value)
        assert loads_within(text, max(real, 1)) == value
        if real > 1:
            with pytest.raises(NestingTooDeep):
                loads_within(text, real - 1)
