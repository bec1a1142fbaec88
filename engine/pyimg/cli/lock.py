"""`pyimg lock`: resolve tags, unpinned downloads and Debian packages of MODULE.pyimg into
pyimg.lock (docs/external-inputs.md)."""

from __future__ import annotations

import argparse
import sys

from pyimg.cli.commands import add_common_flags, command, open_session, registry_options

__all__ = ["cmd_lock"]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--update",
        action="append",
        default=[],
        metavar="NAME",
        help="re-resolve this declaration even if the lock covers it (repeatable)",
    )
    add_common_flags(p)


@command("lock", "resolve tags, unpinned downloads and Debian packages in MODULE.pyimg into "
         "pyimg.lock", _configure)
def cmd_lock(args: argparse.Namespace) -> int:
    from pyimg.external.repositories import Repositories
    from pyimg.external.resolve import update_lock

    session = open_session(args)
    with session.locked("lock"):
        repos = Repositories(session, registry=registry_options(args))
        try:
            result = update_lock(repos, session.workspace, args.update,
                                 lambda name, pinned: print(f"@{name} {pinned}"))
        finally:
            repos.close()
    changed, dropped, new = result.changed, result.dropped, result.entries
    what = ", ".join(f"@{n}" for n in changed + dropped) or "nothing"
    print(f"pyimg.lock: {len(new)} entries; changed: {what}", file=sys.stderr)
    return 0
