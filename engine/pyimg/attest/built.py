"""A build seen whole: its report, every action of its analysis and the digests of what it read."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from pyimg.analysis.analyzer import TargetResult
from pyimg.build.build import BuildReport, analyze, build, repositories
from pyimg.build.request import BuildRequest
from pyimg.core.action import Action
from pyimg.core.session import Session
from pyimg.external.repositories import Repositories

__all__ = ["Built", "build_for_attestation"]


@dataclass
class Built:
    """What an attestation is derived from: the build's report, its actions (all of the
    analysis, not only those that ran), the `sha256:` digest of every input file an action read
    (exec path -> digest), and the workspace's repositories (declarations and pins)."""

    session: Session
    request: BuildRequest
    report: BuildReport
    actions: list[Action]
    digests: dict[str, str]
    repos: Repositories

    def host_path(self, exec_path: str) -> Path:
        return self.repos.source_path(exec_path)

    def close(self) -> None:
        self.repos.close()


def build_for_attestation(session: Session, request: BuildRequest,
                          out: TextIO | None = None) -> Built:
    """Build `request` (as `pyimg build` does), then load its whole action graph: the build
    keeps only the top-level targets' providers, the analysis cache gives the rest cheaply."""
    report = build(session, request, out)
    repos = repositories(session, request.registry)
    _, analysis = analyze(session, request.patterns, repos, session.digest_cache(),
                          request.reuse_analysis)
    digests: dict[str, str] = {}
    for record in report.outcome.records:
        digests.update(record.components.get("inputs") or {})
    return Built(session, request, report, analysis.actions(), digests, repos)


def image_layout_path(target: TargetResult) -> tuple[str, str] | None:
    """(exec path of the layout, kind) of an image or index target: kind is "image" or "index"."""
    for pid, fields in target.providers.items():
        if pid.endswith("%OciImageInfo"):
            return str(fields["layout"]["path"]), "image"
        if pid.endswith(("%OciImageIndexInfo", "%OciPushInfo")):
            return str(fields["layout"]["path"]), "index"
    return None
