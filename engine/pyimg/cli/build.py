"""`pyimg build`: load, analyze, execute, materialize, report."""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyimg.cli.progress import Progress
from pyimg.cli.session import Session, cwd_package
from pyimg.core.action_cache import ActionResult
from pyimg.core.builtin import BlobSource
from pyimg.core.cas import ContentStore, remove_tree
from pyimg.core.digest import Digest
from pyimg.core.errors import PyimgError, UsageError, UserInputError
from pyimg.core.executor import ActionExecutor, BuildContext, ExecutionRecord
from pyimg.core.file_digests import FileDigestCache
from pyimg.core.scheduler import ActionGraph, BuildOutcome, Scheduler
from pyimg.starlark.analysis import AnalysisResult, Analyzer, TargetResult
from pyimg.starlark.labels import LabelError, parse_pattern
from pyimg.starlark.loading import Loader

if TYPE_CHECKING:
    from pyimg.cli.repositories import Repositories

__all__ = ["BuildOptions", "BuildReport", "analyze", "build", "format_version"]


def format_version() -> str:
    """pyimg's output-format version: enters every action key (SPEC section 6)."""
    from pyimg.oci.format import OUTPUT_FORMAT_VERSION

    return f"pyimg-actions/1;{OUTPUT_FORMAT_VERSION}"



@dataclass
class BuildOptions:
    patterns: list[str]
    jobs: int = 0
    keep_going: bool = False
    verbose: bool = False
    sandbox_strict: bool = False
    color: str = "auto"
    secrets: dict[str, Any] = field(default_factory=dict)
    offline: bool = False  # external inputs only from the repository cache
    registry_config: str | None = None  # a docker config.json for registry credentials
    insecure_registries: tuple[str, ...] = ()  # hosts allowed over plain http
    # Write the lazy layers of pulled bases into the image layouts under pyimg-out/. `pyimg push`
    # does not: it fetches only what the destination registry can neither mount nor has.
    fetch_lazy: bool = True


@dataclass
class BuildReport:
    analysis: AnalysisResult
    outcome: BuildOutcome
    seconds: float
    top_level: list[TargetResult]
    inputs: list[str] = field(default_factory=list)  # every file the build read (for noop.py)
    outputs: list[str] = field(default_factory=list)  # what it placed under pyimg-out/
    lazy_blobs: Any = None  # the pulled bases' layers (PulledBlobs), for a push to fetch


class LazyBuiltins(Mapping[str, Any]):
    """The built-in actions, imported when the first one runs (a no-op build imports none)."""

    def __init__(self) -> None:
        self._table: Mapping[str, Any] | None = None

    def _load(self) -> Mapping[str, Any]:
        if self._table is None:
            from pyimg.actions import load_builtins

            self._table = load_builtins()
        return self._table

    def __getitem__(self, name: str) -> Any:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


# The target platform of analysis (select() conditions); the host's until --platform exists.
PLATFORM = {"os": "linux", "architecture": "amd64"}


def repositories(session: Session, options: BuildOptions | None = None) -> Repositories:
    """The workspace's external repositories (MODULE.pyimg), fetched on first use."""
    from pyimg.cli.repositories import RegistryOptions, Repositories

    o = options or BuildOptions([])
    return Repositories(
        session,
        offline=o.offline,
        registry=RegistryOptions(o.registry_config, tuple(o.insecure_registries)),
    )


def analyze(
    session: Session, patterns: list[str], repos: Repositories | None = None,
    digests: FileDigestCache | None = None,
) -> tuple[Loader, AnalysisResult]:
    """Load and analyze `patterns`. With `digests`, a saved analysis is reused while valid."""
    repos = repos or repositories(session)
    loader = Loader(session.workspace, repos.resolve)
    cwd_pkg = cwd_package(session.workspace)
    try:
        parsed = [parse_pattern(p, cwd_pkg) for p in patterns]
    except LabelError as e:
        raise UsageError(str(e)) from None
    cache = None
    if digests is not None:
        from pyimg.starlark.analysis_cache import AnalysisCache

        cache = AnalysisCache(session.output_base / "analysis", session.workspace, digests)
        hit = cache.get(parsed, PLATFORM, loader)
        if hit is not None:
            return loader, hit
    labels = loader.expand_patterns(parsed)
    result = Analyzer(loader, PLATFORM).analyze(labels)
    result.files = [str(p) for p in loader.read_paths.values()] + [
        str(session.workspace / "MODULE.pyimg"), str(session.workspace / "pyimg.lock")]
    if cache is not None:
        cache.put(parsed, PLATFORM, loader, result, [
            session.workspace / "MODULE.pyimg", session.workspace / "pyimg.lock"])
    return loader, result


