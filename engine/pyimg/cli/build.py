"""`pyimg build`: flags -> a build request -> the build -> each image's label, digest and path."""

from __future__ import annotations

import argparse
import sys

from pyimg.cli.commands import (
    add_common_flags,
    add_platforms_flag,
    build_request,
    command,
    open_session,
)

__all__ = ["cmd_build"]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("patterns", nargs="+", metavar="PATTERN")
    add_platforms_flag(p)
    add_common_flags(p)


@command("build", "build targets; prints each image's label, digest and path", _configure)
def cmd_build(args: argparse.Namespace) -> int:
    from pyimg.build.build import build
    from pyimg.build.incremental import record_lines, render_report, report_lines
    from pyimg.build.noop import command_key, record_path, write_record
    from pyimg.build.progress import summary

    session = open_session(args)
    with session.locked("build"):
        request = build_request(args, args.patterns, session)
        # The last build of this command line: its unchanged actions need no new key.
        report = build(session, request,
                       previous=record_path(session.output_base, command_key(args.argv)))
        lines = report_lines(report.top_level, args.verbose)
        stdout = render_report(session.workspace, lines)
        sys.stdout.write(stdout)
        sys.stdout.flush()
        # The record that lets the next identical command skip the build (build/noop.py).
        actions = report.outcome.executed + report.outcome.cached
        write_record(session.output_base, session.workspace, args.argv, report.inputs,
                     report.outputs, stdout, actions,
                     lines=record_lines(session, report, lines, request, args.argv),
                     observed=report.observed)
    print(summary(report.outcome.executed, report.outcome.cached, report.seconds), file=sys.stderr)
    if report.remote_summary is not None:
        print(report.remote_summary, file=sys.stderr)
    return 0
