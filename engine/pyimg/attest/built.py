"""A build seen whole: the images it made, every action it needed and the digests of what they
read, taken from the last build's no-op record when nothing changed, else from a build."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pyimg.analysis.analyzer import AnalysisResult, TargetResult
from pyimg.build.build import BuildReport, analyze, build, repositories
from pyimg.build.request import BuildRequest
from pyimg.core.action import Action, action_from_json
from pyimg.core.session import Session, cwd_package
from pyimg.external.repositories import Repositories

if TYPE_CHECKING:
    from pyimg.core.file_digests import FileDigestCache
    from pyimg.external.pulled import PulledBlobs

__all__ = ["Built", "LastBuild", "build_for_attestation", "image_layout_path", "unchanged_build"]


@dataclass
class Built:
    """What an attestation is derived from: the top-level targets, the actions the build needed,
    the `sha256:` digest of every input file they read (exec path -> digest), the workspace's
    repositories (declarations and pins), what loading read, the output format's version, and
    the pulled bases' layers a sparse layout lacks. `report` is the build's when one ran (None
    when the no-op record served)."""

    session: Session
    request: BuildRequest
    top_level: list[TargetResult]
    actions: list[Action]
    digests: dict[str, str]
    repos: Repositories
    analysis_files: list[str]
    format_version: str
    lazy_blobs: PulledBlobs | None
    report: BuildReport | None = None

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
        if self.report is None and self.lazy_blobs is not None:
            self.lazy_blobs.close()  # the build's own is closed by whoever pushes its layout
        self.repos.close()


@dataclass(frozen=True)
class LastBuild:
    """The no-op record of the `pyimg build` command line an attestation command stands for,
    found unchanged at stat level (build/noop.py `check_record`): every file that build read,
    every workspace directory and every output it placed are as it left them."""

    output_base: Path
    record: dict[str, Any]
    index: dict[str, Any]  # the incremental build's line: the report, where the action lines are
    actions_file: Path


def unchanged_build(build_argv: list[str], workspace: Path,
                    configured_cache: str | None = None) -> LastBuild | None:
    """The record of the last successful `build_argv` if nothing it depends on changed since
    (None otherwise). Called before the command takes the output base's lock: the check takes
    it shared."""
    from pyimg.build.incremental import actions_path
    from pyimg.build.noop import check_record

    check = check_record(build_argv, workspace, configured_cache)
    if check is None:
        return None
    if check.changed:
        check.release()
        return None
    if check.tail == len(check.raw):
        return None  # a record without the incremental build's line (--secret, --remote-*)
    try:
        index = json.loads(check.raw[check.tail:])
    except ValueError:
        return None
    if not isinstance(index, dict):
        return None
    return LastBuild(check.output_base, check.record, index, actions_path(check.path))


def _from_record(session: Session, request: BuildRequest, last: LastBuild) -> Built | None:
    """`Built` from the last build's record, under the output base's lock; None when the record
    cannot stand for a build now (the full path then builds)."""
    from pyimg.build.incremental import VERSION, ActionLines
    from pyimg.build.noop import file_stat

    index, record = last.index, last.record
    if (last.output_base != session.output_base or index.get("version") != VERSION
            or index.get("cache_root") != str(session.cache_root)):
        return None
    # Another command may have built between the check and the lock: its outputs would differ.
    if any(file_stat(p, with_ctime=False) != s for p, s in record["outputs"].items()):
        return None
    try:
        lines = ActionLines(last.actions_file, index["actions"], index["spans"])
        if len(lines) != record["actions"]:
            return None
        parsed = [lines[i] for i in range(len(lines))]
        actions = [action_from_json(data["action"]) for data in parsed]
        digests: dict[str, str] = {}
        for data in parsed:
            digests.update(data["inputs"])
        format_version = str(index["format"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None
    # Read only if something asks it (10,000 entries cost 0.06 s to parse): the saved analysis
    # needs none, and the store's verify-on-read memo only for a pulled base's layer.
    file_digests = session.digest_cache(lazy=True)
    analysis = _saved_analysis(session, request, file_digests)
    repos = repositories(session, request.registry)
    if analysis is None:
        try:
            _, analysis = analyze(session, request.patterns, repos, file_digests,
                                  request.reuse_analysis, request.platforms)
        except BaseException:
            repos.close()
            raise
    from pyimg.external.pulled import PulledBlobs

    cas, _ = session.stores(file_digests)
    lazy = PulledBlobs(session.output_base, lambda: repos, cas)
    top = [analysis.targets[key] for key in analysis.top_level]
    return Built(session, request, top, actions, digests, repos, list(analysis.files),
                 format_version, lazy)


def _saved_analysis(session: Session, request: BuildRequest,
                    file_digests: FileDigestCache) -> AnalysisResult | None:
    """The analysis `build` saved for `request` (build/build.py `analyze`), unchecked: every file
    loading read and every workspace directory is as the recorded build left them, so it is
    the one that build used. None when it is not there."""
    from pyimg.analysis.cache import AnalysisCache
    from pyimg.analysis.configuration import default_configuration
    from pyimg.labels import LabelError, parse_pattern

    try:
        parsed = [parse_pattern(p, cwd_package(session.workspace)) for p in request.patterns]
    except LabelError:
        return None  # the full path reports it
    # The key `analyze` saves it under: the default platform and the requested ones.
    platform = {"default": str(default_configuration().platform),
                "platforms": list(request.platforms)}
    cache = AnalysisCache(session.output_base / "analysis", session.workspace, file_digests)
    return cache.saved(parsed, platform)


def build_for_attestation(session: Session, request: BuildRequest, out: TextIO | None = None,
                          last: LastBuild | None = None) -> Built:
    """What `request` builds, as `pyimg build` builds it: from `last` (the record of that build,
    unchanged since) when it can stand for it, else by building; the records hold the actions
    the build needed."""
    if last is not None:
        built = _from_record(session, request, last)
        if built is not None:
            return built
    report = build(session, request, out)
    repos = repositories(session, request.registry)
    digests: dict[str, str] = {}
    for record in report.outcome.records:
        digests.update(record.components.get("inputs") or {})
    actions = [record.action for record in report.outcome.records]
    return Built(session, request, report.top_level, actions, digests, repos,
                 list(report.analysis.files), report.format_version, report.lazy_blobs, report)


def image_layout_path(target: TargetResult) -> str | None:
    """The exec path of the layout an image, index or oci_push target made (None: not one)."""
    for pid, fields in target.providers.items():
        if pid.endswith(("%OciImageInfo", "%OciImageIndexInfo", "%OciPushInfo")):
            return str(fields["layout"]["path"])
    return None
