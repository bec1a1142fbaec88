"""`pyimg provenance PATTERN...`: build, then write the in-toto/SLSA provenance statement."""

from __future__ import annotations

import argparse

from pyimg.cli.commands import add_common_flags, build_request, command, open_session
from pyimg.cli.sbom import last_build, write_output

__all__ = ["cmd_provenance"]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("patterns", nargs="+", metavar="PATTERN")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    p.add_argument("--include-run-details", action="store_true",
                   help="add this run's time, host and invocation id (the statement is then "
                        "no longer reproducible)")
    add_common_flags(p)


@command("provenance", "build targets and write their SLSA provenance (in-toto Statement v1)",
         _configure)
def cmd_provenance(args: argparse.Namespace) -> int:
    from pyimg.attest.provenance import provenance_bytes

    session = open_session(args)
    details = None
    if args.include_run_details:
        import datetime
        import platform
        import uuid

        now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        details = {"invocationId": str(uuid.uuid4()), "startedOn": now,
                   "host": platform.node(), "system": platform.platform()}
    last = last_build(args, session, {"-o": True, "--output": True, "--include-run-details": False})
    with session.locked("provenance"):
        data = provenance_bytes(session, build_request(args, args.patterns, session),
                                args.include_run_details, details, last=last)
    write_output(data, args.output)
    return 0
