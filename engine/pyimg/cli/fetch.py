"""`pyimg fetch`: download every pinned external input into the repository cache
(docs/external-inputs.md)."""

from __future__ import annotations

import argparse
import sys

from pyimg.cli.commands import add_common_flags, command, open_session, registry_options

__all__ = ["cmd_fetch"]


def _configure(p: argparse.ArgumentParser) -> None:
    add_common_flags(p)


@command("fetch", "download every pinned external input into the repository cache", _configure)
def cmd_fetch(args: argparse.Namespace) -> int:
    from pyimg.external.repositories import Repositories
    from pyimg.external.resolve import fetch_all

    session = open_session(args)
    with session.locked("fetch"):
        repos = Repositories(session, registry=registry_options(args))
        try:
            fetch_all(repos)
        finally:
            repos.close()
    n = len(repos.module.declarations)
    print(
        f"Fetched {n} external input{'s' * (n != 1)}: {repos.downloads} downloads, the rest "
        "from the repository cache",
        file=sys.stderr,
    )
    return 0