def build(session: Session, options: BuildOptions, out: Any = None) -> BuildReport:
    out = out or sys.stderr
    start = time.monotonic()
    jobs = options.jobs or os.cpu_count() or 1
    repos = repositories(session, options)
    # Nothing unpinned enters a build (SPEC section 5): checked before anything is fetched.
    repos.check_pinned()
    digests = session.digest_cache()
    try:
        _, analysis = analyze(session, options.patterns, repos, digests)
    finally:
        repos.close()  # reopened if a lazy layer must be fetched
    from pyimg.cli.repositories import PulledBlobs

    lazy = PulledBlobs(repos)
    graph = ActionGraph(analysis.actions())
    top = [analysis.targets[label] for label in analysis.top_level]
    goals = sorted({f["path"] for t in top for f in t.default_files if not f["is_source"]})
    # The graph holds every action now; the other targets' providers (a pkg_tar of 10,000 files
    # has as many source-file targets) need not stay in memory while layers are compressed.
    analysis.targets = {t.label: t for t in top}
    _release_memory()

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
        source_root=repos.source_path,
        format_version=format_version(),
        builtins=LazyBuiltins(),
        jobs=jobs,
        sandbox_strict=options.sandbox_strict,
        warn=warn,
        cancel=threading.Event(),
        lazy_blobs=lazy,
    )
    secrets = options.secrets.get("store")
    if secrets is not None:
        ctx.secret_hmacs = secrets.hmac
        ctx.secret_files = secrets.file
        ctx.secret_release = secrets.release
        ctx.secret_patterns = secrets.patterns
    executor = ActionExecutor(ctx, cas, cache, digests)
    needed = graph.closure(goals)
    _check_secrets(needed, secrets)
    progress = Progress(out, total=len(needed), verbose=options.verbose, color=options.color)
    scheduler = Scheduler(executor, jobs, options.keep_going, progress.started, progress.finished)
    try:
        outcome = scheduler.run(graph, goals)
    finally:
        if secrets is not None:
            secrets.close()  # the build owns the secret files: none outlives it (also Ctrl-C)
        progress.close()
        digests.save()
        remove_tree(ctx.scratch_root)
    _save_last_build(session, outcome.records)
    # Whatever was built is materialized, also when --keep-going went past a failure.
    try:
        _materialize(session, cas, executor, goals, lazy, options.fetch_lazy)
    finally:
        repos.close()
    digests.save()
    if outcome.failures:
        raise _combine(outcome.failures)
    sources = {
        str(executor.source_path(p))
        for a in needed
        for p in a.inputs + a.tools
        if graph.producer.get(p) is None
    }
    host = {os.path.realpath(t) for a in needed for t in a.host_tools}
    return BuildReport(
        analysis, outcome, time.monotonic() - start, top,
        inputs=sorted(set(analysis.files) | sources | host),
        outputs=[str(session.workspace / g) for g in goals],
        lazy_blobs=lazy,
    )


def _check_secrets(actions: list[Any], store: Any) -> None:
    """Every secret a needed action declares must have been given: one exit-2 error naming each
    action (label, origin) and id, before anything runs (SPEC.md section 6, "Secrets")."""
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


