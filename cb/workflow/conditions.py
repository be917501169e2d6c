"""Transition guards: a small, safe expression language over a token's data and metadata.

Grammar (lowest precedence first)::

    expr       := or
    or         := and (("or" | "||") and)*
    and        := not (("and" | "&&") not)*
    not        := ("not" | "!") not | comparison
    comparison := operand (("==" | "!=" | "<" | "<=" | ">" | ">=" | "in" | "not in") operand)?
    operand    := literal | path | "(" expr ")" | "[" (expr ("," expr)*)? "]"
    path       := NAME ("." (NAME | INDEX))*
    literal    := "string" | 'string' | number | true | false | null

A bare path is looked up in the token's data, then its metadata; ``data.x`` and
``metadata.x`` name one of them explicitly. A missing field is null, so the bare name
``tests_passed`` holds only when the field exists and is truthy. Expressions are parsed
into a tree once and evaluated by walking it: nothing is ever handed to Python's eval.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
COMPARISONS = {"==", "!=", "<", "<=", ">", ">="}
MAX_LENGTH = 1000
MAX_NESTING = 32

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>==|!=|<=|>=|&&|\|\||[<>!().,\[\]])
    """,
    re.VERBOSE,
)


class ConditionSyntaxError(ValueError):
    """A condition that does not parse; ``position`` is the 0-based character offset."""

    def __init__(self, message: str, position: int):
        super().__init__(f"{message} at position {position}")
        self.position = position


@dataclass(frozen=True)
class Lexeme:
    kind: str  # number, string, name, keyword, op, end
    text: str
    position: int
    value: Any = None


def tokenize(source: str) -> list[Lexeme]:
    """Split a condition into lexemes, ending with an ``end`` lexeme."""
    if len(source) > MAX_LENGTH:
        raise ConditionSyntaxError(f"condition is longer than {MAX_LENGTH} characters", MAX_LENGTH)
    lexemes, pos = [], 0
    while pos < len(source):
        match = _TOKEN.match(source, pos)
        if not match:
            raise ConditionSyntaxError(f"unexpected character {source[pos]!r}", pos)
        kind, text = match.lastgroup, match.group()
        if kind == "number":
            lexemes.append(Lexeme("number", text, pos, float(text) if any(c in text for c in ".eE") else int(text)))
        elif kind == "string":
            lexemes.append(Lexeme("string", text, pos, _unquote(text, pos)))
        elif kind == "name":
            lexemes.append(Lexeme("keyword" if text in KEYWORDS else "name", text, pos))
        elif kind == "op":
            lexemes.append(Lexeme("op", {"&&": "and", "||": "or", "!": "not"}.get(text, text), pos))
        pos = match.end()
    lexemes.append(Lexeme("end", "", len(source)))
    return lexemes


def _unquote(text: str, pos: int) -> str:
    body = text[1:-1]
    if text[0] == "'":
        body = body.replace('\\"', '"').replace("\\'", "'").replace('"', '\\"')
    try:
        return json.loads(f'"{body}"')
    except ValueError:
        raise ConditionSyntaxError("invalid escape in string", pos) from None


# The tree: tuples, small and immutable.
#   ("lit", value) ("path", (names...)) ("list", (items...)) ("not", expr)
#   ("and", left, right) ("or", left, right) ("cmp", op, left, right)


