"""`pyimg clean`: remove the outputs and this workspace's records (with --expunge, the caches)."""

from __future__ import annotations

import argparse
import shutil

from pyimg.cli.commands import add_common_flags, command, open_session

__all__ = ["cmd_clean"]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--expunge", action="store_true", help="also remove the shared caches")
    p.add_argument("--cache-dirs", action="store_true", help="remove only the actions' cache dirs")
    add_common_flags(p)


@command("clean", "remove outputs (with --expunge: the caches too)", _configure)
def cmd_clean(args: argparse.Namespace) -> int:
    from pyimg.core.cas import remove_tree  # tools make read-only trees (Go's module cache)

    session = open_session(args)
    with session.locked("clean"):
        if args.cache_dirs:
            remove_tree(session.cache_root / "cache_dirs")
            return 0
        shutil.rmtree(session.workspace / "pyimg-out", ignore_errors=True)
        from pyimg.build.build_record import FILES as RECORD_FILES

        for name in (*RECORD_FILES, "file_digests.json", "file_digests.log", "analysis", "loading",
                     "noop"):
            p = session.output_base / name
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
        if args.expunge:
            remove_tree(session.cache_root)
    return 0
