"""`pyimg audit`: rebuild targets from nothing under varied conditions and explain any difference."""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from pyimg.audit.compare import compare_against, compare_runs
from pyimg.audit.provenance import Provenance
from pyimg.audit.report import AuditReport, Finding, write_reports
from pyimg.audit.runner import run_all
from pyimg.cli.commands import add_common_flags, command
from pyimg.core.workspace import find_workspace
from pyimg.errors import AuditDifferenceError, UsageError

__all__ = ["cmd_audit"]


def _pass_through(args: argparse.Namespace) -> list[str]:
    flags: list[str] = []
    if args.keep_going:
        flags.append("--keep-going")
    if args.sandbox == "strict":
        flags.append("--sandbox=strict")
    if args.offline:
        flags.append("--offline")
    if args.registry_config:
        flags += ["--registry-config", str(Path(args.registry_config).resolve())]
    for host in args.insecure_registry or ():
        flags += ["--insecure-registry", host]
    for secret in args.secret or ():
        # A relative src= names a file relative to where audit was started, not the copy.
        parts = []
        for part in secret.split(","):
            if part.startswith("src="):
                part = "src=" + str(Path(part[4:]).resolve())
            parts.append(part)
        flags += ["--secret", ",".join(parts)]
    return flags


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("patterns", nargs="+", metavar="PATTERN")
    p.add_argument(
        "--runs", type=int, default=None, help="how many times to build from nothing (default 2)"
    )
    p.add_argument(
        "--against",
        metavar="DIGEST|REF",
        help="compare one rebuild with a published image: a digest, an OCI layout "
        "(PATH or PATH:TAG) or a registry reference (HOST/REPO:TAG)",
    )
    p.add_argument(
        "--report",
        action="append",
        default=[],
        metavar="FILE",
        help="write the report: Markdown if FILE ends with .md, else JSON (repeatable)",
    )
    add_common_flags(p)


@command(
    "audit", "rebuild targets from nothing under varied conditions; explain differences", _configure
)
def cmd_audit(args: argparse.Namespace) -> int:
    if args.against and args.runs is not None:
        raise UsageError("--against compares one rebuild with a published image: drop --runs")
    runs = 1 if args.against else (2 if args.runs is None else args.runs)
    if runs < 1 or (runs < 2 and not args.against):
        raise UsageError(f"--runs must be at least 2, got {runs}")
    if args.jobs:
        print("audit: --jobs is ignored (each run chooses its own)", file=sys.stderr)
    workspace = find_workspace(Path.cwd())
    rel_cwd = Path.cwd().resolve().relative_to(workspace)
    report = AuditReport(list(args.patterns), None)
    tmp = Path(tempfile.mkdtemp(prefix="pyimg-audit-"))
    try:
        flags = _pass_through(args)
        done = run_all(list(args.patterns), flags, workspace, rel_cwd, runs, tmp, report)
        prov = Provenance(done[0].output_base, done[0].cache)
        if args.against:
            registry = (args.registry_config, tuple(args.insecure_registry or ()))
            compare_against(args.against, registry, done[0], prov, report, tmp)
        else:
            compare_runs(done, prov, report)
    finally:
        from pyimg.core.cas import remove_tree as _rmtree

        _rmtree(tmp)  # the runs' caches hold read-only blobs and trees
    write_reports(report, args.report)
    return _finish(report)


def _finish(report: AuditReport) -> int:
    outputs = report.outputs
    if not report.findings:
        what = "the published image" if report.against else f"{len(report.runs)} runs"
        print(f"audit: {len(outputs)} outputs identical across {what}: reproducible")
        return 0
    by_target: dict[tuple[str, str, tuple[str, str]], list[Finding]] = {}
    for f in report.findings:
        by_target.setdefault((f.target, f.output, f.sides), []).append(f)
    for (target, output, sides), findings in by_target.items():
        d = findings[0].digests
        print(f"{target} differs ({output}): {sides[0]} {d[0]}, {sides[1]} {d[1]}")
        for f in findings:
            print("\n".join(f.lines()))
    first = report.findings[0]
    cause = ""
    if first.actions:
        a = first.actions[-1]
        cause = f"; caused by {a.mnemonic} {a.label} ({a.origin})" if a.origin else ""
    differing = sorted({f.target for f in report.findings})
    more = len(report.findings) - 1
    verdict = (
        f"{', '.join(differing)} differs from the published image"
        if report.against
        else f"not reproducible: {', '.join(differing)}"
    )
    raise AuditDifferenceError(
        f"audit: {verdict}; first difference: "
        f"{first.difference.describe(*first.sides)}{cause}"
        + (f" ({more} more above)" if more else ""),
        origin=first.origin(),
    )
