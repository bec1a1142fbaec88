"""The query language of `pyimg query`: parses expressions (lark) and evaluates them over targets.

The graph is the loading-phase target graph: a rule target depends on every label in its
label-typed attributes (all branches of a `select()`), and a label that names a file rather than a
target is a node of kind "source file". Results are sets of labels; callers print them sorted by
label (the order Bazel uses by default), so output never depends on set or dict order.
"""

from __future__ import annotations

import difflib
import hashlib
import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from pyimg.core.errors import UsageError, UserInputError
from pyimg.starlark.labels import Label, LabelError, parse_label, parse_pattern
from pyimg.starlark.loading import Loader, Target

__all__ = [
    "FUNCTIONS",
    "GRAMMAR",
    "Expr",
    "QueryEngine",
    "SOURCE_FILE",
    "parse_query",
]

SOURCE_FILE = "source file"
_LABEL_TYPES = ("label", "label_list", "label_keyed_string_dict")

# All binary operators share one precedence and associate to the left, as in Bazel's query
# language; `let` binds as far to the right as it can.
GRAMMAR = r"""
?start: expr

?expr: "let" VAR_NAME "=" expr "in" expr   -> let
     | binary

?binary: binary op term                    -> binop
       | term

!op: "+" | "-" | "^" | "intersect" | "union" | "except"

?term: WORD "(" [expr ("," expr)*] ")"     -> call
     | "set" "(" (WORD | STRING)* ")"      -> set_
     | VAR                                 -> var
     | WORD                                -> word
     | STRING                              -> word
     | "(" expr ")"

VAR: /\$[A-Za-z_][A-Za-z0-9_]*/
VAR_NAME: /[A-Za-z_][A-Za-z0-9_]*/
// Words are target patterns, regular expressions, attribute names and depths. A '-' or '+'
// inside a word belongs to it (`//a:b-c`); as an operator it stands apart (`a - b`).
WORD: /[A-Za-z0-9\/@._:*~\[\]!%&<>?=|{}#][A-Za-z0-9\/@._:*~\[\]!%&<>?=|{}#$\-+]*/
STRING: /"[^"]*"/ | /'[^']*'/

%import common.WS
%ignore WS
"""

# name -> parameter kinds: "expr" (a set), "word" (a string), "int?" (an optional depth)
FUNCTIONS: dict[str, tuple[str, ...]] = {
    "allpaths": ("expr", "expr"),
    "attr": ("word", "word", "expr"),
    "buildfiles": ("expr",),
    "deps": ("expr", "int?"),
    "filter": ("word", "expr"),
    "kind": ("word", "expr"),
    "labels": ("word", "expr"),
    "rdeps": ("expr", "expr", "int?"),
    "somepath": ("expr", "expr"),
}
_OPS = {"+": "union", "union": "union", "-": "except", "except": "except",
        "^": "intersect", "intersect": "intersect"}  # fmt: skip


# -- syntax tree -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expr:
    column: int  # 1-based, in the expression text


@dataclass(frozen=True)
class Word(Expr):
    text: str
    quoted: bool = False


@dataclass(frozen=True)
class Var(Expr):
    name: str


@dataclass(frozen=True)
class Call(Expr):
    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class SetOf(Expr):
    words: tuple[Word, ...]


@dataclass(frozen=True)
class Let(Expr):
    name: str
    value: Expr
    body: Expr


@dataclass(frozen=True)
class BinOp(Expr):
    op: str  # union | except | intersect
    left: Expr
    right: Expr


def _caret(text: str, column: int, message: str) -> UsageError:
    column = max(1, min(column, len(text) + 1))
    return UsageError(f"{message}\n  {text}\n  {' ' * (column - 1)}^")


@lru_cache(maxsize=1)
def _parser(cache_dir: Path | None = None) -> Any:
    import lark

    cache: str | bool = False
    if cache_dir is not None:
        # Building the LALR tables takes ~30 ms, a tenth of a whole query: keep them on disk,
        # under a name that changes with the grammar and the lark version.
        tag = hashlib.sha256(f"{lark.__version__}\n{GRAMMAR}".encode()).hexdigest()[:16]
        cache_dir.mkdir(parents=True, exist_ok=True)
        cache = str(cache_dir / f"query-grammar-{tag}.lark")
    return lark.Lark(
        GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=True, cache=cache
    )


