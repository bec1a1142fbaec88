"""`pyimg query` (the target graph) and `pyimg aquery` (the actions and their keys)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from pyimg.cli.commands import (
    add_common_flags,
    add_platforms_flag,
    command,
    open_session,
    platforms_flag,
)

if TYPE_CHECKING:
    from pyimg.core.session import Session
    from pyimg.external.repositories import Repositories

__all__ = ["cmd_aquery", "cmd_query"]

# Repeated from query/serve.py, which registering the command must not import (start-up time).
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
    add_platforms_flag(p)
    add_common_flags(p)


@command(
    "query", "query the target graph: deps, rdeps, kind, attr, somepath, ...", _configure_query
)
def cmd_query(args: argparse.Namespace) -> int:
    session = open_session(args)
    from pyimg.query.language import parse_query
    from pyimg.query.serve import LazyRepositories, query_engine, render_query

    expr = parse_query(args.expression, session.cache_root / "parsers")  # first: a typo fails fast
    repos = LazyRepositories(lambda: _repositories(session))
    try:
        engine = query_engine(session, args.expression, repos)
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


def _repositories(session: Session) -> Repositories:
    """The workspace's external repositories, opened (MODULE.pyimg evaluated) only when a query
    loads a package of one."""
    from pyimg.external.repositories import Repositories

    return Repositories(session)


# -- aquery ------------------------------------------------------------------------------------


@command(
    "aquery", "list the actions of targets: mnemonic, inputs, outputs, argv, key", _configure_aquery
)
def cmd_aquery(args: argparse.Namespace) -> int:
    from pyimg.build.aquery import action_rows

    session = open_session(args)
    rows = action_rows(session, args.expression, platforms_flag(args))
    if args.output == "json":
        sys.stdout.write(json.dumps({"actions": rows}, indent=2, sort_keys=True) + "\n")
    else:
        sys.stdout.write("\n".join(_text_row(r) for r in rows))
    if not rows:
        print("Empty results: the matched targets declare no actions", file=sys.stderr)
    return 0


def _text_row(row: dict[str, Any]) -> str:
    def listing(values: list[str]) -> str:
        # Quoted as the command line is where a path needs it (`a, b.txt` is one file).
        return "[" + ", ".join(_quote(v) for v in values) + "]"

    lines = [
        f"action '{row['mnemonic']} {row['target']}'",
        f"  Mnemonic: {row['mnemonic']}",
        f"  Target: {row['target']}",
        f"  Configuration: {row['configuration'] or 'default (' + row['platform'] + ')'}",
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
