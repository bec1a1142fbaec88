"""`pyimg query` (the target graph) and `pyimg aquery` (the actions and their keys)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyimg.cli.commands import add_common_flags, command, open_session
from pyimg.cli.session import cwd_package
from pyimg.core.errors import UsageError, UserInputError
from pyimg.starlark.labels import LabelError, parse_pattern
from pyimg.starlark.query_graph import SOURCE_FILE

if TYPE_CHECKING:
    from collections.abc import Callable

    from pyimg.cli.repositories import Repositories
    from pyimg.cli.session import Session
    from pyimg.core.action import Action
    from pyimg.core.digest import Digest
    from pyimg.starlark.loading_cache import CachedLoader
    from pyimg.starlark.query import QueryEngine

__all__ = ["action_rows", "cmd_aquery", "cmd_query", "render_query"]

QUERY_OUTPUTS = ("label", "label_kind", "build", "json", "graph")


def _configure_query(p: argparse.ArgumentParser) -> None:
    p.add_argument("expression", metavar="EXPR")
    p.add_argument(
        "--output",
        choices=QUERY_OUTPUTS,
        default="label",
        help="label (default), label_kind, build, json, or graph (Graphviz dot)",
    )
    add_common_flags(p)


def _configure_aquery(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "expression",
        metavar="PATTERN",
        help="a target pattern or a query expression, e.g. 'deps(//svc:image)'",
    )
    p.add_argument("--output", choices=("text", "json"), default="text")
    add_common_flags(p)


class _LazyRepositories:
    """The workspace's external repositories, read (MODULE.pyimg, pyimg.lock) only when the query
    reaches an `@repo//` label: a query served from the loading cache never needs them."""

    def __init__(self, session: Session) -> None:
        self._session = session
        self._repos: Repositories | None = None

    def resolve(self, name: str, origin: str | None = None) -> Path:
        if self._repos is None:
            from pyimg.cli.build import repositories

            self._repos = repositories(self._session)
        return self._repos.resolve(name, origin)

    def close(self) -> None:
        if self._repos is not None:
            self._repos.close()


def _engine(session: Session, text: str, repos: Repositories | _LazyRepositories) -> QueryEngine:
    from pyimg.core.file_digests import FileDigestCache
    from pyimg.starlark.query import QueryEngine
    from pyimg.starlark.query_graph import TargetGraph

    ws = session.workspace
    state = session.output_base / "loading"
    # The digests of the files loading read only: the output base's digest cache also holds
    # every source file, and reading it would cost a query more than the graph does.
    digests = FileDigestCache(state / "file_digests.json")

    def loader() -> CachedLoader:
        # Made only when graph.json cannot answer: importing it starts the Starlark interpreter.
        from pyimg.starlark.loading_cache import CachedLoader, LoadingCache

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


@command(
    "query", "query the target graph: deps, rdeps, kind, attr, somepath, ...", _configure_query
)
def cmd_query(args: argparse.Namespace) -> int:
    session = open_session(args)
    from pyimg.starlark.query import parse_query

    expr = parse_query(args.expression, session.cache_root / "parsers")  # first: a typo fails fast
    repos = _LazyRepositories(session)
    try:
        engine = _engine(session, args.expression, repos)
        nodes = engine.evaluate_in_order(expr)
        # Rendering may load more packages (the deps of --output json and graph).
        text = render_query(engine, nodes, args.output)
    finally:
        repos.close()
    engine.graph.save()
    sys.stdout.write(text)
    if not nodes:
        print("Empty query results", file=sys.stderr)
    return 0


# -- query output ------------------------------------------------------------------------------


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


# -- aquery ------------------------------------------------------------------------------------


@command(
    "aquery", "list the actions of targets: mnemonic, inputs, outputs, argv, key", _configure_aquery
)
def cmd_aquery(args: argparse.Namespace) -> int:
    session = open_session(args)
    rows = action_rows(session, args.expression)
    if args.output == "json":
        sys.stdout.write(json.dumps({"actions": rows}, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write("\n".join(_text_row(r) for r in rows))
    if not rows:
        print("Empty results: the matched targets declare no actions", file=sys.stderr)
    return 0


def action_rows(session: Session, text: str) -> list[dict[str, Any]]:
    """The actions of the targets `text` matches, with the keys a build would compute now.

    A key needs the digests of all inputs; a generated input's digest is known only when the action
    that produces it is in the action cache (then `cached` is true for that action). Otherwise
    `key` is null and `key_note` says which input is missing.
    """
    from pyimg.cli.build import analyze, repositories
    from pyimg.starlark.query import Word, parse_query

    expr = parse_query(text, session.cache_root / "parsers")
    repos = repositories(session)
    try:
        if isinstance(expr, Word) and _is_wildcard(expr.text, session.workspace):
            # `//...` or `:all` goes straight to analysis (one loading pass, as in `pyimg build`).
            _, analysis = analyze(session, [expr.text], repos)
            owners = set(analysis.top_level)
        else:
            engine = _engine(session, text, repos)
            graph = engine.graph
            wanted = [
                str(graph.labels[n])
                for n in engine.sorted_nodes(engine.evaluate(expr))
                if graph.kind(n) != SOURCE_FILE
            ]
            if not wanted:
                return []
            _, analysis = analyze(session, wanted, repos)
            owners = set(wanted)
    finally:
        repos.close()
    selected = [a for t in sorted(owners) for a in analysis.targets[t].actions]
    keys = _keys(session, analysis.actions(), selected, repos.source_path)
    return [_row(a, keys.get(id(a))) for a in selected]


def _is_wildcard(text: str, workspace: Path) -> bool:
    try:
        p = parse_pattern(text, cwd_package(workspace))
    except LabelError:
        return False
    return p.recursive or p.name is None


def _keys(
    session: Session,
    actions: list[Action],
    selected: list[Action],
    source_root: Callable[[str], Path] | None,
) -> dict[int, tuple[Digest | None, bool, str]]:
    """(key, cached, note) per action id, computed exactly as ActionExecutor.execute does."""
    import threading

    from pyimg.actions import load_builtins
    from pyimg.cli.execution import current_format_version
    from pyimg.core.action import action_key
    from pyimg.core.executor import ActionExecutor, BuildContext
    from pyimg.core.scheduler import ActionGraph

    graph = ActionGraph(actions)
    digests = session.digest_cache()
    cas, cache = session.stores(digests)
    ctx = BuildContext(
        workspace=session.workspace,
        cache_root=session.cache_root,
        scratch_root=session.output_base / "scratch",
        source_root=source_root,
        format_version=current_format_version(),
        builtins=load_builtins(),
        cancel=threading.Event(),
    )
    executor = ActionExecutor(ctx, cas, cache, digests)
    out: dict[int, tuple[Digest | None, bool, str]] = {}
    order = graph.closure(p for a in selected for p in a.all_outputs)
    for action in order:
        missing = [
            p
            for p in action.inputs + action.tools
            if p in graph.producer and executor.produced(p) is None
        ]
        if missing:
            out[id(action)] = (None, False, f"unknown until {missing[0]} is built")
            continue
        try:
            components = executor.components(action)
        except UserInputError as e:
            out[id(action)] = (None, False, e.message)
            continue
        key = action_key(components)
        result = cache.get(key)
        if result is not None:
            executor.record_result(action, result)
        out[id(action)] = (key, result is not None, "")
    return out


def _row(action: Action, key: tuple[Digest | None, bool, str] | None) -> dict[str, Any]:
    digest, cached, note = key or (None, False, "not analyzed")
    row: dict[str, Any] = {
        "mnemonic": action.mnemonic,
        "target": action.owner,
        "origin": action.origin,
        "kind": action.kind,
        "inputs": list(action.inputs),
        "tools": list(action.tools),
        "host_tools": list(action.host_tools),
        "outputs": list(action.outputs),
        "output_dirs": list(action.output_dirs),
        "argv": list(action.argv),
        "builtin": action.builtin,
        "params": action.params,
        # Names only: values may be credentials, and the key already covers them.
        "env": sorted(name for name, _ in action.env),
        "secrets": sorted(action.secrets),
        "key": str(digest) if digest is not None else None,
        "cached": cached,
    }
    if note:
        row["key_note"] = note
    return row


def _text_row(row: dict[str, Any]) -> str:
    def listing(values: list[str]) -> str:
        # Quoted as the command line is where a path needs it (`a, b.txt` is one file).
        return "[" + ", ".join(_quote(v) for v in values) + "]"

    lines = [
        f"action '{row['mnemonic']} {row['target']}'",
        f"  Mnemonic: {row['mnemonic']}",
        f"  Target: {row['target']}",
        f"  Origin: {row['origin']}",
        f"  Inputs: {listing(row['inputs'])}",
    ]
    if row["tools"] or row["host_tools"]:
        lines.append(f"  Tools: {listing(row['tools'] + row['host_tools'])}")
    lines.append(f"  Outputs: {listing(row['outputs'] + row['output_dirs'])}")
    if row["argv"]:
        lines.append("  Command Line: " + " ".join(_quote(a) for a in row["argv"]))
    if row["kind"] != "run":
        params = json.dumps(row["params"], sort_keys=True, separators=(",", ":"))
        if len(params) > 400:
            params = params[:400] + f"... ({len(params)} characters; --output json has them all)"
        lines.append(f"  {row['builtin'] or row['kind']}: {params}")
    if row["env"]:
        lines.append(f"  Environment: {listing(row['env'])}")
    if row["secrets"]:
        lines.append(f"  Secrets: {listing(row['secrets'])}")
    key = row["key"] or f"(unknown: {row.get('key_note', '')})"
    lines.append(f"  ActionKey: {key}{' (cached)' if row['cached'] else ''}")
    return "\n".join(lines) + "\n"


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)
