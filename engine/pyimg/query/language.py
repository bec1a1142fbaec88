"""The query language of `pyimg query`: parses expressions (lark) and evaluates them over targets.

Evaluation walks a `TargetGraph` (the loading-phase target graph, see `query_graph`). Results are
sets of node ids; callers print them sorted by label (the order Bazel uses by default), so output
never depends on set or dict order. A `somepath()` result is printed as its path, in path order
(`QueryEngine.evaluate_in_order`).
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Callable, Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from pyimg.core.graphs import reachable
from pyimg.errors import UsageError, UserInputError
from pyimg.labels import Label, LabelError, parse_label, parse_pattern
from pyimg.query.graph import LABEL_TYPES, TargetGraph, attr_labels, select_branches

__all__ = [
    "FUNCTIONS",
    "GRAMMAR",
    "Expr",
    "QueryEngine",
    "parse_query",
]

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
# NamedTuples, not dataclasses: a frozen dataclass costs ~0.3 ms to define, paid by every query.
# Each node's first field is its 1-based column in the expression text.


class Word(NamedTuple):
    column: int
    text: str
    quoted: bool = False


class Var(NamedTuple):
    column: int
    name: str


class Call(NamedTuple):
    column: int
    name: str
    args: tuple[Expr, ...]


class SetOf(NamedTuple):
    column: int
    words: tuple[Word, ...]


class Let(NamedTuple):
    column: int
    name: str
    value: Expr
    body: Expr


class BinOp(NamedTuple):
    column: int
    op: str  # union | except | intersect
    left: Expr
    right: Expr


Expr = Word | Var | Call | SetOf | Let | BinOp
_NODES: dict[str, Any] = {n.__name__: n for n in (Word, Var, Call, SetOf, Let, BinOp)}


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

    `cache_dir`, when given, keeps the compiled parser between processes, and the syntax trees
    of the last expressions parsed: running a query again then needs no parser at all (importing
    lark is a quarter of a query's time). Only well-formed trees are kept, never results: every
    query is evaluated again on the current graph.
    """
    if cache_dir is None:
        return _parse(text, None)
    parses = _ParseCache(cache_dir)
    expr = parses.get(text)
    if expr is None:
        expr = _parse(text, cache_dir)
        parses.put(text, expr)
    return expr


class _ParseCache:
    """The syntax trees of the last `KEEP` expressions, in one small JSON file named by the
    grammar and pyimg's version. Each entry carries a checksum; anything unreadable is a miss."""

    KEEP = 64

    def __init__(self, cache_dir: Path) -> None:
        from pyimg import __version__

        tag = hashlib.sha256(f"{__version__}\n{_TREE_FORMAT}\n{GRAMMAR}".encode()).hexdigest()
        self.path = cache_dir / f"query-parses-{tag[:16]}.json"
        self._entries: list[list[Any]] | None = None

    def _load(self) -> list[list[Any]]:
        if self._entries is None:
            import json

            try:
                entries = json.loads(self.path.read_bytes())
                self._entries = entries if isinstance(entries, list) else []
            except (OSError, ValueError):
                self._entries = []
        return self._entries

    @staticmethod
    def _check(text: str, tree: Any) -> str:
        import json

        data = json.dumps([text, tree], separators=(",", ":"))
        return hashlib.sha256(data.encode()).hexdigest()

    def get(self, text: str) -> Expr | None:
        for entry in self._load():
            try:
                got, tree, check = entry
                if got == text and check == self._check(text, tree):
                    return _decode(tree)
            except (ValueError, TypeError, KeyError, IndexError):
                continue  # a damaged entry: parse again
        return None

    def put(self, text: str, expr: Expr) -> None:
        from pyimg.core.cas import atomic_write_bytes

        tree = _encode(expr)
        kept = [e for e in self._load() if not (isinstance(e, list) and e and e[0] == text)]
        entries = [[text, tree, self._check(text, tree)], *kept][: self.KEEP]
        try:
            import json

            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, json.dumps(entries, separators=(",", ":")).encode())
        except OSError:
            pass  # a read-only cache: the next query parses again


# Bumped when the syntax tree's node types change: trees kept by _ParseCache are then unused.
_TREE_FORMAT = 1


def _encode(node: Any) -> Any:
    """A syntax tree as JSON: a node is [type name, fields...]; a tuple of nodes is a dict."""
    if isinstance(node, tuple) and hasattr(node, "_fields"):
        return [type(node).__name__, *(_encode(f) for f in node)]
    if isinstance(node, tuple):
        return {"nodes": [_encode(n) for n in node]}
    return node


def _decode(obj: Any) -> Any:
    if isinstance(obj, dict):
        return tuple(_decode(n) for n in obj["nodes"])
    if isinstance(obj, list):
        cls = _NODES[obj[0]]
        return cls(*(_decode(f) for f in obj[1:]))
    return obj