class _Parser:
    def __init__(self, source: str):
        self.lexemes = tokenize(source)
        self.i = 0
        self.depth = 0

    @property
    def current(self) -> Lexeme:
        return self.lexemes[self.i]

    def _is(self, *texts: str) -> bool:
        lex = self.current
        return lex.kind in ("op", "keyword") and lex.text in texts

    def _take(self) -> Lexeme:
        lex = self.current
        self.i += 1
        return lex

    def _expect(self, text: str) -> None:
        if not self._is(text):
            raise ConditionSyntaxError(
                f"expected {text!r}, found {self._describe(self.current)}", self.current.position
            )
        self._take()

    @staticmethod
    def _describe(lex: Lexeme) -> str:
        return "end of condition" if lex.kind == "end" else repr(lex.text)

    def parse(self) -> tuple:
        if self.current.kind == "end":
            raise ConditionSyntaxError("empty condition", 0)
        tree = self.expr()
        if self.current.kind != "end":
            raise ConditionSyntaxError(f"unexpected {self._describe(self.current)}", self.current.position)
        return tree

    def expr(self) -> tuple:
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise ConditionSyntaxError(f"condition nests deeper than {MAX_NESTING} levels", self.current.position)
        try:
            return self.or_()
        finally:
            self.depth -= 1

    def or_(self) -> tuple:
        left = self.and_()
        while self._is("or"):
            self._take()
            left = ("or", left, self.and_())
        return left

    def and_(self) -> tuple:
        left = self.not_()
        while self._is("and"):
            self._take()
            left = ("and", left, self.not_())
        return left

    def not_(self) -> tuple:
        if self._is("not"):
            self._take()
            self.depth += 1
            if self.depth > MAX_NESTING:
                raise ConditionSyntaxError(f"condition nests deeper than {MAX_NESTING} levels", self.current.position)
            try:
                return ("not", self.not_())
            finally:
                self.depth -= 1
        return self.comparison()

    def comparison(self) -> tuple:
        left = self.operand()
        if self.current.kind == "op" and self.current.text in COMPARISONS:
            op = self._take().text
            return ("cmp", op, left, self.operand())
        if self._is("in"):
            self._take()
            return ("cmp", "in", left, self.operand())
        if self._is("not") and self.lexemes[self.i + 1].kind == "keyword" and self.lexemes[self.i + 1].text == "in":
            self.i += 2
            return ("cmp", "not in", left, self.operand())
        return left

    def operand(self) -> tuple:
        lex = self.current
        if lex.kind in ("number", "string"):
            self._take()
            return ("lit", lex.value)
        if lex.kind == "keyword" and lex.text in ("true", "false", "null"):
            self._take()
            return ("lit", {"true": True, "false": False, "null": None}[lex.text])
        if lex.kind == "name":
            names = [self._take().text]
            while self._is("."):
                self._take()
                is_index = self.current.kind == "number" and self.current.text.isdigit()
                if self.current.kind not in ("name", "keyword") and not is_index:
                    raise ConditionSyntaxError(
                        f"expected a field name after '.', found {self._describe(self.current)}", self.current.position
                    )
                names.append(self._take().text)
            return ("path", tuple(names))
        if self._is("("):
            self._take()
            inner = self.expr()
            self._expect(")")
            return inner
        if self._is("["):
            self._take()
            items = []
            if not self._is("]"):
                items.append(self.expr())
                while self._is(","):
                    self._take()
                    items.append(self.expr())
            self._expect("]")
            return ("list", tuple(items))
        raise ConditionSyntaxError(f"expected a value or field name, found {self._describe(lex)}", lex.position)


@dataclass(frozen=True)
class Condition:
    """A parsed guard. ``Condition.parse("tests_passed and coverage >= 80")``."""

    source: str
    tree: tuple

    @classmethod
    def parse(cls, source: str) -> Condition:
        return cls(source, _Parser(source).parse())

    def holds(self, data: dict, metadata: dict | None = None) -> bool:
        """Whether the guard holds for a token with this data and metadata."""
        return bool(_evaluate(self.tree, data or {}, metadata or {}))


def _lookup(names: tuple, data: dict, metadata: dict) -> Any:
    if names[0] == "data" and len(names) > 1 and "data" not in data:
        value, rest = data, names[1:]
    elif names[0] == "metadata" and len(names) > 1 and "metadata" not in data:
        value, rest = metadata, names[1:]
    else:
        value = data.get(names[0], metadata.get(names[0]))
        rest = names[1:]
    for name in rest:
        if isinstance(value, dict):
            value = value.get(name)
        elif isinstance(value, list) and name.isdigit() and int(name) < len(value):
            value = value[int(name)]
        else:
            return None
    return value


def _equal(left: Any, right: Any) -> bool:
    # JSON semantics: true is not 1, false is not 0
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    return left == right


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "==":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    if op in ("in", "not in"):
        if isinstance(right, (list, dict)):
            found = any(_equal(left, item) for item in right)
        elif isinstance(right, str) and isinstance(left, str):
            found = left in right
        else:
            found = False
        return found if op == "in" else not found
    numbers = (int, float)
    comparable = (
        isinstance(left, numbers)
        and isinstance(right, numbers)
        and not isinstance(left, bool)
        and not isinstance(right, bool)
    ) or (isinstance(left, str) and isinstance(right, str))
    if not comparable:
        return False
    return {"<": left < right, "<=": left <= right, ">": left > right, ">=": left >= right}[op]


def _evaluate(tree: tuple, data: dict, metadata: dict) -> Any:
    kind = tree[0]
    if kind == "lit":
        return tree[1]
    if kind == "path":
        return _lookup(tree[1], data, metadata)
    if kind == "list":
        return [_evaluate(item, data, metadata) for item in tree[1]]
    if kind == "not":
        return not _evaluate(tree[1], data, metadata)
    if kind == "and":
        return bool(_evaluate(tree[1], data, metadata)) and bool(_evaluate(tree[2], data, metadata))
    if kind == "or":
        return bool(_evaluate(tree[1], data, metadata)) or bool(_evaluate(tree[2], data, metadata))
    if kind == "cmp":
        return _compare(tree[1], _evaluate(tree[2], data, metadata), _evaluate(tree[3], data, metadata))
    raise AssertionError(f"unknown node {kind}")
