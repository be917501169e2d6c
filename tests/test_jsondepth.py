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


@pytest.mark.parametrize(("make", "levels", "seed", "count"), [(nested, 12, 27, 500), (wide, 9, 2812, 2000)])
def test_a_parsed_body_is_measured_the_same_way(make, levels, seed, count):
    # narrow bodies with tricky strings, and wide ones of every kind of value
    rng = random.Random(seed)
    for _ in range(count):
        value = make(rng, rng.randint(0, levels))
        text = json.dumps(value).encode()
        real = depth(value)
        assert loads_within(text, real) == value
        if real:
            with pytest.raises(NestingTooDeep):
                loads_within(text, real - 1)


def same(a, b) -> bool:
    """Equal values of the same types all the way down (1 and 1.0 differ; NaN is itself)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return a == b or (a != a and b != b)


EDGES = [
    b'{"n": 123456789012345678901234567890}',  # past 64 bits: an int, never a float
    b'{"n": -9223372036854775809, "m": 18446744073709551616}',
    b"[9223372036854775807, -9223372036854775808, 18446744073709551615]",
    b"12345678901234567890",
    b"[1e19, 12345678901234567890.0, 9.3e18]",  # integral floats that large: read again, same values
    b'{"id": "toolu_000000000000000000000011", "n": 1}',  # long digits inside a string
    b'{"t": "port:12345678901234567890"}',
    b'{"a": NaN, "b": Infinity, "c": -Infinity}',
    b"[1e400, -1e400, 1e-400, 0.1, 1.7976931348623157e308, 5e-324, 1.00000000000000000001]",
    b'{"s": "\\ud800", "t": "\\udc00x", "u": "\\ud83d\\ude00"}',
    b'\xef\xbb\xbf{"bom": true}',
    b'{"a": 1, "a": 2}',
    b"-0",
    b"[-0.0, 0e0, 1E2, 1e+2, 1.5e-3]",
    b'{"\\u00e9": "caf\\u00e9", "raw": "\xc3\xa9"}',
    b"  [ true , false , null ]  ",
    b"[" * 1100 + b"]" * 1100,
]


def parse(text: bytes):
    return loads_within(text, 512)  # the largest MAX_JSON_DEPTH


@pytest.mark.parametrize("text", EDGES)
def test_a_body_parses_to_exactly_what_the_json_module_gives(text):
    # orjson parses what it can; what it refuses or would read differently (an integer past 64
    # bits, a float to it) is read by the json module, so the values never differ
    try:
        expected = json.loads(text)
    except RecursionError:
        with pytest.raises(NestingTooDeep):
            parse(text)
        return
    assert same(parse(text), expected)


def test_bodies_it_refuses_are_refused_as_the_json_module_refuses_them():
    for text in (b"", b"{", b'{"a": 1,}', b"[1 2]", b"\xff\xfe", b'{"a": "\xff"}', b"nul", b"{} x"):
        with pytest.raises(ValueError):
            json.loads(text)
        with pytest.raises(ValueError):
            parse(text)


def test_random_bodies_parse_to_the_json_modules_values():
    rng = random.Random(2813)
    for _ in range(2000):
        value = wide(rng, rng.randint(0, 7))
        for text in (json.dumps(value).encode(), json.dumps(value, indent=1, ensure_ascii=False).encode()):
            assert same(parse(text), json.loads(text))
