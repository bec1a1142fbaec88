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

__all__ = ["Built", "build_for_attestation", "image_layout_path"]


@dataclass
class Built:
    """What an attestation is derived from: the build's report, the actions it needed, the
    `sha256:` digest of every input file they read (exec path -> digest), and the workspace's
    repositories (declarations and pins)."""

    session: Session
    request: BuildRequest
    report: BuildReport
    actions: list[Action]
    digests: dict[str, str]
    repos: Repositories

    def host_path(self, exec_path: str) -> Path:
        return self.repos.source_path(exec_path)

    def analysis_actions(self) -> list[Action]:
        """Every action of the analysis, also those the build did not need (the pkg_tar that
        an image streams instead): the build keeps only the top-level targets' providers, the
        analysis cache gives the rest."""
        _, analysis = analyze(self.session, self.request.patterns, self.repos,
                              self.session.digest_cache(), self.request.reuse_analysis,
                              self.request.platforms)
        return analysis.actions()

    def close(self) -> None:
        self.repos.close()


def build_for_attestation(session: Session, request: BuildRequest,
                          out: TextIO | None = None) -> Built:
    """Build `request` as `pyimg build` does; its records hold the actions it needed."""
    report = build(session, request, out)
    repos = repositories(session, request.registry)
    digests: dict[str, str] = {}
    for record in report.outcome.records:
        digests.update(record.components.get("inputs") or {})
    actions = [record.action for record in report.outcome.records]
    return Built(session, request, report, actions, digests, repos)


def image_layout_path(target: TargetResult) -> str | None:
    """The exec path of the layout an image, index or oci_push target made (None: not one)."""
    for pid, fields in target.providers.items():
        if pid.endswith(("%OciImageInfo", "%OciImageIndexInfo", "%OciPushInfo")):
            return str(fields["layout"]["path"])
    return None
