"""`pyimg build`: load, analyze, execute, materialize, report."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyimg.cli.progress import Progress
from pyimg.cli.session import Session
from pyimg.core.action_cache import ActionResult
from pyimg.core.cas import ContentStore, atomic_write_bytes
from pyimg.core.digest import canonical_json
from pyimg.core.errors import PyimgError, UsageError
from pyimg.core.executor import ActionExecutor, BuildContext, ExecutionRecord, _rmtree
from pyimg.core.scheduler import ActionGraph, BuildOutcome, Scheduler
from pyimg.starlark.analysis import AnalysisResult, Analyzer, TargetResult
from pyimg.starlark.labels import LabelError, parse_pattern
from pyimg.starlark.loading import Loader

__all__ = ["BuildOptions", "BuildReport", "FORMAT_VERSION", "analyze", "build", "format_version"]


def format_version() -> str:
    """pyimg's output-format version: enters every action key (SPEC section 6)."""
    from pyimg.oci.format import OUTPUT_FORMAT_VERSION

    return f"pyimg-actions/1;{OUTPUT_FORMAT_VERSION}"


FORMAT_VERSION = format_version


@dataclass
class BuildOptions:
    patterns: list[str]
    jobs: int = 0
    keep_going: bool = False
    verbose: bool = False
    sandbox_strict: bool = False
    color: str = "auto"
    secrets: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuildReport:
    analysis: AnalysisResult
    outcome: BuildOutcome
    seconds: float
    top_level: list[TargetResult]


def _cwd_package(workspace: Path) -> str:
    try:
        rel = Path.cwd().resolve().relative_to(workspace)
    except ValueError:
        return ""
    return "" if str(rel) == "." else rel.as_posix()


def analyze(session: Session, patterns: list[str]) -> tuple[Loader, AnalysisResult]:
    loader = Loader(session.workspace)
    cwd_pkg = _cwd_package(session.workspace)
    try:
        parsed = [parse_pattern(p, cwd_pkg) for p in patterns]
    except LabelError as e:
        raise UsageError(str(e)) from None
    labels = loader.expand_patterns(parsed)
    return loader, Analyzer(loader).analyze(labels)


def build(session: Session, options: BuildOptions, out: Any = None) -> BuildReport:
    from pyimg.actions import load_builtins

    out = out or sys.stderr
    start = time.monotonic()
    jobs = options.jobs or os.cpu_count() or 1
    _, analysis = analyze(session, options.patterns)
    graph = ActionGraph(analysis.actions())
    top = [analysis.targets[label] for label in analysis.top_level]
    goals = sorted({f["path"] for t in top for f in t.default_files if not f["is_source"]})

    digests = session.digest_cache()
    cas, cache = session.stores(digests)
    warned: list[str] = []

    def warn(message: str) -> None:
        if message not in warned:
            warned.append(message)
            print(f"WARNING: {message}", file=out, flush=True)

    ctx = BuildContext(
        workspace=session.workspace,
        cache_root=session.cache_root,
        scratch_root=session.output_base / "scratch",
        format_version=format_version(),
        builtins=load_builtins(),
        jobs=jobs,
        sandbox_strict=options.sandbox_strict,
        warn=warn,
        cancel=threading.Event(),
    )
    secrets = options.secrets.get("store")
    if secrets is not None:
        ctx.secret_hmacs = secrets.hmac
        ctx.secret_files = secrets.file
    executor = ActionExecutor(ctx, cas, cache, digests)
    needed = graph.closure(goals)
    progress = Progress(out, total=len(needed), verbose=options.verbose, color=options.color)
    if any(a.kind == "run" for a in needed):
        from pyimg.core.sandbox import probe_isolation

        if probe_isolation() == "none" and not options.sandbox_strict:
            warn("actions run without a sandbox here (no user/network namespaces): "
                 "they can see the network and undeclared files")
    scheduler = Scheduler(executor, jobs, options.keep_going, progress.started, progress.finished)
    try:
        outcome = scheduler.run(graph, goals)
    finally:
        progress.close()
        digests.save()
        _rmtree(ctx.scratch_root)
    _save_last_build(session, outcome.records)
    # Whatever was built is materialized, also when --keep-going went past a failure.
    _materialize(session, cas, executor, goals, digests)
    digests.save()
    if outcome.failures:
        raise _combine(outcome.failures)
    return BuildReport(analysis, outcome, time.monotonic() - start, top)


def _combine(failures: list[PyimgError]) -> PyimgError:
    if len(failures) == 1:
        return failures[0]
    first = failures[0]
    rest = "\n".join(str(f) for f in failures[1:])
    return type(first)(f"{first.message}\n{rest}\n{len(failures)} actions failed", origin=first.origin)


def _save_last_build(session: Session, records: list[ExecutionRecord]) -> None:
    """A compact record of every action's key components, for `pyimg explain`."""
    data = {
        f"{r.action.owner} {r.action.mnemonic} {r.action.all_outputs[0]}": {
            "key": str(r.key),
            "cached": r.cached,
            "origin": r.action.origin,
            "components": r.components,
        }
        for r in records
    }
    atomic_write_bytes(session.output_base / "last_build.json", canonical_json(data))


def _materialize(session: Session, cas: ContentStore, executor: ActionExecutor,
                 goals: list[str], digests: Any) -> None:
    """Put the top-level outputs under pyimg-out/, as hard links to the content store."""
    for path in goals:
        produced = executor.produced(path)
        if produced is None:
            continue
        kind, result = produced
        dest = session.workspace / path
        if kind == "file":
            f = result.files[path]
            if _same_file(dest, cas.path(f.digest, f.executable)):
                continue
            if dest.is_dir() and not dest.is_symlink():
                _rmtree(dest)
            cas.link_to(f.digest, dest, f.executable)
        else:
            _materialize_dir(cas, result, path, dest)


def _same_file(dest: Path, blob: Path) -> bool:
    try:
        a, b = dest.stat(), blob.stat()
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _materialize_dir(cas: ContentStore, result: ActionResult, path: str, dest: Path) -> None:
    tree = result.dirs[path]
    if dest.is_dir() and not dest.is_symlink():
        present = {
            str(Path(dp, f).relative_to(dest).as_posix())
            for dp, _, fs in os.walk(dest) for f in fs
        }
        if present == set(tree) and all(
            _same_file(dest / rel, cas.path(f.digest, f.executable)) for rel, f in tree.items()
        ):
            return
    tmp = dest.parent / f".tmp-{os.getpid()}-{dest.name}"
    _rmtree(tmp)
    for rel, f in sorted(tree.items()):
        cas.link_to(f.digest, tmp / rel, f.executable)
    tmp.mkdir(parents=True, exist_ok=True)
    old = dest.parent / f".old-{os.getpid()}-{dest.name}"
    if dest.exists() or dest.is_symlink():
        os.rename(dest, old)
    os.rename(tmp, dest)
    if old.exists() or old.is_symlink():
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
