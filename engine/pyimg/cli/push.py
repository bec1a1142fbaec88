"""`pyimg push LABEL --repository R`: build an image or index (unless the last identical
command left it unchanged), then push it (docs/external-inputs.md)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from pyimg.cli.commands import (
    add_common_flags,
    build_request,
    command,
    open_session,
    registry_options,
)
from pyimg.errors import UsageError

__all__ = ["cmd_push"]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("label", help="an image, index or oci_push target")
    p.add_argument("--repository", required=True, help="where to push, registry/repo[:tag]")
    p.add_argument("--tag", action="append", default=[], help="a tag to set (repeatable)")
    add_common_flags(p)


@command("push", "build an image or index and push it to a registry", _configure)
def cmd_push(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from pyimg.build.noop import fast_summary, valid_record, write_record
    from pyimg.build.push import push_layout_dir, target_layout

    session = open_session(args)
    start = time.monotonic()
    # Pushing again what is already built (nothing changed since): no build to verify.
    record = None
    if args.switches.fast_noop:
        record = valid_record(args.argv, session.workspace, args.switches.disk_cache)
    lazy_blobs = None
    if record is not None and record.get("extra", {}).get("layout"):
        layout = Path(record["extra"]["layout"])
        print(fast_summary(record, time.monotonic() - start), file=sys.stderr)
    else:
        from pyimg.build.build import build
        from pyimg.build.progress import summary

        with session.locked("push"):
            report = build(session, build_request(args, [args.label], session, fetch_lazy=False))
            if len(report.top_level) != 1:
                raise UsageError(f"'{args.label}' must name exactly one target")
            layout = target_layout(session, report.top_level[0])
            write_record(session.output_base, session.workspace, args.argv, report.inputs,
                         report.outputs, "", report.outcome.executed + report.outcome.cached,
                         extra={"layout": str(layout)})
        print(summary(report.outcome.executed, report.outcome.cached, report.seconds),
              file=sys.stderr)
        lazy_blobs = report.lazy_blobs
    # A push needs the network anyway: the base layers a sparse layout lacks are fetched
    # whatever --offline says (as before typed requests; the build above honours it).
    registry = replace(registry_options(args), offline=False)
    digest, _ = push_layout_dir(session, layout, args.repository, args.tag, registry,
                                lazy_blobs=lazy_blobs)
    print(digest)
    return 0
