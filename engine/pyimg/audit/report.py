"""The audit's findings and report: JSON and Markdown."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyimg.audit.provenance import ActionRef
from pyimg.oci.diff import Difference

__all__ = ["REPORT_SCHEMA", "AuditReport", "Finding", "render_markdown", "write_reports"]

REPORT_SCHEMA = "pyimg-audit/1"


@dataclass(frozen=True)
class Finding:
    """One explained difference of one output between two sides (two runs, or the published
    image and the rebuild)."""

    target: str
    output: str
    sides: tuple[str, str]
    digests: tuple[str, str]
    difference: Difference
    actions: tuple[ActionRef, ...]

    def origin(self) -> str | None:
        return self.actions[-1].origin if self.actions and self.actions[-1].origin else None

    def lines(self) -> list[str]:
        a, b = self.sides
        out = [f"  {self.difference.describe(a, b)}"]
        out += [f"    {r.describe()}" for r in self.actions]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "output": self.output,
            "sides": list(self.sides),
            "digests": list(self.digests),
            "difference": self.difference.to_json(),
            "message": self.difference.describe(*self.sides),
            "actions": [r.to_json() for r in self.actions],
        }


@dataclass
class AuditReport:
    patterns: list[str]
    against: dict[str, Any] | None
    runs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "patterns": self.patterns,
            "against": self.against,
            "reproducible": not self.findings,
            "runs": self.runs,
            "outputs": self.outputs,
            "differences": [f.to_json() for f in self.findings],
        }


def render_markdown(report: dict[str, Any]) -> str:
    """The human report: verdict, runs and their conditions, outputs, each difference."""
    verdict = "reproducible" if report["reproducible"] else "NOT reproducible"
    lines = [f"# pyimg audit: {verdict}", "", f"Patterns: `{' '.join(report['patterns'])}`", ""]
    if report["against"]:
        lines += [f"Compared with: `{report['against']['ref']}`", ""]
    lines += ["## Runs", "", "| run | conditions | seconds |", "| --- | --- | --- |"]
    for r in report["runs"]:
        lines.append(f"| {r['conditions']['run']} | {r['description']} | {r['seconds']:.2f} |")
    lines += [
        "",
        "## Outputs",
        "",
        "| target | kind | path | identical | digests |",
        "| --- | --- | --- | --- | --- |",
    ]
    for o in report["outputs"]:
        digests = "<br>".join(f"`{d}`" for d in o["digests"])
        lines.append(
            f"| `{o['target']}` | {o['kind']} | `{o['path']}` | "
            f"{'yes' if o['identical'] else '**no**'} | {digests} |"
        )
    if report["differences"]:
        lines += ["", "## Differences", ""]
        for d in report["differences"]:
            lines += [
                f"### `{d['target']}` ({d['sides'][0]} vs {d['sides'][1]})",
                "",
                f"- {d['message']}",
            ]
            for a in d["actions"]:
                where = f" at `{a['origin']}`" if a["origin"] else ""
                detail = f" ({a['detail']})" if a["detail"] else ""
                lines.append(
                    f"- {a['role']}: {a['mnemonic']} `{a['label']}`{where} -> "
                    f"`{a['output']}`{detail}"
                )
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def write_reports(report: AuditReport, paths: list[str]) -> None:
    data = report.to_json()
    for p in paths:
        text = (
            render_markdown(data)
            if p.endswith(".md")
            else json.dumps(data, indent=2, sort_keys=True) + "\n"
        )
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        Path(p).write_text(text)
