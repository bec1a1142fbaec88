"""`pyimg build`: load, analyze, execute, materialize, report."""

from __future__ import annotations

import gc
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from pyimg.analysis.analyzer import AnalysisResult, Analyzer, TargetResult
from pyimg.build.execution import format_files, materialize, new_context
from pyimg.build.progress import Progress
from pyimg.build.request import BuildRequest
from pyimg.core.cas import remove_tree
from pyimg.core.executor import ActionExecutor, ExecutionRecord
from pyimg.core.file_digests import FileDigestCache, StatKey
from pyimg.core.scheduler import ActionGraph, BuildOutcome, Scheduler
from pyimg.core.session import Session, cwd_package
from pyimg.errors import UsageError, UserInputError
from pyimg.labels import LabelError, parse_pattern
from pyimg.loading.limits import run_on_starlark_thread
from pyimg.loading.loader import Loader, argument_origin_on_disk
from pyimg.loading.package_store import PackageStore, StoredLoader

if TYPE_CHECKING:
    from pyimg.core.action import Action
    from pyimg.core.secrets import SecretProvider
    from pyimg.external.options import RegistryOptions
    from pyimg.external.pulled import PulledBlobs
    from pyimg.external.repositories import Repositories

__all__ = ["BuildReport", "analyze", "build"]


@dataclass
class BuildReport:
    """What a successful build did and read (a failed one raises instead)."""

    analysis: AnalysisResult
    outcome: BuildOutcome
    seconds: float
    top_level: list[TargetResult]
    inputs: list[str] = field(default_factory=list)  # every file the build read (for noop.py)
    outputs: list[str] = field(default_factory=list)  # what it placed under pyimg-out/
    lazy_blobs: PulledBlobs | None = None  # the pulled bases' layers, for a push to fetch
    # For the incremental build's record (build/incremental.py):
    goals: list[str] = field(default_factory=list)  # the exec paths of `outputs`
    sources: dict[str, str] = field(default_factory=dict)  # source exec path -> host path
    fixed: set[str] = field(default_factory=set)  # read by loading, host tools, format_files()
    format_version: str = ""
    # Source host path -> the stat its digest was taken at (None: not in the digest cache).
    observed: dict[str, StatKey | None] = field(default_factory=dict)
    # What the remote cache did (remote/cache.py), for the summary; None without one.
    remote_summary: str | None = None


def repositories(session: Session, registry: RegistryOptions | None = None) -> Repositories:
    """The workspace's external repositories (MODULE.pyimg), fetched on first use."""
    from pyimg.external.repositories import Repositories

    return Repositories(session, registry=registry)


def analyze(
    session: Session, patterns: list[str] | tuple[str, ...], repos: Repositories | None = None,
    digests: FileDigestCache | None = None, reuse_targets: bool = True,
    platforms: tuple[str, ...] = (),
) -> tuple[Loader, AnalysisResult]:
    """Load and analyze `patterns`, for each of `platforms` (`os/arch[/variant]`; none: the
    default configuration, docs/concepts.md "Platforms"). With `digests`, a saved analysis is
    reused while valid, and with `reuse_targets` too, the analyses of unchanged targets when a
    BUILD file changed."""
    # Loading and analysis allocate millions of JSON-like objects (the saved packages and
    # analyses) and make next to no reference cycles: the cycle collector's passes over them
    # cost about a fifth of an analysis at 10,000 targets. Cycles made meanwhile are collected
    # once it is back on.
    collecting = gc.isenabled()
    gc.disable()
    try:
        # On the Starlark thread: each of the thousands of evaluations is then a plain call,
        # not a hand-over between threads (loading/limits.py).
        return run_on_starlark_thread(
            lambda: _analyze(session, patterns, repos, digests, reuse_targets, platforms))
    finally:
        if collecting:
            gc.enable()


