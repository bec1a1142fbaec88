"""Serving a query: the engine over the persisted target graph, and the output formats."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pyimg.core.session import cwd_package
from pyimg.errors import UsageError
from pyimg.query.graph import SOURCE_FILE, TargetGraph

if TYPE_CHECKING:
    from pyimg.loading.cache import CachedLoader
    from pyimg.query.language import QueryEngine

__all__ = ["QUERY_OUTPUTS", "LazyRepositories", "query_engine", "render_query"]

QUERY_OUTPUTS = ("label", "label_kind", "build", "json", "graph")


class ExternalRepositories(Protocol):
    """What a query needs of the external repositories: where `@name` lies, and closing them."""

    def resolve(self, name: str, origin: str | None = None) -> Path: ...

    def close(self) -> None: ...


class LazyRepositories:
    """The workspace's external repositories, made by `open_repositories()` (which reads
    MODULE.pyimg and pyimg.lock) only when the query reaches an `@repo//` label: a query served
    from the loading cache never needs them."""

    def __init__(self, open_repositories: Callable[[], ExternalRepositories]) -> None:
        self._open = open_repositories
        self._repos: ExternalRepositories | None = None

    def resolve(self, name: str, origin: str | None = None) -> Path:
        if self._repos is None:
            self._repos = self._open()
        return self._repos.resolve(name, origin)

    def close(self) -> None:
        if self._repos is not None:
            self._repos.close()


def query_engine(session: Any, text: str, repos: Any) -> QueryEngine:
    """A query engine over the output base's persisted graph, loading packages only when the
    graph cannot answer."""
    from pyimg.core.file_digests import FileDigestCache
    from pyimg.query.language import QueryEngine

    ws = session.workspace
    state = session.output_base / "loading"
    # The digests of the files loading read only: the output base's digest cache also holds
    # every source file, and reading it would cost a query more than the graph does.
    digests = FileDigestCache(state / "file_digests.json")

    def loader() -> CachedLoader:
        # Made only when graph.json cannot answer: importing it starts the Starlark interpreter.
        from pyimg.loading.cache import CachedLoader, LoadingCache

        cache = LoadingCache(
            state / "packages.json",
            digests,
            # They decide what external repositories hold, which loading may have read.
            [ws / "MODULE.pyimg", ws / "pyimg.lock"],
        )
        # External repositories are fetched only when the expression reaches an `@repo//` label.
        return CachedLoader(ws, repos.resolve, cache)

    graph = TargetGraph(ws, state / "graph.json", digests, loader)
    return QueryEngine(graph, text, cwd_package(ws))


def render_query(engine: QueryEngine, nodes: list[int], output: str) -> str:
    """The result (nodes in the order given: by label, or a somepath's path) in one of
    QUERY_OUTPUTS; ends with a newline unless empty."""
    labels = engine.graph.labels
    lines: list[str] = []
    if output == "label":
        lines = [str(labels[n]) for n in nodes]
    elif output == "label_kind":
        lines = [f"{_kind_word(engine, n)} {labels[n]}" for n in nodes]
    elif output == "build":
        for n in nodes:
            lines.extend(_build_stanza(engine, n))
            lines.append("")
        lines = lines[:-1]
    elif output == "json":
        data = {"targets": [_json_node(engine, n) for n in nodes]}
        return json.dumps(data, indent=2, sort_keys=True) + "\n"
    elif output == "graph":
        return _graph(engine, nodes)
    else:
        raise UsageError(f"unknown --output '{output}' (choose one of {', '.join(QUERY_OUTPUTS)})")
    return "".join(line + "\n" for line in lines)


def _kind_word(engine: QueryEngine, node: int) -> str:
    kind = engine.graph.kind(node)
    return kind if kind == SOURCE_FILE else f"{kind} rule"


def _starlark(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return "None"
    if isinstance(value, dict) and "__select__" in value:
        return f"select({_starlark(value['__select__'])})"
    if isinstance(value, list):
        return "[" + ", ".join(_starlark(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_starlark(k)}: {_starlark(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return json.dumps(value)
    return str(value)


def _build_stanza(engine: QueryEngine, node: int) -> list[str]:
    t = engine.graph.target(node)
    if t is None:
        return [f"# {engine.graph.labels[node]} (source file)"]
    lines = [f"# {t.origin}", f"{t.kind}(", f"    name = {_starlark(t.label.name)},"]
    for key, value in sorted(t.attrs.items()):
        lines.append(f"    {key} = {_starlark(value)},")
    lines.append(")")
    return lines


def _json_node(engine: QueryEngine, node: int) -> dict[str, Any]:
    graph = engine.graph
    t = graph.target(node)
    if t is None:
        return {"label": str(graph.labels[node]), "kind": SOURCE_FILE, "deps": []}
    return {
        "label": str(t.label),
        "kind": t.kind,
        "origin": t.origin,
        "attrs": t.attrs,
        "deps": [str(graph.labels[d]) for d in graph.deps_of(node)],
    }


def _graph(engine: QueryEngine, nodes: list[int]) -> str:
    # Edges of the subgraph the result induces, like Bazel's --output=graph.
    graph = engine.graph
    members = set(nodes)
    lines = ['digraph "pyimg query" {', "  node [shape=box];"]
    lines += [f"  {_dot_id(graph.labels[n])};" for n in nodes]
    for n in nodes:
        if graph.kind(n) == SOURCE_FILE:
            continue
        edges = [d for d in graph.deps_of(n) if d in members]
        lines += [f"  {_dot_id(graph.labels[n])} -> {_dot_id(graph.labels[d])};" for d in edges]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_id(label: object) -> str:
    """A label as a dot string: a quote or backslash in a file name must not end it early."""
    text = str(label).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