def _release_memory() -> None:
    """Hand the memory of loading and analysis back to the system before execution.

    Starlark's heaps are freed when the loader goes, but glibc keeps freed pages mapped; without
    malloc_trim they add to the peak of the compression that follows (tools/bench/layers.py).
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass  # not glibc: nothing to trim


def _combine(failures: list[PyimgError]) -> PyimgError:
    if len(failures) == 1:
        return failures[0]
    first = failures[0]
    rest = "\n".join(str(f) for f in failures[1:])
    return type(first)(f"{first.message}\n{rest}\n{len(failures)} actions failed", origin=first.origin)


def _save_last_build(session: Session, records: list[ExecutionRecord]) -> None:
    """A compact record of every action's key components, for `pyimg explain`."""
    from pyimg.cli.build_record import save_build_record

    save_build_record(session.output_base, {
        f"{r.action.owner} {r.action.mnemonic} {r.action.all_outputs[0]}": {
            "key": str(r.key),
            "cached": r.cached,
            "origin": r.action.origin,
            "components": r.components,
        }
        for r in records
    })


def _materialize(session: Session, cas: ContentStore, executor: ActionExecutor,
                 goals: list[str], lazy: BlobSource, fetch: bool) -> None:
    """Put the top-level outputs under pyimg-out/, as hard links to the content store.

    An image layout also gets the pulled base layers its output leaves out: every one (fetched
    if need be) with `fetch`, else those already in the store (a push fetches no more than the
    destination lacks, and the layout stays sparse only where bytes were never downloaded).
    """
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
                remove_tree(dest)
            cas.link_to(f.digest, dest, f.executable)
        else:
            _materialize_dir(cas, result, path, dest, lazy, fetch)


def _lazy_blobs(root: Path, tree: Mapping[str, Any], lazy: BlobSource) -> set[str]:
    """The blob paths (`blobs/sha256/<hex>`) that an image layout output leaves to `lazy`: the
    layers of a pulled base. Empty for a directory that is not an OCI layout."""
    if "oci-layout" not in tree or "index.json" not in tree:
        return set()
    from pyimg.oci.layout import Layout, walk

    layout = Layout(root, lazy=lazy)
    return {
        f"blobs/{d.digest.algorithm}/{d.digest.hex}"
        for entry in layout.index.manifests
        for d in walk(layout, entry)
        if f"blobs/{d.digest.algorithm}/{d.digest.hex}" not in tree and lazy.knows(d.digest)
    }


def _same_file(dest: Path, blob: Path) -> bool:
    try:
        a, b = dest.stat(), blob.stat()
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _materialize_dir(cas: ContentStore, result: ActionResult, path: str, dest: Path,
                     lazy: BlobSource, fetch: bool) -> None:
    tree = result.dirs[path]

    def wanted(root: Path) -> list[Digest]:
        blobs = [Digest("sha256", rel.rsplit("/", 1)[1]) for rel in _lazy_blobs(root, tree, lazy)]
        return sorted(d for d in blobs if fetch or cas.verify(d))

    if dest.is_dir() and not dest.is_symlink():
        present = {
            str(Path(dp, f).relative_to(dest).as_posix())
            for dp, _, fs in os.walk(dest) for f in fs
        }
        try:
            extra = {f"blobs/sha256/{d.hex}" for d in wanted(dest)}
        except PyimgError:
            extra = {"?"}  # its index or a manifest was edited: materialize it again
        if present == set(tree) | extra and all(
            _same_file(dest / rel, cas.path(f.digest, f.executable)) for rel, f in tree.items()
        ):
            return
    tmp = dest.parent / f".tmp-{os.getpid()}-{dest.name}"
    remove_tree(tmp)
    for rel, f in sorted(tree.items()):
        cas.link_to(f.digest, tmp / rel, f.executable)
    tmp.mkdir(parents=True, exist_ok=True)
    blobs = wanted(tmp)
    if blobs:
        from concurrent.futures import ThreadPoolExecutor

        # Into the store, verified; layers of one base download side by side, like a pull.
        with ThreadPoolExecutor(max_workers=min(4, len(blobs))) as pool:
            list(pool.map(lazy.fetch, blobs))
        for digest in blobs:
            cas.link_to(digest, tmp / "blobs" / "sha256" / digest.hex)
    old = dest.parent / f".old-{os.getpid()}-{dest.name}"
    if dest.exists() or dest.is_symlink():
        os.rename(dest, old)
    os.rename(tmp, dest)
    if old.exists() or old.is_symlink():
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