def _analyze(
    session: Session, patterns: list[str] | tuple[str, ...], repos: Repositories | None,
    digests: FileDigestCache | None, reuse_targets: bool, platforms: tuple[str, ...],
) -> tuple[Loader, AnalysisResult]:
    repos = repos or repositories(session)
    loader: Loader
    if digests is not None:
        # A BUILD file edited: only the packages whose inputs changed are evaluated again.
        store = PackageStore(session.output_base / "packages", digests,
                             [session.workspace / "MODULE.pyimg", session.workspace / "pyimg.lock"])
        loader = StoredLoader(session.workspace, repos.resolve, store, reuse=reuse_targets)
    else:
        loader = Loader(session.workspace, repos.resolve)
    cwd_pkg = cwd_package(session.workspace)
    try:
        parsed = [parse_pattern(p, cwd_pkg) for p in patterns]
    except LabelError as e:
        raise UsageError(str(e)) from None
    from pyimg.analysis.configuration import default_configuration, requested_configuration

    default = default_configuration()
    configurations = [requested_configuration(p, "--platforms") for p in platforms]
    # What the saved analyses are valid for (the running machine's platform is the default).
    platform = {"default": str(default.platform), "platforms": list(platforms)}
    cache = None
    if digests is not None:
        from pyimg.analysis.cache import AnalysisCache

        cache = AnalysisCache(session.output_base / "analysis", session.workspace, digests)
        hit = cache.get(parsed, platform, loader)
        if hit is not None:
            return loader, hit
    try:
        labels = loader.expand_patterns(parsed)
        reuse = None
        if cache is not None:
            # A BUILD file changed: targets whose inputs did not are not analysed again.
            from pyimg.analysis.target_cache import TargetCache

            reuse = TargetCache(session.output_base / "analysis" / "targets.json", platform,
                                loader.read_files, reuse=reuse_targets)
        result = Analyzer(loader, default, reuse).analyze(labels, configurations or None)
    finally:
        # Also after an error elsewhere: the packages that evaluated are valid records.
        if isinstance(loader, StoredLoader):
            loader.save()
    if reuse is not None:
        reuse.save(loader.read_files, loader.read_paths)
    # MODULE.pyimg, pyimg.lock and the workspace files declarations are made from (an npm_lock's
    # package-lock.json) decide what the external repositories hold.
    external_inputs = [session.workspace / "MODULE.pyimg", session.workspace / "pyimg.lock"] + [
        session.workspace / f for f in repos.module.workspace_files]
    result.files = [str(p) for p in loader.read_paths.values()] + [str(p) for p in external_inputs]
    if cache is not None:
        cache.put(parsed, platform, loader, result, external_inputs)
    return loader, result


def build(session: Session, request: BuildRequest, out: TextIO | None = None,
          previous: Path | None = None) -> BuildReport:
    """Load, analyze, run and place what `request` asks for; progress and warnings go to `out`
    (stderr). `previous`: the record of the last successful build of the same command line
    (build/noop.py), whose unchanged actions are served without keying them again. Closes
    `request.secrets`, also when the build fails."""
    try:
        return _build(session, request, out or sys.stderr, previous)
    finally:
        if request.secrets is not None:
            request.secrets.close()  # the build owns the secret files: none outlives it (Ctrl-C)


def _build(session: Session, request: BuildRequest, out: TextIO,
           previous: Path | None) -> BuildReport:
    start = time.monotonic()
    execution, display = request.execution, request.display
    jobs = execution.workers()
    repos = repositories(session, request.registry)
    # Nothing unpinned enters a build (docs/external-inputs.md): checked before anything is fetched.
    repos.check_pinned()
    digests = session.digest_cache()
    try:
        _, analysis = analyze(session, request.patterns, repos, digests, request.reuse_analysis,
                              request.platforms)
    finally:
        repos.close()  # reopened if a lazy layer must be fetched
    graph = ActionGraph(analysis.actions())
    top = [analysis.targets[label] for label in analysis.top_level]
    goals = sorted({f["path"] for t in top for f in t.default_files if not f["is_source"]})
    needed = graph.closure(goals)
    _check_host_tools(needed, analysis, session.workspace)
    # The graph holds every action now; the other targets' providers (a pkg_tar of 10,000 files
    # has as many source-file targets) need not stay in memory while layers are compressed.
    analysis.targets = {t.key: t for t in top}
    _release_memory()

    cas, cache = session.stores(digests)
    from pyimg.external.pulled import PulledBlobs

    lazy = PulledBlobs(session.output_base, lambda: repos, cas)
    ctx = new_context(session, execution.parallelism(), execution.sandbox_strict,
                      repos.source_path, out=out,
                      lazy_blobs=lazy, secrets=request.secrets)
    remote = None
    if request.remote is not None:
        from pyimg.remote.cache import open_remote_cache

        opener = open_remote_cache
        if request.remote.executor is not None:
            from pyimg.remote.execution import open_remote_execution

            opener = open_remote_execution
        remote = opener(request.remote, cas, session.output_base / "remote-tmp",
                        ctx.format_version, ctx.warn)
        ctx.remote = remote
    executor = ActionExecutor(ctx, cas, cache, digests)
    recorded = None
    if previous is not None and remote is None and request.secrets is None:
        from pyimg.build.recorded import RecordedExecutor, recorded_lines

        recorded = recorded_lines(previous, session.cache_root, ctx.format_version)
    if recorded is not None:
        executor = RecordedExecutor(ctx, cas, cache, digests, *recorded)
    _check_secrets(needed, request.secrets)
    progress = Progress(out, total=len(needed), verbose=display.verbose, color=display.color)
    scheduler = Scheduler(executor, jobs, execution.keep_going, progress.started,
                          progress.finished, progress.ended, execution.schedule_seed)
    try:
        outcome = scheduler.run(graph, goals)
    finally:
        progress.close()
        digests.save()
        remove_tree(ctx.scratch_root)
        if remote is not None:
            remote.close()
    _save_last_build(session, outcome.records)
    # Whatever was built is materialized, also when --keep-going went past a failure.
    try:
        materialize(session, cas, executor, goals, lazy, request.fetch_lazy, out)
    finally:
        repos.close()
    digests.save()
    if outcome.failures:
        raise outcome.error()
    sources = {
        p: str(executor.source_path(p))
        for a in needed
        for p in a.inputs + a.tools
        if graph.producer.get(p) is None
    }
    # A host tool by its path and by what it resolves to: a retargeted symlink is a change too.
    host = {t for a in needed for t in a.host_tools}
    host |= {os.path.realpath(t) for t in host}
    # Every file and directory a tool's identity was computed from: a no-op must see them change.
    tool_paths = executor.host_tool_paths()
    host |= tool_paths
    # A tool file at the stat it was hashed at (an edit during the build must not pass for it).
    tool_stats = {p: digests.get(p) for p in tool_paths}
    fixed = set(analysis.files) | host | set(format_files())
    return BuildReport(
        analysis, outcome, time.monotonic() - start, top,
        inputs=sorted(fixed | set(sources.values())),
        outputs=[str(session.workspace / g) for g in goals],
        goals=goals, sources=sources, fixed=fixed, format_version=ctx.format_version,
        observed={**{p: st for p, st in tool_stats.items() if st is not None},
                  **{h: digests.get(h) for h in sources.values()}},
        lazy_blobs=lazy,
        remote_summary=remote.summary() if remote is not None else None,
    )