def parse_query(text: str, cache_dir: Path | None = None) -> Expr:
    """Parse a query expression; a syntax error is a UsageError that points at the column.

    `cache_dir`, when given, keeps the compiled parser between processes.
    """
    from lark import Token, Tree
    from lark.exceptions import (
        UnexpectedCharacters,
        UnexpectedEOF,
        UnexpectedInput,
        UnexpectedToken,
    )

    if not text.strip():
        raise UsageError("empty query expression")
    try:
        tree = _parser(cache_dir).parse(text)
    except UnexpectedEOF:
        raise _caret(
            text, len(text) + 1, "syntax error in query expression: unexpected end of expression"
        ) from None
    except UnexpectedCharacters as e:
        raise _caret(
            text,
            e.column,
            f"syntax error at column {e.column} of the query expression: "
            f"unexpected character {text[e.pos_in_stream]!r}",
        ) from None
    except UnexpectedToken as e:
        if e.token.type == "$END":
            raise _caret(
                text,
                len(text) + 1,
                "syntax error in query expression: unexpected end of expression",
            ) from None
        raise _caret(
            text,
            e.column,
            f"syntax error at column {e.column} of the query expression: "
            f"unexpected {e.token.value!r}",
        ) from None
    except UnexpectedInput as e:  # any other parse failure still gets a position
        column = getattr(e, "column", len(text) + 1)
        raise _caret(
            text, column, f"syntax error at column {column} of the query expression"
        ) from None

    def word(tok: Token) -> Word:
        if tok.type == "STRING":
            return Word(tok.column, tok.value[1:-1], quoted=True)
        return Word(tok.column, tok.value)

    def build(node: Any) -> Expr:
        if isinstance(node, Token):
            return word(node)
        assert isinstance(node, Tree)
        col = node.meta.column if not node.meta.empty else 1
        kids = node.children
        if node.data == "word":
            return word(kids[0])
        if node.data == "var":
            return Var(kids[0].column, kids[0].value[1:])
        if node.data == "set_":
            return SetOf(col, tuple(word(k) for k in kids))
        if node.data == "let":
            return Let(col, kids[0].value, build(kids[1]), build(kids[2]))
        if node.data == "binop":
            op = kids[1].children[0]
            return BinOp(op.column, _OPS[op.value], build(kids[0]), build(kids[2]))
        if node.data == "call":
            name_tok = kids[0]
            args = tuple(build(k) for k in kids[1:] if k is not None)
            _check_call(text, name_tok.value, name_tok.column, args)
            return Call(name_tok.column, name_tok.value, args)
        raise AssertionError(node.data)

    return build(tree)


def _check_call(text: str, name: str, column: int, args: tuple[Expr, ...]) -> None:
    params = FUNCTIONS.get(name)
    if params is None:
        close = difflib.get_close_matches(name, [*FUNCTIONS, "set"], n=1, cutoff=0.5)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise _caret(text, column, f"unknown function '{name}' at column {column}{hint}")
    required = sum(1 for p in params if not p.endswith("?"))
    if not required <= len(args) <= len(params):
        want = str(required) if required == len(params) else f"{required} or {len(params)}"
        raise _caret(text, column, f"{name}() takes {want} arguments, got {len(args)}")
    for kind, arg in zip(params, args, strict=False):
        if kind != "expr" and not isinstance(arg, Word):
            what = "a depth (an integer)" if kind == "int?" else "a word or a quoted string"
            raise _caret(
                text, arg.column, f"argument of {name}() at column {arg.column} must be {what}"
            )


# -- evaluation --------------------------------------------------------------------------------


def _flatten_select(value: Any) -> list[Any]:
    """Every branch of a select() (or the value itself): the graph holds all configurations."""
    if isinstance(value, dict) and "__select__" in value:
        return list(value["__select__"].values())
    return [value]


def _attr_labels(kind: str, value: Any) -> list[str]:
    out: list[str] = []
    for v in _flatten_select(value):
        if v is None:
            continue
        if kind == "label":
            out.append(v)
        else:  # label_list, or label_keyed_string_dict (the keys)
            out.extend(v)
    return out