def _parse(text: str, cache_dir: Path | None) -> Expr:
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
            f"unexpected character {e.char!r}",
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

    def token(node: Token | Tree[Token]) -> tuple[int, str]:
        """(column, text) of a terminal, where the grammar puts one."""
        assert isinstance(node, Token) and node.column is not None, node
        return node.column, node.value

    def word(node: Token | Tree[Token]) -> Word:
        column, value = token(node)
        if isinstance(node, Token) and node.type == "STRING":
            return Word(column, value[1:-1], quoted=True)
        return Word(column, value)

    def build(node: Token | Tree[Token]) -> Expr:
        if isinstance(node, Token):
            return word(node)
        col = node.meta.column if not node.meta.empty else 1
        kids = node.children
        if node.data == "word":
            return word(kids[0])
        if node.data == "var":
            column, value = token(kids[0])
            return Var(column, value[1:])
        if node.data == "set_":
            return SetOf(col, tuple(word(k) for k in kids))
        if node.data == "let":
            return Let(col, token(kids[0])[1], build(kids[1]), build(kids[2]))
        if node.data == "binop":
            assert isinstance(kids[1], Tree)
            column, op = token(kids[1].children[0])
            return BinOp(column, _OPS[op], build(kids[0]), build(kids[2]))
        if node.data == "call":
            column, name = token(kids[0])
            args = tuple(build(k) for k in kids[1:] if k is not None)
            _check_call(text, name, column, args)
            return Call(column, name, args)
        raise AssertionError(node.data)

    return build(tree)


def _close_matches(word: str, choices: list[str], cutoff: float = 0.6) -> list[str]:
    import difflib  # here: only an error needs it, and every query pays for an import

    return difflib.get_close_matches(word, choices, n=1, cutoff=cutoff)


def _check_call(text: str, name: str, column: int, args: tuple[Expr, ...]) -> None:
    params = FUNCTIONS.get(name)
    if params is None:
        close = _close_matches(name, [*FUNCTIONS, "set"], cutoff=0.5)
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


