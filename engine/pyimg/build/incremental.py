"""Incremental builds: when only the content of source files changed since the last successful
build of a command line, run only what depends on them, print the report a full build would, and
update the records by what changed.

After a successful full build, `record_lines` writes one line per action to a file beside the
no-op record (`build/noop.py`: its definition, key, the input digests the key came from, its outputs
and the goals among them) and returns the record's index line (the build's options, each source
file's exec path and readers, the readers of each action's outputs, the report, where each action
line is). `rebuild` starts from a check whose changed files are all sources (no BUILD/.bzl/MODULE/
lock file, host tool or pyimg module: loading read none of them, so the action graph is the
recorded one), hashes them and re-keys what reads them through `core/incremental.py`; in any other
case it returns None and the full build runs. It parses only the lines of the actions it re-keys
and of their producers, and appends the lines it changes. Called before the command line is
parsed, it imports only what running actions needs.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyimg.build.build_record import (
    entries,
    mark_all_cached,
    record_base,
    save_build_record,
    update_build_record,
)
from pyimg.build.execution import materialize, new_context
from pyimg.build.noop import Check, command_key, file_stat, output_stats, pyimg_code, record_path
from pyimg.build.progress import Progress, summary
from pyimg.build.request import BuildRequest, DisplayOptions, ExecutionOptions
from pyimg.core.action import action_from_json, action_to_json, key_components
from pyimg.core.action_cache import ActionResult
from pyimg.core.cas import atomic_file, remove_tree
from pyimg.core.confinement import Confinement
from pyimg.core.digest import Digest
from pyimg.core.executor import ExecutionRecord
from pyimg.core.file_digests import FileDigestCache
from pyimg.core.incremental import IncrementalExecutor, RecordedAction, downstream
from pyimg.core.scheduler import ActionGraph, Scheduler
from pyimg.core.session import Session
from pyimg.core.workspace import EXTERNAL_DIR, MODULE_FILE
from pyimg.external.options import RegistryOptions
from pyimg.external.pulled import PulledBlobs

if TYPE_CHECKING:
    from pyimg.analysis.analyzer import TargetResult
    from pyimg.build.build import BuildReport
    from pyimg.external.repositories import Repositories

__all__ = ["rebuild", "record_lines", "render_report", "report_lines"]

VERSION = 1  # of the index and action lines
# pyimg.lock (external/repositories.py's LOCK_FILE, not imported: it costs what this spares)
_LOCK_FILE = "pyimg.lock"


def report_lines(top_level: list[TargetResult], verbose: bool) -> list[list[str]]:
    """What `pyimg build` prints on stdout, as `render_report` takes it: for an image or index,
    its label, digest file and layout (the digest is read when rendering); other targets' files
    with --verbose."""
    lines: list[list[str]] = []
    for target in top_level:
        for pid, fields in target.providers.items():
            if pid.endswith(("%OciImageInfo", "%OciImageIndexInfo")):
                lines.append([target.key, fields["digest"]["path"], fields["layout"]["path"]])
                break
        else:
            if verbose:
                lines.extend([f"{target.key} {f['path']}"] for f in target.default_files)
    return lines


def render_report(workspace: Path, lines: list[list[str]]) -> str:
    out = []
    for line in lines:
        if len(line) == 3:
            label, digest_path, layout = line
            digest = (workspace / digest_path).read_text().strip()
            out.append(f"{label} {digest} {layout}\n")
        else:
            out.append(f"{line[0]}\n")
    return "".join(out)


class ActionLines:
    """The action lines of a record, in a file of their own beside it: one JSON object per line,
    parsed when asked for (a record holds thousands); replaced lines are appended, so that an
    incremental build writes only what it changed. The file starts with a token that the index
    names: an index never reads lines of another record (a full build writes both anew)."""

    def __init__(self, path: Path, token: str, spans: list[int]) -> None:
        self._path = path
        self._token = token
        self._spans = spans  # start and end of each line in the file
        self._raw = path.read_bytes()
        if not self._raw.startswith(token.encode() + b"\n"):
            raise ValueError(f"{path} is not the file of this record")
        self._parsed: dict[int, dict[str, Any]] = {}
        self._replaced: dict[int, bytes] = {}

    @staticmethod
    def write(path: Path, lines: list[bytes]) -> tuple[str, list[int]]:
        """A new file of `lines`; returns its token and spans."""
        token = os.urandom(16).hex()
        spans = []
        offset = len(token) + 1
        for line in lines:
            spans += [offset, offset + len(line)]
            offset += len(line) + 1
        # Line by line: joined first, the file would be in memory twice more at the end of a
        # build that holds everything else (12 MB at 10,000 actions).
        with atomic_file(path) as f:
            f.write(token.encode() + b"\n")
            for line in lines:
                f.write(line)
                f.write(b"\n")
        return token, spans

    def __len__(self) -> int:
        return len(self._spans) // 2

    def __getitem__(self, i: int) -> dict[str, Any]:
        data = self._parsed.get(i)
        if data is None:
            data = self._parsed[i] = json.loads(self._raw[self._spans[2 * i]:self._spans[2 * i + 1]])
        return data

    def raw(self, i: int) -> bytes:
        """The text of line `i`, unparsed (build/recorded.py reads only its start)."""
        return self._line(i)

    @property
    def edited(self) -> bool:
        """Whether a line was replaced (and `save` writes)."""
        return bool(self._replaced)

    def containing(self, needle: bytes) -> list[int]:
        """The lines whose text contains `needle` (found in the file's bytes: nothing parsed)."""
        starts = sorted(range(len(self)), key=lambda i: self._spans[2 * i])
        offsets = [self._spans[2 * i] for i in starts]
        found: set[int] = set()
        at = self._raw.find(needle)
        while at >= 0:
            k = bisect.bisect_right(offsets, at) - 1
            # A line replaced since the file was written is in it still, outside every span.
            if k >= 0 and at + len(needle) <= self._spans[2 * starts[k] + 1]:
                found.add(starts[k])
            at = self._raw.find(needle, at + 1)
        found -= set(self._replaced)
        found |= {i for i, line in self._replaced.items() if needle in line}
        return sorted(found)

    def replace(self, i: int, data: dict[str, Any]) -> None:
        self._parsed[i] = data
        self._replaced[i] = json.dumps(data).encode()

    def save(self) -> tuple[str, list[int]]:
        """Write the replaced lines; returns the token and spans the index must name now. The
        file is written anew instead when most of it would be replaced lines."""
        if not self._replaced:
            return self._token, self._spans
        live = sum(self._spans[2 * i + 1] - self._spans[2 * i] + 1 for i in range(len(self)))
        added = sum(len(x) + 1 for x in self._replaced.values())
        if len(self._raw) + added > 2 * live + (1 << 16):
            return self.write(self._path, [self._line(i) for i in range(len(self))])
        spans = list(self._spans)
        offset = len(self._raw)
        with open(self._path, "ab") as f:
            for i, line in sorted(self._replaced.items()):
                f.write(line + b"\n")
                spans[2 * i:2 * i + 2] = [offset, offset + len(line)]
                offset += len(line) + 1
            f.flush()
            os.fsync(f.fileno())  # before the index that names these lines is written
        return self._token, spans

    def _line(self, i: int) -> bytes:
        return self._replaced.get(i) or self._raw[self._spans[2 * i]:self._spans[2 * i + 1]]


def actions_path(record: Path) -> Path:
    return record.with_suffix(".actions")


def record_lines(
    session: Session, report: BuildReport, stdout: list[list[str]], request: BuildRequest,
    argv: list[str],
) -> list[bytes]:
    """The incremental build's lines of a successful full build's record (`stdout`: its
    `report_lines`; `request` and `argv`: what it was asked, and its command line), after
    writing its action lines."""
    if request.secrets is not None or request.remote is not None:
        # No record is kept (build/noop.py); with a remote cache, a change runs the full build,
        # which asks the remote cache (and a record would hold its auth headers).
        return []
    records = report.outcome.records
    producer = {o: i for i, r in enumerate(records) for o in r.action.all_outputs}
    readers: list[list[int]] = [[] for _ in records]
    sources: dict[str, list[Any]] = {}  # host path -> [exec path, readers]
    goals = set(report.goals)
    lines = []
    for i, r in enumerate(records):
        inputs = r.components["inputs"]
        deps = sorted({producer[p] for p in inputs if p in producer})
        for d in deps:
            readers[d].append(i)
        for p in inputs:
            if p not in producer:
                sources.setdefault(report.sources[p], [p, []])[1].append(i)
        # The key and the result first: the next full build reads only them (build/recorded.py).
        lines.append(json.dumps({
            "key": str(r.key), "result": r.result.to_json(), "action": action_to_json(r.action),
            "inputs": inputs, "host_tools": r.components["host_tools"], "deps": deps,
            "goals": [o for o in r.action.all_outputs if o in goals],
        }).encode())
    # A file loading read, a host tool or an engine module may be a source as well: a change
    # of it is never a change of contents only.
    fixed = (report.fixed | set(pyimg_code())) & set(sources)
    token, spans = ActionLines.write(
        actions_path(record_path(session.output_base, command_key(argv))), lines)
    index = {
        "version": VERSION,
        "base": record_base(session.output_base),
        "cache_root": str(session.cache_root),
        "format": report.format_version,
        "options": _options_to_json(request),
        "stdout": stdout,
        "sources": sources,
        "fixed": sorted(fixed),
        "readers": readers,
        "actions": token,
        "spans": spans,
        # The first output of each line's action: how the next full build finds an action's
        # line (build/recorded.py).
        "firsts": [r.action.all_outputs[0] for r in records],
        # The .bzl and MODULE files loading read, each with the stat it was hashed at: one saved
        # again as it was changes nothing (change pruning, `_pruned_loading`).
        "loading_digests": _loading_digests(p for p in report.fixed if _rehashed(p)),
    }
    return [json.dumps(index).encode()]


def _rehashed(path: str) -> bool:
    """Whether a change of the loading file `path` is pruned when its contents are the same."""
    return path.endswith(".bzl") or os.path.basename(path) in (MODULE_FILE, _LOCK_FILE)


def _loading_digests(paths: Iterable[str]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for path in sorted(paths):
        stat = file_stat(path)
        try:
            digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        except OSError:
            continue
        if stat is not None and file_stat(path) == stat:
            out[path] = [stat, digest]
    return out


def _options_to_json(request: BuildRequest) -> dict[str, Any]:
    execution, display, registry = request.execution, request.display, request.registry
    return {"jobs": execution.jobs, "keep_going": execution.keep_going,
            "verbose": display.verbose, "color": display.color,
            "sandbox": "strict" if execution.sandbox_strict else "auto",
            "offline": registry.offline, "registry_config": registry.config,
            "insecure_registry": list(registry.insecure)}


def _recorded_request(options: dict[str, Any], schedule_seed: str | None) -> BuildRequest:
    """The request of the recorded build (its patterns aside: the record holds the graph)."""
    return BuildRequest(
        patterns=(),
        display=DisplayOptions(verbose=options["verbose"], color=options["color"]),
        execution=ExecutionOptions(jobs=options["jobs"], keep_going=options["keep_going"],
                                   sandbox_strict=options["sandbox"] == "strict",
                                   schedule_seed=schedule_seed),
        registry=RegistryOptions(options["registry_config"], tuple(options["insecure_registry"]),
                                 options["offline"]),
    )


def rebuild(check: Check, workspace: Path, schedule_seed: str | None = None,
            prune: bool = True) -> int | None:
    """Build incrementally from `check`, under its lock, with the recorded build's options;
    None when only a full build can. `schedule_seed`: see `ExecutionOptions`. Without `prune`
    (PYIMG_ANALYSIS_REUSE=0) a changed BUILD or .bzl file always takes the full build."""
    with check.held("build"):
        start = time.monotonic()
        try:
            index = json.loads(check.raw[check.tail:])
            if index.get("version") != VERSION or index["cache_root"] != str(check.cache_root):
                return None
            lines = ActionLines(actions_path(check.path), index["actions"], index["spans"])
            if len(lines) != check.record["actions"]:
                return None
            sources = {h: s for h, s in check.changed.items() if h in index["sources"]}
            loading = {h: s for h, s in check.changed.items() if h not in sources}
            plan = _plan(check, workspace, index, lines, sources) if sources else None
            if sources and plan is None:
                return None
            if loading and (not prune or not _pruned_loading(check, workspace, index, lines,
                                                              loading)):
                return None
            if plan is None:
                return _replay_pruned(check, index, lines, start)
            plan.pruned = bool(loading)
            request = _recorded_request(plan.index["options"], schedule_seed)
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            return None  # a record this version of pyimg cannot read, or a lost file
        return _run(plan, request, start)


# What the summary adds when the changed BUILD and .bzl files changed no target.
PRUNED_NOTE = " (BUILD or .bzl files changed, no target did: loading pruned)"


def _pruned_loading(check: Check, workspace: Path, index: dict[str, Any], lines: ActionLines,
                    loading: dict[str, list[int]]) -> bool:
    """Whether the changed files of `loading` (none a source) change no target, as loading
    would see them (docs/architecture.md, "Change pruning"): each a .bzl file saved again as it
    was, or a workspace BUILD file whose package, evaluated again, has the targets of the
    recorded build (only their lines may have moved). The packages' records are saved, and the
    origins of the actions of targets that moved are updated in `lines`."""
    from pyimg.loading.inputs import BUILD_FILE_NAMES

    recorded: dict[str, list[Any]] = index.get("loading_digests", {})
    builds: dict[str, tuple[list[int], list[int]]] = {}
    for host, now in loading.items():
        seen = check.record["files"][host]
        if _rehashed(host):
            entry = recorded.get(host)
            if entry is None or entry[0] != seen:
                return False
            if hashlib.sha256(Path(host).read_bytes()).hexdigest() != entry[1]:
                # A .bzl file's rules may do anything else now: analysis must run again.
                return False
            if file_stat(host) != now:
                return False
            entry[0] = now
        elif os.path.basename(host) in BUILD_FILE_NAMES:
            builds[host] = (seen, now)
        else:
            return False  # a host tool, pyimg itself, a file a MODULE declaration reads
    if not builds:
        return True
    from pyimg.loading.package_store import PackageStore, reload_packages

    digests = FileDigestCache(check.output_base / "file_digests.json", lazy=True)
    store = PackageStore(check.output_base / "packages", digests,
                         [workspace / "MODULE.pyimg", workspace / "pyimg.lock"])
    reloaded = reload_packages(workspace, store, builds)
    if reloaded is None:
        return False
    for package in reloaded:
        origins = package.origins
        if all(old == new for old, new in origins.values()):
            continue
        # Failures are reported at the origin of the action, its target's BUILD line.
        needle = b'"origin": ' + json.dumps(package.build_display + ":")[:-1].encode()
        for i in lines.containing(needle):
            data = lines[i]
            action = data["action"]
            old, new = origins.get(action["owner"].split(" [")[0], (None, None))
            if action["origin"] != old:
                return False  # not the origin of a target of the package: unexpected
            if new != old:
                lines.replace(i, {**data, "action": {**action, "origin": new}})
    return True


def _replay_pruned(check: Check, index: dict[str, Any], lines: ActionLines,
                   start: float) -> int:
    """Only BUILD and .bzl files changed, and no target: print the recorded build's report and
    update the records by the files' new stats (and the actions' new origins)."""
    for host, stat in check.changed.items():
        check.set("files", host, stat)
    for directory, stat in check.dirs.items():
        check.set("dirs", directory, stat)
    if lines.edited or any(_rehashed(host) for host in check.changed):
        index["actions"], index["spans"] = lines.save()
        check.save([json.dumps(index).encode()])
    else:  # the index as read (megabytes at 10,000 actions: not serialized again)
        check.save([check.raw[check.tail:]])
    mark_all_cached(check.output_base)  # `explain` says what a no-op build would
    sys.stdout.write(check.record["stdout"])
    sys.stdout.flush()
    actions = check.record["actions"]
    print(summary(0, actions, time.monotonic() - start) + PRUNED_NOTE, file=sys.stderr)
    return 0


class _Plan:
    """What an incremental build found it has to do (see `_plan`)."""

    def __init__(self, check: Check, workspace: Path, index: dict[str, Any], lines: ActionLines,
                 changed: dict[str, str], candidates: list[int], recorded: dict[int, Any],
                 digests: FileDigestCache) -> None:
        self.check = check
        self.session = Session(workspace, check.cache_root, check.output_base)
        self.index = index
        self.lines = lines
        self.changed = changed  # exec path -> new digest, of the files whose contents changed
        self.candidates = candidates  # the actions that may have to run again
        self.recorded = recorded  # RecordedAction of the candidates and of their producers
        self.digests = digests
        self.pruned = False  # BUILD or .bzl files changed too, but no target


def _plan(check: Check, workspace: Path, index: dict[str, Any], lines: ActionLines,
          changed_files: dict[str, list[int]]) -> _Plan | None:
    """Which actions may have to run again for `changed_files` (host path -> stat now), or None
    if not only sources' contents changed."""
    sources: dict[str, list[Any]] = index["sources"]
    fixed = set(index["fixed"])
    # A file of an external repository is no source the user edits: when its size changed, its
    # store blob was dropped as corrupt (and emptied), and the repository must be made again,
    # which only the full build does. (Its ctime alone moves whenever the blob is linked.)
    external = f"{check.output_base / EXTERNAL_DIR}{os.sep}"
    if any(
            sources.get(host) is None or host in fixed
            or (host.startswith(external) and stat[0] != check.record["files"][host][0])
            for host, stat in changed_files.items()):
        return None
    # A changed source may be a symlink re-pointed outside the workspace: the full build
    # reports it where the BUILD file names it.
    confinement = Confinement(workspace)
    if any(confinement.check(sources[host][0]) is not None for host in changed_files
           if not sources[host][0].startswith(EXTERNAL_DIR + "/")):
        return None
    digests = FileDigestCache(check.output_base / "file_digests.json", lazy=True)
    changed: dict[str, str] = {}
    for host, stat in changed_files.items():
        digest, _, executable = digests.rehash(Path(host))
        if file_stat(host) != stat:
            return None  # it changed again since the check: let the full build sort it out
        p, readers = sources[host]
        if (new := f"{digest}+x" if executable else str(digest)) != lines[readers[0]]["inputs"][p]:
            changed[p] = new  # not a file saved again as it was
    candidates = downstream((i for host in changed_files for i in sources[host][1]
                             if sources[host][0] in changed), index["readers"].__getitem__)
    outside = {d for i in candidates for d in lines[i]["deps"]} - set(candidates)
    recorded = {i: _recorded(lines[i]) for i in [*candidates, *outside]}
    return _Plan(check, workspace, index, lines, changed, candidates, recorded, digests)


def _run(plan: _Plan, request: BuildRequest, start: float) -> int | None:
    """Run the plan's candidates and, when all succeed, print the report and update the records."""
    session, index, lines, recorded, digests = (
        plan.session, plan.index, plan.lines, plan.recorded, plan.digests)
    cas, cache = session.stores(digests)
    # The record vouches for these outputs; the store must still hold them (another cache
    # root, a cleaned cache): otherwise the full build creates them again.
    if not all(cas.verify(f.digest, f.executable)
               for r in recorded.values() for f in r.result.all_files()):
        return None
    execution, display = request.execution, request.display
    jobs = execution.workers()
    host_of = {s[0]: host for host, s in index["sources"].items()}
    lazy = PulledBlobs(session.output_base, lambda: _repositories(session, request.registry), cas)
    ctx = new_context(session, execution.parallelism(), execution.sandbox_strict,
                      lambda p: Path(host_of[p]), index["format"], lazy_blobs=lazy)
    candidates = [recorded[i] for i in plan.candidates]
    candidate_set = set(plan.candidates)
    outside = [r for i, r in recorded.items() if i not in candidate_set]
    read = {p: d for r in candidates for p, d in r.inputs.items() if p in host_of}
    for p, digest in read.items():
        if p not in plan.changed:  # what the record knows spares reading the cache's file
            host = host_of[p]
            digests.remember(host, tuple(plan.check.record["files"][host]),
                             Digest.parse(digest.removesuffix("+x")))
    executor = IncrementalExecutor(
        ctx, cas, cache, digests, candidates, outside, {**read, **plan.changed})
    total = len(lines)
    progress = Progress(sys.stderr, total=total, verbose=display.verbose, color=display.color,
                        hits=total - len(candidates))
    scheduler = Scheduler(executor, jobs, execution.keep_going, progress.started,
                          progress.finished, progress.ended, execution.schedule_seed)
    graph = ActionGraph(r.action for r in candidates)
    try:
        outcome = scheduler.run(graph, graph.producer)
    finally:
        progress.close()
        digests.append()
        remove_tree(ctx.scratch_root)
    goals = [g for i in plan.candidates for g in lines[i]["goals"]]
    rekeyed = [r for r in outcome.records if r.action.all_outputs[0] not in executor.pruned]
    if outcome.failures:
        # As a failed full build: the record of what completed (each action not re-keyed as a
        # hit, as recorded), what was built materialized, the no-op record left as it was.
        rerun = {r.action.all_outputs[0] for r in candidates} - executor.pruned
        save_build_record(session.output_base, {
            **_recorded_entries(lines, rerun, index["format"]), **entries(rekeyed)})
        try:
            materialize(session, cas, executor, goals, lazy)
        finally:
            lazy.close()
        raise outcome.error()
    try:
        materialize(session, cas, executor, goals, lazy)
    finally:
        lazy.close()
    changes = entries(rekeyed)
    if index["base"] is None or not update_build_record(session.output_base, index["base"],
                                                       changes):
        # The explain record is another build's by now: write this one's in full.
        save_build_record(session.output_base, {
            **_recorded_entries(lines, set(), index["format"]), **changes})
        index["base"] = record_base(session.output_base)
    position = {recorded[i].action.all_outputs[0]: i for i in plan.candidates}
    for r in rekeyed:
        i = position[r.action.all_outputs[0]]
        lines.replace(i, {**lines[i], "key": str(r.key), "inputs": r.components["inputs"],
                          "result": r.result.to_json()})
    stdout = render_report(session.workspace, index["stdout"])
    sys.stdout.write(stdout)
    sys.stdout.flush()
    if _update_stats(plan.check, session.workspace, goals, stdout):
        index["actions"], index["spans"] = lines.save()
        plan.check.save([json.dumps(index).encode()])
    note = PRUNED_NOTE if plan.pruned else ""
    print(summary(outcome.executed, total - outcome.executed, time.monotonic() - start) + note,
          file=sys.stderr)
    return 0


def _repositories(session: Session, registry: RegistryOptions) -> Repositories:
    """The workspace's external repositories, with the recorded build's flags: opened only when
    a pulled base's layer must be downloaded (that evaluates MODULE.pyimg)."""
    from pyimg.external.repositories import Repositories

    return Repositories(session, registry=registry)


def _recorded(data: dict[str, Any]) -> RecordedAction:
    return RecordedAction(
        action_from_json(data["action"]),
        Digest.parse(data["key"]),
        data["inputs"],
        data["host_tools"],
        ActionResult.from_json(data["result"]),
    )


def _recorded_entries(lines: ActionLines, skip: set[str], format_version: str) -> dict[str, Any]:
    """The explain record of the recorded actions but those whose first output is in `skip`,
    each as a cache hit."""
    records = []
    for i in range(len(lines)):
        data = lines[i]
        action = action_from_json(data["action"])
        if action.all_outputs[0] not in skip:
            components = key_components(
                action, data["inputs"], format_version, {}, data["host_tools"])
            records.append(ExecutionRecord(action, Digest.parse(data["key"]), components, True,
                                           ActionResult({}, {})))
    return entries(records)


def _under(paths: list[str], path: str) -> list[str]:
    """`path` and the paths under it, of the sorted `paths`."""
    found = [path] if (i := bisect.bisect_left(paths, path)) < len(paths) and paths[i] == path else []
    prefix = path + "/"
    i = bisect.bisect_left(paths, prefix)
    while i < len(paths) and paths[i].startswith(prefix):
        found.append(paths[i])
        i += 1
    return found


def _update_stats(check: Check, workspace: Path, goals: list[str], stdout: str) -> bool:
    """The stat record after this build: the changed files as the check found them (the build
    hashed exactly those), the goals it placed again. False when an output is missing."""
    for host, stat in check.changed.items():
        check.set("files", host, stat)
    for directory, stat in check.dirs.items():  # a file saved by a rename
        check.set("dirs", directory, stat)
    outputs = check.record["outputs"]
    recorded = sorted(outputs)  # a goal's recorded files by bisection: thousands of goals
    for g in goals:
        path = str(workspace / g)
        now = output_stats([path])
        for old in [o for o in _under(recorded, path) if o in outputs and o not in now]:
            check.drop("outputs", old)
        for o, output_stat in now.items():
            if outputs.get(o) != output_stat:
                check.set("outputs", o, output_stat)
    if stdout != check.record["stdout"]:
        check.set(None, "stdout", stdout)
    return all(v is not None for v in outputs.values())