class QueryEngine:
    """Evaluates parsed expressions over the target graph of one workspace, loading lazily.

    Only packages that an expression reaches are loaded; `//...` loads them all.
    """

    def __init__(self, loader: Loader, text: str = "", cwd_package: str = "") -> None:
        self.loader = loader
        self.text = text
        self.cwd_package = cwd_package
        self._deps: dict[Label, tuple[Label, ...]] = {}
        self._targets: dict[Label, Target | None] = {}

    # -- the graph ----------------------------------------------------------------------------

    def target(self, label: Label) -> Target | None:
        """The rule target at `label`, or None for a source file (loading its package)."""
        if label not in self._targets:
            self._targets[label] = self.loader.target(label)
        return self._targets[label]

    def kind(self, label: Label) -> str:
        t = self.target(label)
        return SOURCE_FILE if t is None else t.kind

    def deps_of(self, label: Label) -> tuple[Label, ...]:
        hit = self._deps.get(label)
        if hit is not None:
            return hit
        t = self.target(label)
        found: set[Label] = set()
        if t is not None:
            for name, value in t.attrs.items():
                spec = t.rule.attrs.get(name) or {}
                if spec.get("type") in _LABEL_TYPES:
                    found.update(parse_label(v) for v in _attr_labels(spec["type"], value))
        deps = tuple(sorted(found))
        for d in deps:
            self.target_checked(d, t)
        self._deps[label] = deps
        return deps

    def target_checked(self, label: Label, by: Target | None) -> None:
        if label not in self._targets:
            self._targets[label] = self.loader.target(label, by.origin if by else None)

    def closure(self, roots: Iterable[Label], depth: int | None = None) -> set[Label]:
        seen = set(roots)
        frontier = deque((r, 0) for r in sorted(seen))
        while frontier:
            node, d = frontier.popleft()
            if depth is not None and d >= depth:
                continue
            for dep in self.deps_of(node):
                if dep not in seen:
                    seen.add(dep)
                    frontier.append((dep, d + 1))
        return seen

    def _reverse(self, universe: set[Label]) -> dict[Label, list[Label]]:
        rev: dict[Label, list[Label]] = {}
        for node in universe:
            for dep in self.deps_of(node):
                rev.setdefault(dep, []).append(node)
        return rev

    def _rclosure(
        self, universe: set[Label], roots: set[Label], depth: int | None = None
    ) -> set[Label]:
        rev = self._reverse(universe)
        seen = roots & universe
        frontier = deque((r, 0) for r in sorted(seen))
        while frontier:
            node, d = frontier.popleft()
            if depth is not None and d >= depth:
                continue
            for user in rev.get(node, ()):
                if user not in seen:
                    seen.add(user)
                    frontier.append((user, d + 1))
        return seen

    # -- expressions --------------------------------------------------------------------------

    def evaluate(self, expr: Expr, env: dict[str, set[Label]] | None = None) -> set[Label]:
        env = env or {}
        try:
            return self._eval(expr, env)
        except re.error as e:
            raise UsageError(f"bad regular expression in query: {e}") from None

    def _error(self, expr: Expr, message: str) -> UsageError:
        return _caret(self.text, expr.column, message) if self.text else UsageError(message)

    def _eval(self, expr: Expr, env: dict[str, set[Label]]) -> set[Label]:
        if isinstance(expr, Word):
            return self.pattern(expr)
        if isinstance(expr, Var):
            if expr.name not in env:
                close = difflib.get_close_matches(expr.name, list(env), n=1)
                hint = f" (did you mean '${close[0]}'?)" if close else ""
                raise self._error(expr, f"undefined variable '${expr.name}'{hint}")
            return env[expr.name]
        if isinstance(expr, SetOf):
            out: set[Label] = set()
            for w in expr.words:
                out |= self.pattern(w)
            return out
        if isinstance(expr, Let):
            value = self._eval(expr.value, env)
            return self._eval(expr.body, {**env, expr.name: value})
        if isinstance(expr, BinOp):
            left = self._eval(expr.left, env)
            right = self._eval(expr.right, env)
            if expr.op == "union":
                return left | right
            if expr.op == "except":
                return left - right
            return left & right
        if isinstance(expr, Call):
            return getattr(self, f"_fn_{expr.name}")(expr, env)
        raise AssertionError(expr)

    def pattern(self, word: Word) -> set[Label]:
        """The targets a target pattern names; a single label may also name a source file."""
        text = word.text
        try:
            p = parse_pattern(text, self.cwd_package)
        except LabelError as e:
            raise self._error(word, f"{e}") from None
        if p.recursive or p.name is None:
            try:
                return set(self.loader.expand_patterns([p]))
            except UserInputError as e:
                if e.origin is None:
                    raise self._error(word, e.message) from None
                raise
        label = Label("", p.package, p.name)
        try:
            self.target(label)
        except UserInputError as e:
            if e.origin is None:
                raise self._error(word, e.message) from None
            raise
        return {label}

    def _word(self, expr: Expr) -> str:
        assert isinstance(expr, Word)
        return expr.text

    def _depth(self, call: Call, index: int) -> int | None:
        if len(call.args) <= index:
            return None
        arg = call.args[index]
        text = self._word(arg)
        if not text.isdigit():
            raise self._error(
                arg, f"{call.name}(): depth must be a non-negative integer, got '{text}'"
            )
        return int(text)

    def _fn_deps(self, call: Call, env: dict[str, set[Label]]) -> set[Label]:
        return self.closure(self._eval(call.args[0], env), self._depth(call, 1))

    def _fn_rdeps(self, call: Call, env: dict[str, set[Label]]) -> set[Label]:
        universe = self.closure(self._eval(call.args[0], env))
        roots = self._eval(call.args[1], env)
        return self._rclosure(universe, roots, self._depth(call, 2))

    def _fn_kind(self, call: Call, env: dict[str, set[Label]]) -> set[Label]:
        rx = re.compile(self._word(call.args[0]))
        return {n for n in self._eval(call.args[1], env) if rx.search(self.kind(n))}

    def _fn_filter(self, call: Call, env: dict[str, set[Label]]) -> set[Label]:
        rx = re.compile(self._word(call.args[0]))
        return {n for n in self._eval(call.args[1], env) if rx.search(str(n))}

    def _fn_attr(self, call: Call, env: dict[str, set[Label]]) -> set[Label]:
        name = self._word(call.args[0])
        rx = re.compile(self._word(call.args[1]))
        out = set()
        for n in self._eval(call.args[2], env):
            t = self.target(n)
            if t is None or name not in t.attrs:
                continue
            if any(rx.search(attr_text(v)) for v in _flatten_select(t.attrs[name])):
                out.add(n)
        return out

    def _fn_labels(self, call: Call, env: dict[str, set[Label]]) -> set[Label]:
        name = self._word(call.args[0])
        out: set[Label] = set()
        for n in self._eval(call.args[1], env):
            t = self.target(n)
            if t is None or name not in t.attrs:
                continue
            kind = (t.rule.attrs.get(name) or {}).get("type")
            if kind in _LABEL_TYPES:
                for v in _attr_labels(kind, t.attrs[name]):
                    label = parse_label(v)
                    self.target_checked(label, t)
                    out.add(label)
        return out

    def _fn_somepath(self, call: Call, env: dict[str, set[Label]]) -> set[Label]:
        starts = self._eval(call.args[0], env)
        ends = self._eval(call.args[1], env)
        parent: dict[Label, Label | None] = {s: None for s in starts}
        frontier = deque(sorted(starts))
        while frontier:
            node = frontier.popleft()
            if node in ends:
                path = set()
                cur: Label | None = node
                while cur is not None:
                    path.add(cur)
                    cur = parent[cur]
                return path
            for dep in self.deps_of(node):
                if dep not in parent:
                    parent[dep] = node
                    frontier.append(dep)
        return set()

    def _fn_allpaths(self, call: Call, env: dict[str, set[Label]]) -> set[Label]:
        forward = self.closure(self._eval(call.args[0], env))
        return self._rclosure(forward, self._eval(call.args[1], env))

    def _fn_buildfiles(self, call: Call, env: dict[str, set[Label]]) -> set[Label]:
        out: set[Label] = set()
        for n in self._eval(call.args[0], env):
            pkg = self.loader.package(n.package)
            out.add(Label("", n.package, pkg.build_file.name))
            out |= self._loaded_bzl(pkg.build_display, n.package)
        return out

    def _loaded_bzl(self, display: str, package: str) -> set[Label]:
        """Workspace .bzl files that a BUILD or .bzl file loads, transitively (bundled rules are
        part of pyimg, not of the workspace, so they are not listed)."""
        out: set[Label] = set()
        stack = [(display, package)]
        while stack:
            name, pkg = stack.pop()
            text = self.loader.source_text(name)
            if text is None:
                continue
            for module in _LOAD_RE.findall(text):
                if module.startswith("@"):
                    continue
                try:
                    label = parse_label(module, pkg)
                except LabelError:
                    continue
                if label not in out:
                    out.add(label)
                    path = f"{label.package}/{label.name}" if label.package else label.name
                    stack.append((path, label.package))
        return out


_LOAD_RE = re.compile(r"""^\s*load\(\s*["']([^"']+)["']""", re.MULTILINE)


def attr_text(value: Any) -> str:
    """An attribute value as `attr()` matches it: lists as `[a, b]`, booleans as 0/1 (Bazel's)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if value is None:
        return ""
    if isinstance(value, list):
        return "[" + ", ".join(attr_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {attr_text(v)}" for k, v in sorted(value.items())) + "}"
    return str(value)
