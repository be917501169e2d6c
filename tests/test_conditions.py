"""The guard language: what parses, what holds, and where a bad condition goes wrong."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cb.workflow.conditions import Condition, ConditionSyntaxError


def holds(source: str, data: dict | None = None, metadata: dict | None = None) -> bool:
    return Condition.parse(source).holds(data or {}, metadata or {})


def test_a_bare_name_is_a_truthy_field():
    assert holds("tests_passed", {"tests_passed": True})
    assert not holds("tests_passed", {"tests_passed": False})
    assert not holds("tests_passed", {})
    assert not holds("tests_passed", {"tests_passed": 0})


def test_dotted_paths_walk_objects_and_lists():
    data = {"review": {"score": 9, "by": ["ann", "bob"]}}
    assert holds("review.score > 8", data)
    assert holds("review.by.1 == 'bob'", data)
    assert not holds("review.missing.deeper", data)


def test_names_fall_back_to_metadata_and_can_name_either_explicitly():
    assert holds("owner == 'ops'", {}, {"owner": "ops"})
    assert holds("metadata.owner == 'ops' and data.owner == 'dev'", {"owner": "dev"}, {"owner": "ops"})
    assert holds("owner == 'dev'", {"owner": "dev"}, {"owner": "ops"})


@pytest.mark.parametrize(
    "source, expected",
    [
        ("n == 3", True),
        ("n != 3", False),
        ("n < 4 and n <= 3 and n > 2 and n >= 3", True),
        ("n > 3 or n < 3", False),
        ("not n == 3", False),
        ("!(n == 3) || n == 3", True),
        ('n == 3 && name == "x"', True),
        ("ratio >= 0.5", True),
        ("flag == true and nothing == null and off == false", True),
        ("flag == 1", False),
        ("name in ['x', 'y']", True),
        ("name not in ['x', 'y']", False),
        ("'ell' in greeting", True),
        ("'x' in n", False),
        ("tag in tags", True),
        ("n < 'a'", False),
        ("missing < 3", False),
    ],
)
def test_comparisons_and_boolean_operators(source, expected):
    data = {
        "n": 3,
        "name": "x",
        "ratio": 0.5,
        "flag": True,
        "nothing": None,
        "off": False,
        "greeting": "hello",
        "tag": "a",
        "tags": ["a", "b"],
    }
    assert holds(source, data) is expected


def test_and_binds_tighter_than_or():
    assert holds("a or b and c", {"a": True, "b": False, "c": False})
    assert not holds("(a or b) and c", {"a": True, "b": False, "c": False})


@pytest.mark.parametrize(
    "source, position",
    [
        ("", 0),
        ("a and", 5),
        ("a == ", 5),
        ("(a or b", 7),
        ("a @ b", 2),
        ("a b", 2),
        ("'unterminated", 0),
        ("a.", 2),
        ("[1, 2", 5),
    ],
)
def test_syntax_errors_say_where(source, position):
    with pytest.raises(ConditionSyntaxError) as error:
        Condition.parse(source)
    assert error.value.position == position
    assert f"at position {position}" in str(error.value)


def test_python_is_never_evaluated():
    for source in ("__import__('os').system('true')", "a.__class__", "lambda: 1", "exec('1')"):
        try:
            result = holds(source, {"a": 1})
        except ConditionSyntaxError:
            continue
        assert result is False


def test_deep_nesting_is_refused_not_a_crash():
    with pytest.raises(ConditionSyntaxError):
        Condition.parse("(" * 200 + "a" + ")" * 200)
    with pytest.raises(ConditionSyntaxError):
        Condition.parse("not " * 200 + "a")


@given(st.text(max_size=60))
def test_any_text_either_parses_or_fails_with_a_position(source):
    try:
        condition = Condition.parse(source)
    except ConditionSyntaxError as exc:
        assert 0 <= exc.position <= len(source)
        return
    assert condition.holds({"a": 1, "b": [1]}, {"c": "x"}) in (True, False)
