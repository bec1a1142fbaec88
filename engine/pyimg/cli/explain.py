"""`pyimg explain LABEL`: why each action of the last build ran (build/explain.py)."""

from __future__ import annotations

import argparse
import sys

from pyimg.cli.commands import add_common_flags, command, open_session
from pyimg.core.session import cwd_package
from pyimg.errors import UsageError
from pyimg.labels import LabelError, parse_label

__all__ = ["cmd_explain"]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("label", metavar="LABEL")
    p.add_argument("--all", action="store_true", help="also list the actions that hit the cache")
    p.add_argument(
        "--no-deps", action="store_true", help="only the actions of LABEL, not of its dependencies"
    )
    add_common_flags(p)


@command(
    "explain", "say why each action of the last build ran: which key component changed", _configure
)
def cmd_explain(args: argparse.Namespace) -> int:
    from pyimg.build.build_record import load_build_records
    from pyimg.build.explain import explain

    session = open_session(args)
    try:
        last, previous = load_build_records(session.output_base)
    except ValueError as e:
        raise UsageError(f"{e} is not valid JSON: run `pyimg build` again to rewrite it") from None
    if not last:
        raise UsageError("no build recorded in this output base yet: run `pyimg build` first")
    try:
        label = str(parse_label(args.label, cwd_package(session.workspace)))
    except LabelError as e:
        raise UsageError(str(e)) from None
    from pyimg.core.tool_identity import ManifestStore

    manifests = ManifestStore(session.cache_root).get
    sys.stdout.write(explain(last, previous, label, include_hits=args.all, deps=not args.no_deps,
                             manifests=manifests))
    return 0