def _check_secrets(actions: list[Action], store: SecretProvider | None) -> None:
    """Every secret a needed action declares must have been given: one exit-2 error naming each
    action (label, origin) and id, before anything runs (docs/sandbox-secrets-caches.md, "Secrets")."""
    from pyimg.core.secrets import valid_secret_id

    given = store.ids() if store is not None else frozenset()
    problems: list[tuple[str, str]] = []
    for a in actions:
        for sid in a.secrets:
            if not valid_secret_id(sid):
                problems.append((a.origin, f"{a.describe()}: secret id {sid!r} must match "
                                           "[A-Za-z_][A-Za-z0-9_]*"))
            elif sid not in given:
                problems.append((a.origin, f"{a.describe()} needs secret '{sid}', which was not "
                                           f"given: pass --secret id={sid},src=PATH or "
                                           f"--secret id={sid},env=VAR"))
    if problems:
        first_origin, first = problems[0]
        rest = [f"{origin}: {msg}" if origin else msg for origin, msg in problems[1:]]
        raise UserInputError("\n".join([first, *rest]), origin=first_origin or None)


def _check_host_tools(actions: list[Action], analysis: AnalysisResult, workspace: Path) -> None:
    """Every host tool a needed action runs must exist: an exit-2 error at the `path` of the
    host_tool that declares it (else at the action's target), before anything runs."""
    missing_data = sorted({(tool, d) for a in actions for tool, _, data in a.host_tool_specs
                           for d in data if not os.path.lexists(d)})
    if missing_data:
        tool, path = missing_data[0]
        declared = next((t for t in analysis.targets.values() for pid, fields in t.providers.items()
                         if pid.endswith("%HostToolInfo") and fields.get("path") == tool), None)
        if declared is not None:
            raise UserInputError(
                f"{declared.kind} {declared.label}: attribute 'data': '{path}' does not exist on "
                "this machine", origin=argument_origin_on_disk(workspace, declared.origin, "data"))
    missing = sorted({p for a in actions for p in a.host_tools if not os.path.exists(p)})
    if not missing:
        return
    path = missing[0]
    user = next(a for a in actions if path in a.host_tools)
    declared = next((t for t in analysis.targets.values() for pid, fields in t.providers.items()
                     if pid.endswith("%HostToolInfo") and fields.get("path") == path), None)
    # (analysis_cache.py keeps host tools' providers, so this holds for a cached analysis too)
    if declared is None:  # a rule that names a host path itself
        raise UserInputError(f"{user.describe()}: host tool '{path}' does not exist on this "
                             "machine", origin=user.origin or None)
    raise UserInputError(
        f"{declared.kind} {declared.label}: attribute 'path': '{path}' does not exist on this "
        f"machine (needed by {user.describe()}, {user.origin})",
        origin=argument_origin_on_disk(workspace, declared.origin, "path"),
    )


def _release_memory() -> None:
    """Hand the memory of loading and analysis back to the system before execution.

    Starlark's heaps are freed when the loader goes, but glibc keeps freed pages mapped; without
    malloc_trim they add to the peak of the compression that follows (tools/bench/layers.py).
    """
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim


def _save_last_build(session: Session, records: list[ExecutionRecord]) -> None:
    """A compact record of every action's key components, for `pyimg explain`."""
    from pyimg.build.build_record import entries, save_build_record

    save_build_record(session.output_base, entries(records))
