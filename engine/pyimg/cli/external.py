"""`pyimg lock`, `pyimg fetch` and `pyimg push`: the commands about external inputs
(docs/external-inputs.md)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from pyimg.cli.commands import _options, add_common_flags, command, open_session
from pyimg.errors import UsageError

if TYPE_CHECKING:
    from pyimg.build.build import BuildOptions
    from pyimg.core.session import Session
    from pyimg.external.repositories import RegistryOptions, Repositories

__all__ = ["cmd_fetch", "cmd_lock", "cmd_push"]


def _repositories(session: Session, args: argparse.Namespace) -> Repositories:
    # Imported here: registration of the command must not cost the import (start-up time).
    from pyimg.external.repositories import Repositories

    return Repositories(session, offline=args.offline, registry=_registry(args))


def _registry(args: argparse.Namespace) -> RegistryOptions:
    from pyimg.external.repositories import RegistryOptions

    return RegistryOptions(args.registry_config, tuple(args.insecure_registry))


def _configure_lock(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--update",
        action="append",
        default=[],
        metavar="NAME",
        help="re-resolve this declaration even if the lock covers it (repeatable)",
    )
    add_common_flags(p)


@command(
    "lock", "resolve tags and unpinned downloads in MODULE.pyimg into pyimg.lock", _configure_lock
)
def cmd_lock(args: argparse.Namespace) -> int:
    session = open_session(args)
    with session.locked("lock"):
        repos = _repositories(session, args)
        try:
            from pyimg.external.resolve import update_lock

            result = update_lock(repos, session.workspace, args.update,
                                 lambda name, pinned: print(f"@{name} {pinned}"))
        finally:
            repos.close()
    changed, dropped, new = result.changed, result.dropped, result.entries
    what = ", ".join(f"@{n}" for n in changed + dropped) or "nothing"
    print(f"pyimg.lock: {len(new)} entries; changed: {what}", file=sys.stderr)
    return 0


def _configure_fetch(p: argparse.ArgumentParser) -> None:
    add_common_flags(p)


@command(
    "fetch", "download every pinned external input into the repository cache", _configure_fetch
)
def cmd_fetch(args: argparse.Namespace) -> int:
    session = open_session(args)
    with session.locked("fetch"):
        repos = _repositories(session, args)
        try:
            from pyimg.external.resolve import fetch_all

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


def _configure_push(p: argparse.ArgumentParser) -> None:
    p.add_argument("label", help="an image, index or oci_push target")
    p.add_argument("--repository", required=True, help="where to push, registry/repo[:tag]")
    p.add_argument("--tag", action="append", default=[], help="a tag to set (repeatable)")
    add_common_flags(p)


@command("push", "build an image or index and push it to a registry", _configure_push)
def cmd_push(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from pyimg.build.noop import fast_summary, valid_record, write_record
    from pyimg.build.push import push_layout_dir, target_layout

    session = open_session(args)
    start = time.monotonic()
    # Pushing again what is already built (nothing changed since): no build to verify.
    record = valid_record(args.argv, session.workspace) if getattr(args, "argv", None) else None
    if record is not None and record.get("extra", {}).get("layout"):
        layout = Path(record["extra"]["layout"])
        print(fast_summary(record, time.monotonic() - start), file=sys.stderr)
    else:
        from pyimg.build.build import build
        from pyimg.build.progress import summary

        options: BuildOptions = _options(args, [args.label], session, fetch_lazy=False)
        with session.locked("push"):
            report = build(session, options)
            if len(report.top_level) != 1:
                raise UsageError(f"'{args.label}' must name exactly one target")
            layout = target_layout(session, report.top_level[0])
            if getattr(args, "argv", None):
                write_record(session.output_base, session.workspace, args.argv, report.inputs,
                             report.outputs, "", report.outcome.executed + report.outcome.cached,
                             extra={"layout": str(layout)})
        print(summary(report.outcome.executed, report.outcome.cached, report.seconds),
              file=sys.stderr)
    digest, _ = push_layout_dir(session, layout, args.repository, args.tag, _registry(args),
                                lazy_blobs=None if record is not None else report.lazy_blobs)
    print(digest)
    return 0