class QueryEngine:
    """Evaluates parsed expressions over a TargetGraph; results are sets of node ids.

    Only packages that an expression reaches are loaded; `//...` loads them all. `sorted_nodes`
    orders a result by label, the order every output uses.
    """

    def __init__(self, graph: TargetGraph, text: str = "", cwd_package: str = "") -> None:
        self.graph = graph
        self.text = text
        self.cwd_package = cwd_package

    def sorted_nodes(self, nodes: Iterable[int]) -> list[int]:
        return sorted(nodes, key=self.graph.labels.__getitem__)

    def closure(self, roots: Iterable[int], depth: int | None = None) -> set[int]:
        deps_of = self.graph.deps_of
        if depth is None:
            return reachable(roots, deps_of)
        seen = set(roots)
        frontier = list(seen)
        for _ in range(depth):
            frontier = [d for n in frontier for d in deps_of(n) if d not in seen]
            seen.update(frontier)
        return seen

    def _rclosure(self, universe: set[int], roots: set[int], depth: int | None = None) -> set[int]:
        deps_of = self.graph.deps_of
        rev: dict[int, list[int]] = {}
        for node in universe:
            for dep in deps_of(node):
                rev.setdefault(dep, []).append(node)
        seen = roots & universe
        frontier = list(seen)
        level = 0
        while frontier and (depth is None or level < depth):
            frontier = [u for n in frontier for u in rev.get(n, ()) if u not in seen]
            seen.update(frontier)
            level += 1
        return seen

    # -- expressions --------------------------------------------------------------------------

    def evaluate(self, expr: Expr, env: dict[str, set[int]] | None = None) -> set[int]:
        env = env or {}
        try:
            return self._eval(expr, env)
        except re.error as e:
            raise UsageError(f"bad regular expression in query: {e}") from None

    def evaluate_in_order(self, expr: Expr) -> list[int]:
        """The result in the order to print it: a `somepath()` as its path, from start to end
        (as Bazel prints one); any other result sorted by label."""
        if isinstance(expr, Call) and expr.name == "somepath":
            try:
                return self._somepath(expr, {})
            except re.error as e:
                raise UsageError(f"bad regular expression in query: {e}") from None
        return self.sorted_nodes(self.evaluate(expr))

    def _error(self, expr: Expr, message: str) -> UsageError:
        return _caret(self.text, expr.column, message) if self.text else UsageError(message)

    def _eval(self, expr: Expr, env: dict[str, set[int]]) -> set[int]:
        if isinstance(expr, Word):
            return self.pattern(expr)
        if isinstance(expr, Var):
            if expr.name not in env:
                close = _close_matches(expr.name, list(env))
                hint = f" (did you mean '${close[0]}'?)" if close else ""
                raise self._error(expr, f"undefined variable '${expr.name}'{hint}")
            return env[expr.name]
        if isinstance(expr, SetOf):
            out: set[int] = set()
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
            function: Callable[[Call, dict[str, set[int]]], set[int]]
            function = getattr(self, f"_fn_{expr.name}")
            return function(expr, env)
        raise AssertionError(expr)

    def pattern(self, word: Word) -> set[int]:
        """The targets a target pattern names; a single label may also name a source file."""
        try:
            p = parse_pattern(word.text, self.cwd_package)
        except LabelError as e:
            raise self._error(word, f"{e}") from None
        try:
            if p.recursive or p.name is None:
                return set(self.graph.pattern_targets(p))
            return {self.graph.node(Label(p.repo, p.package, p.name))}
        except UserInputError as e:
            if e.origin is None:
                raise self._error(word, e.message) from None
            raise

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

    def _fn_deps(self, call: Call, env: dict[str, set[int]]) -> set[int]:
        return self.closure(self._eval(call.args[0], env), self._depth(call, 1))

    def _fn_rdeps(self, call: Call, env: dict[str, set[int]]) -> set[int]:
        universe = self.closure(self._eval(call.args[0], env))
        roots = self._eval(call.args[1], env)
        return self._rclosure(universe, roots, self._depth(call, 2))

    def _fn_kind(self, call: Call, env: dict[str, set[int]]) -> set[int]:
        rx = re.compile(self._word(call.args[0]))
        return {n for n in self._eval(call.args[1], env) if rx.search(self.graph.kind(n))}

    def _fn_filter(self, call: Call, env: dict[str, set[int]]) -> set[int]:
        rx = re.compile(self._word(call.args[0]))
        labels = self.graph.labels
        return {n for n in self._eval(call.args[1], env) if rx.search(str(labels[n]))}

    def _fn_attr(self, call: Call, env: dict[str, set[int]]) -> set[int]:
        name = self._word(call.args[0])
        rx = re.compile(self._word(call.args[1]))
        out = set()
        for n in self._eval(call.args[2], env):
            t = self.graph.target(n)
            if t is None or name not in t.attrs:
                continue
            if any(rx.search(attr_text(v)) for v in select_branches(t.attrs[name])):
                out.add(n)
        return out

    def _fn_labels(self, call: Call, env: dict[str, set[int]]) -> set[int]:
        name = self._word(call.args[0])
        out: set[int] = set()
        for n in self._eval(call.args[1], env):
            t = self.graph.target(n)
            if t is None or name not in t.attrs:
                continue
            kind = (t.rule.attrs.get(name) or {}).get("type")
            if kind in LABEL_TYPES:
                out.update(
                    self.graph.node(parse_label(v), n) for v in attr_labels(kind, t.attrs[name])
                )
        return out

    def _fn_somepath(self, call: Call, env: dict[str, set[int]]) -> set[int]:
        return set(self._somepath(call, env))

    def _somepath(self, call: Call, env: dict[str, set[int]]) -> list[int]:
        """A shortest path from the first set to the second, in path order (start first)."""
        starts = self._eval(call.args[0], env)
        ends = self._eval(call.args[1], env)
        parent: dict[int, int | None] = {s: None for s in starts}
        frontier = deque(self.sorted_nodes(starts))
        while frontier:
            node = frontier.popleft()
            if node in ends:
                path = []
                cur: int | None = node
                while cur is not None:
                    path.append(cur)
                    cur = parent[cur]
                return path[::-1]
            for dep in self.graph.deps_of(node):
                if dep not in parent:
                    parent[dep] = node
                    frontier.append(dep)
        return []

    def _fn_allpaths(self, call: Call, env: dict[str, set[int]]) -> set[int]:
        forward = self.closure(self._eval(call.args[0], env))
        return self._rclosure(forward, self._eval(call.args[1], env))

    def _fn_buildfiles(self, call: Call, env: dict[str, set[int]]) -> set[int]:
        loader = self.graph.loader
        out: set[Label] = set()
        for n in self._eval(call.args[0], env):
            package = self.graph.labels[n].package
            pkg = loader.package(package)
            out.add(Label("", package, pkg.build_file.name))
            out |= self._loaded_bzl(pkg.build_display, package)
        return {self.graph.intern(label) for label in out}

    def _loaded_bzl(self, display: str, package: str) -> set[Label]:
        """Workspace .bzl files that a BUILD or .bzl file loads, transitively (bundled rules are
        part of pyimg, not of the workspace, so they are not listed)."""
        out: set[Label] = set()
        stack = [(display, package)]
        loader = self.graph.loader
        while stack:
            name, pkg = stack.pop()
            text = loader.source_text(name)
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
