"""Runs one action: computes its key, serves it from the action cache or executes it, stores outputs.

Execution happens in a private scratch directory; outputs enter the content store only after the
action succeeded and every declared output exists, then the action-cache entry is written. So a
failure, a crash or Ctrl-C at any point leaves the caches as they were or complete, never partial.
Within `batched_durable_writes` (a scheduler's run) the entries wait for one sync per batch
(`_DurableBatch`): a crash loses the entries of the batch not yet committed, never more.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shlex
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyimg.core.action import (
    KIND_BUILTIN,
    KIND_RUN,
    KIND_WRITE,
    Action,
    action_key,
    key_components,
)
from pyimg.core.action_cache import ActionCache, ActionResult, FileOutput
from pyimg.core.cas import ContentStore, fsync_path, hash_file, no_space_reported, remove_tree
from pyimg.core.confinement import Confinement
from pyimg.core.digest import Digest, canonical_json
from pyimg.core.file_digests import FileDigestCache
from pyimg.core.tool_identity import (
    ManifestStore,
    ToolIdentity,
    ToolSpec,
    tool_identity,
    tool_specs,
)
from pyimg.core.workspace import EXTERNAL_DIR
from pyimg.errors import (
    ActionFailedError,
    InterruptedBuildError,
    PyimgError,
    SourceLinkError,
    UserInputError,
)
from pyimg.labels import is_utf8_name

if TYPE_CHECKING:
    from pyimg.core.builtin import BlobSource
    from pyimg.core.remote_cache import RemoteCache, RemoteRequest
    from pyimg.core.secrets import SecretProvider

__all__ = [
    "ActionExecutor", "ExecutionRecord", "tree_digest", "verify_trees"]

OUTPUT_TAIL_LINES = 30
# A cache dir name is one path component under <cache_root>/cache_dirs; "." starts the lock files.
_CACHE_DIR_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}\Z")
_LOCK_POLL_SECONDS = 0.05
HOST_TOOLS_DIR = "_pyimg_host_tools"  # relative to the execroot
# A command's inputs up to this size are private copies; larger ones are hard links to the store
# made read-only by a bind mount each. A copy of 1 MiB costs about what one more mount does, and
# bwrap's mounts cost more with each one (it re-reads the mount table): past _MAX_READ_ONLY_BINDS
# per action, larger inputs are copied too (docs/sandbox-secrets-caches.md, "Inputs").
COPY_INPUTS_UP_TO = 1 << 20
_MAX_READ_ONLY_BINDS = 64
# See ActionExecutor._sanitized_etc.
_COMMANDS_BEFORE_ETC_COPY = 50
# A batch of action-cache entries is committed (one sync of the store's filesystem, then the
# entries) once it holds _BATCH_ENTRIES, or _BATCH_SECONDS after the last commit: an fsync per
# blob and per entry cost about 0.8 ms each here, three per genrule (docs/benchmarks.md).
_BATCH_ENTRIES = 64
_BATCH_SECONDS = 0.5
# A batch naming at most this many files fsyncs each of them (and their directories) instead of
# syncing the whole filesystem: syncfs(2) also waits for every other program's dirty data, and a
# one-action rebuild right after 1.5 GB were written waited 0.5 s for it (docs/benchmarks.md).
_FSYNC_FILES_UP_TO = 16


def tree_digest(tree: Mapping[str, FileOutput]) -> str:
    """The digest that stands for a whole output directory in the keys of its consumers."""
    data = {p: [str(f.digest), f.executable] for p, f in sorted(tree.items())}
    return "sha256:" + hashlib.sha256(canonical_json(data)).hexdigest()


def verify_trees(trees: Path, known: Mapping[tuple[int, int], Digest]) -> list[str]:
    """Check each `trees/<xx>/<digest>` (an output directory linked out of the store once for
    the actions that read it, then reused as it is) against its name, and remove each that does
    not match: one linked to a blob the store dropped is one. `known` gives the digest of files
    by (st_dev, st_ino), the blobs the store just re-hashed; any other file is read. Returns the
    removed trees, relative to `trees`."""
    removed = []
    for fan in sorted(trees.glob("[0-9a-f][0-9a-f]")):
        for tree in sorted(fan.iterdir()):
            if tree.name.startswith("."):
                continue  # a tree being made
            files: dict[str, FileOutput] = {}
            for dirpath, _, names in os.walk(tree):
                for n in names:
                    path = os.path.join(dirpath, n)
                    st = os.lstat(path)
                    digest = known.get((st.st_dev, st.st_ino))
                    if digest is None:
                        digest = Digest("sha256", hash_file(path))
                    rel = os.path.relpath(path, tree).replace(os.sep, "/")
                    files[rel] = FileOutput(digest, st.st_size, bool(st.st_mode & 0o100))
            if tree_digest(files) != f"sha256:{tree.name}":
                remove_tree(tree)
                removed.append(tree.relative_to(trees).as_posix())
    return removed


@dataclass
class ExecutionRecord:
    """What happened to one action in this build (for the summary and `pyimg explain`)."""

    action: Action
    key: Digest
    components: dict[str, Any]
    cached: bool
    result: ActionResult
    seconds: float = 0.0
    # What served a cached result: "local" (the disk cache) or "remote" (core/remote_cache.py).
    served: str = ""


@dataclass
class BuildContext:
    """What an executor needs from the build: where things are and what to run builtins with."""

    workspace: Path
    cache_root: Path
    scratch_root: Path
    format_version: str
    builtins: Mapping[str, Callable[[Any], None]]
    jobs: int = 1
    # Where a source exec path lives on disk (external repositories live outside the workspace).
    source_root: Callable[[str], Path] | None = None
    # The build's secrets: keyed hashes for keys, private files for commands, leak checks.
    secrets: SecretProvider | None = None
    # The layers of pulled base images, fetched only when a builtin needs their bytes.
    lazy_blobs: BlobSource | None = None
    sandbox_strict: bool = False
    # The second-level action cache, asked after a local miss (core/remote_cache.py).
    remote: RemoteCache | None = None
    warn: Callable[[str], None] = print
    cancel: threading.Event = field(default_factory=threading.Event)


class ActionExecutor:
    """Thread-safe: the scheduler calls `execute` from several worker threads at once."""

    def __init__(self, ctx: BuildContext, cas: ContentStore, cache: ActionCache,
                 digests: FileDigestCache) -> None:
        self.ctx = ctx
        self.cas = cas
        self.cache = cache
        self.digests = digests
        self._results: dict[str, tuple[str, ActionResult]] = {}  # exec path -> (kind, result)
        self._lock = threading.Lock()
        self._host_tool_identities: dict[ToolSpec, ToolIdentity] = {}
        self._warned_isolation = False
        self._confinement = Confinement(ctx.workspace)
        self._commands_run = 0
        self._batch: _DurableBatch | None = None
        self._slots = _ScratchSlots(ctx.scratch_root)
        self._builtin_slots = threading.BoundedSemaphore(max(1, ctx.jobs))

    # -- durable writes ---------------------------------------------------------------------

    @contextmanager
    def batched_durable_writes(self) -> Iterator[None]:
        """Within the block, outputs enter the store without an fsync each and action-cache
        entries are committed in batches after one sync (`_DurableBatch`). When the block ends
        normally or with an error, the rest is committed and made durable; on Ctrl-C it is
        dropped (those actions run again next time) so that the build stops at once."""
        batch = _DurableBatch(self.cas, self.cache)
        commit = True
        with self.cas.deferred_syncs():
            self._batch = batch
            try:
                yield
            except (InterruptedBuildError, KeyboardInterrupt):
                commit = False
                raise
            finally:
                batch.close(commit)

    def _commit_entry(self, key: Digest, result: ActionResult) -> None:
        """Write the action-cache entry of `key`: in the open batch, else now, fsynced."""
        if self._batch is not None:
            self._batch.add(key, result)
        else:
            self.cache.put(key, result)

    # -- inputs -----------------------------------------------------------------------------

    def record_result(self, action: Action, result: ActionResult) -> None:
        with self._lock:
            for p in action.outputs:
                self._results[p] = ("file", result)
            for p in action.output_dirs:
                self._results[p] = ("dir", result)

    def produced(self, path: str) -> tuple[str, ActionResult] | None:
        with self._lock:
            return self._results.get(path)

    def input_digest(self, path: str) -> str:
        """What an input contributes to a key: its digest, with `+x` when executable (the bit
        shapes outputs, e.g. layer modes), or the digest of a whole output directory."""
        produced = self.produced(path)
        if produced is None:
            if not path.startswith(EXTERNAL_DIR + "/"):
                # Loading checked this too; a link re-pointed since must not be read either.
                problem = self._confinement.check(path)
                if problem is not None:
                    raise SourceLinkError(f"source file '{path}': {problem}")
            src = self.source_path(path)
            try:
                digest, _, executable = self.digests.digest_and_mode(src)
            except FileNotFoundError:
                raise UserInputError(f"missing input file '{path}'") from None
            except IsADirectoryError:
                raise UserInputError(f"input '{path}' is a directory, not a file") from None
            return f"{digest}+x" if executable else str(digest)
        kind, result = produced
        if kind == "file":
            f = result.files[path]
            return f"{f.digest}+x" if f.executable else str(f.digest)
        return tree_digest(result.dirs[path])

    def source_path(self, path: str) -> Path:
        if self.ctx.source_root is not None:
            return self.ctx.source_root(path)
        return self.ctx.workspace / path

    def host_tool_identity(self, spec: ToolSpec) -> ToolIdentity:
        """The identity of a host tool (core/tool_identity.py), computed once per build; its
        manifest is stored for `pyimg explain`."""
        with self._lock:
            hit = self._host_tool_identities.get(spec)
        if hit is None:
            try:
                hit = tool_identity(spec, self.digests.digest_and_mode)
            except FileNotFoundError as e:
                if e.filename in (None, spec.path, os.path.realpath(spec.path)):
                    raise UserInputError(f"host tool '{spec.path}' does not exist on this "
                                         "machine") from None
                raise UserInputError(f"host tool '{spec.path}': '{e.filename}' (its data) does "
                                     "not exist on this machine") from None
            ManifestStore(self.ctx.cache_root).put(hit)
            with self._lock:
                self._host_tool_identities[spec] = hit
        return hit

    def host_tool_paths(self) -> set[str]:
        """Every host path the identities of this build's host tools were computed from."""
        with self._lock:
            return {p for identity in self._host_tool_identities.values() for p in identity.paths}

    def components(self, action: Action) -> dict[str, Any]:
        try:
            digests = {p: self.input_digest(p) for p in set(action.inputs) | set(action.tools)}
        except SourceLinkError as e:
            raise SourceLinkError(f"{action.describe()}: {e.message}",
                                  origin=e.origin or action.origin or None) from None
        hmacs = {}
        if action.secrets:
            if self.ctx.secrets is None:
                raise UserInputError(f"{action.describe()} needs secrets but none were given")
            hmacs = {s: self.ctx.secrets.keyed_hash(s) for s in action.secrets}
        try:
            host = {spec.path: self.host_tool_identity(spec).digest for spec in tool_specs(action)}
        except UserInputError as e:  # gone since the build checked (builds check before running)
            raise UserInputError(f"{action.describe()}: {e.message}", origin=action.origin or None) from None
        return key_components(action, digests, self.ctx.format_version, hmacs, host)

    # -- execution --------------------------------------------------------------------------

    def lookup(self, action: Action) -> tuple[Digest, dict[str, Any], ExecutionRecord | None]:
        """The action's key and components, and its record when the action cache has it.

        Cheap enough for the scheduler's own thread: a cache hit never waits for a worker.
        """
        return self.serve(action, self.components(action))

    def serve(
        self, action: Action, components: dict[str, Any]
    ) -> tuple[Digest, dict[str, Any], ExecutionRecord | None]:
        """`lookup` with the key components already computed."""
        key = action_key(components)
        cached = self.cache.get(key)
        if cached is None:
            return key, components, None
        self.record_result(action, cached)
        return key, components, ExecutionRecord(action, key, components, True, cached,
                                                served="local")

    def looks_up_remotely(self, action: Action) -> bool:
        """Whether a local miss of `action` is asked of the remote cache (`remote_lookup`)."""
        return self.ctx.remote is not None and self.ctx.remote.wants(action)

    def remote_lookup(
        self, action: Action, key: Digest, components: dict[str, Any]
    ) -> tuple[ExecutionRecord | None, RemoteRequest]:
        """Ask the remote cache for an action the local cache missed: its record on a hit (the
        outputs in the store, level one filled), and the request, for `execute` on a miss.
        A network round trip: the scheduler calls it on threads of its own, many at a time."""
        assert self.ctx.remote is not None
        start = time.monotonic()
        request = self._remote_request(action, key, components)
        hit = self.ctx.remote.lookup(request)
        if hit is None:
            return None, request
        self._commit_entry(key, hit)  # its blobs are in the store: level one has it now
        self.record_result(action, hit)
        return ExecutionRecord(action, key, components, True, hit, time.monotonic() - start,
                               served="remote"), request

    def execute(
        self, action: Action, looked_up: tuple[Digest, dict[str, Any]] | None = None,
        remote_missed: RemoteRequest | None = None,
    ) -> ExecutionRecord:
        """Run `action` unless a cache has it. `remote_missed` is the request of a remote
        lookup that already missed (`remote_lookup`): it is not asked again."""
        start = time.monotonic()
        if looked_up is None:
            key, components, record = self.lookup(action)
            if record is not None:
                return record
        else:
            key, components = looked_up
        remote = self.ctx.remote
        request = remote_missed
        if remote is not None and request is None and remote.wants(action):
            record, request = self.remote_lookup(action, key, components)
            if record is not None:
                return record
        if remote is not None and request is not None:
            if remote.executes(action):
                ran = remote.execute(request)
                if ran is not None:
                    result, was_cached = ran
                    self._commit_entry(key, result)
                    self.record_result(action, result)
                    return ExecutionRecord(
                        action, key, components, was_cached, result, time.monotonic() - start,
                        served="remote" if was_cached else "remote-exec")
        scratch = self._slots.take()
        try:
            result = self._run(action, scratch, self._slots.spares(scratch))
            self._commit_entry(key, result)
        finally:
            self._slots.give_back(scratch)
        self.record_result(action, result)
        if request is not None:
            assert remote is not None
            remote.upload(request, result)
        return ExecutionRecord(action, key, components, False, result, time.monotonic() - start)

    def run_uncached(self, action: Action, scratch: Path) -> ActionResult:
        """Run `action` in `scratch` (made and removed here) and store its outputs, without the
        action cache: what `pyimg worker` does with an action a remote scheduler leased it."""
        try:
            return self._run_in(action, scratch)
        finally:
            remove_tree(scratch)

    def _run_in(self, action: Action, scratch: Path) -> ActionResult:
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        return self._run(action, scratch)

    def _remote_request(self, action: Action, key: Digest,
                        components: dict[str, Any]) -> RemoteRequest:
        """Every input file of `action` with its digest, size and mode, for the remote cache."""
        from pyimg.core.remote_cache import RemoteRequest

        files: dict[str, FileOutput] = {}
        paths: dict[str, Path] = {}
        dirs: list[str] = []
        for path in sorted(set(action.inputs) | set(action.tools)):
            produced = self.produced(path)
            if produced is None:
                src = self.source_path(path)
                digest, size, executable = self.digests.digest_and_mode(src)
                files[path] = FileOutput(digest, size, executable)
                paths[path] = src
            elif produced[0] == "file":
                f = produced[1].files[path]
                files[path] = f
                paths[path] = self.cas.path(f.digest, f.executable)
            else:
                dirs.append(path)
                for rel, f in produced[1].dirs[path].items():
                    files[f"{path}/{rel}"] = f
                    paths[f"{path}/{rel}"] = self.cas.path(f.digest, f.executable)
        return RemoteRequest(action, key, components, files, tuple(dirs), paths)

    def _run(self, action: Action, scratch: Path, spares: _Spares | None = None) -> ActionResult:
        if action.kind == KIND_WRITE:
            content = action.params["content"].encode()
            executable = bool(action.params.get("executable"))
            digest = self.cas.put_bytes(content, executable)
            return ActionResult({action.outputs[0]: FileOutput(digest, len(content), executable)}, {})
        if action.kind == KIND_BUILTIN:
            # Built-ins compute in this process with up to ctx.jobs threads each: no more of
            # them at once than that, whatever the action slots (ExecutionOptions.workers).
            with self._builtin_slots:
                return self._run_builtin(action, scratch)
        if action.kind == KIND_RUN:
            return self._run_command(action, scratch, spares)
        raise PyimgError(f"unknown action kind {action.kind!r}")

    def _staged_input(self, path: str, links: dict[tuple[int, int], Digest]) -> Path:
        """A readable host path for an input; records (dev, ino) of store blobs it hands out."""
        produced = self.produced(path)
        if produced is None:
            return self.source_path(path)
        kind, result = produced
        if kind == "file":
            f = result.files[path]
            blob = self.cas.path(f.digest, f.executable)
            st = blob.stat()
            links[(st.st_dev, st.st_ino)] = f.digest
            return blob
        return self._tree_dir(result.dirs[path], links)

    def _tree_dir(self, tree: Mapping[str, FileOutput], links: dict[tuple[int, int], Digest]) -> Path:
        """Materialize an output directory once per content under the cache root (read-only use)."""
        digest = tree_digest(tree).split(":")[1]
        final = self.ctx.cache_root / "trees" / digest[:2] / digest
        if not final.exists():
            tmp = final.parent / f".tmp-{os.getpid()}-{threading.get_ident()}-{digest[:12]}"
            remove_tree(tmp)
            for rel, f in sorted(tree.items()):
                self.cas.link_to(f.digest, tmp / rel, f.executable)
            try:
                os.rename(tmp, final)
            except OSError:
                remove_tree(tmp)  # another builder made it first
        for rel, f in tree.items():
            st = (final / rel).stat()
            links[(st.st_dev, st.st_ino)] = f.digest
        return final

    def _run_builtin(self, action: Action, scratch: Path) -> ActionResult:
        # Imported here: a build that runs no built-in action (as most incremental ones) skips it.
        from pyimg.core.builtin import BuiltinCall

        fn = self.ctx.builtins.get(action.builtin)
        if fn is None:
            raise PyimgError(f"{action.origin}: unknown builtin action '{action.builtin}'")
        links: dict[tuple[int, int], Digest] = {}
        inputs = {p: self._staged_input(p, links) for p in action.inputs + action.tools}
        input_digests = {}
        sources = set()
        for p in action.inputs + action.tools:
            produced = self.produced(p)
            if produced is None:
                sources.add(p)
                input_digests[p] = Digest.parse(self.input_digest(p).removesuffix("+x"))
            elif produced[0] == "file":
                input_digests[p] = produced[1].files[p].digest
            else:  # files inside an input directory, by "dir/rel"
                for rel, f in produced[1].dirs[p].items():
                    input_digests[f"{p}/{rel}"] = f.digest
        outputs = {p: scratch / "out" / p for p in action.all_outputs}
        for p in action.outputs:
            outputs[p].parent.mkdir(parents=True, exist_ok=True)
        for p in action.output_dirs:
            outputs[p].parent.mkdir(parents=True, exist_ok=True)
        call = BuiltinCall(
            params=action.params,
            inputs=inputs,
            input_digests=input_digests,
            outputs=outputs,
            output_dirs=frozenset(action.output_dirs),
            jobs=self.ctx.jobs,
            check_cancelled=self._check_cancelled,
            lazy_blobs=self.ctx.lazy_blobs,
            content_store=self.cas,
            sources=frozenset(sources),
            warn=lambda message: self.ctx.warn(
                (f"{action.origin}: " if action.origin else "")
                + f"{action.describe()}: {message}"
            ),
        )
        try:
            fn(call)
        except PyimgError as e:
            if e.origin is None:
                raise type(e)(f"{action.describe()}: {e.message}", origin=action.origin) from None
            raise
        except (OSError, ValueError, KeyError) as e:
            raise ActionFailedError(
                f"{action.describe()} failed: {type(e).__name__}: {e}", origin=action.origin
            ) from e
        for host_path, digest in call.output_digests.items():
            st = os.stat(host_path)
            links[(st.st_dev, st.st_ino)] = digest
        return self._ingest(action, scratch / "out", links)

    def _check_cancelled(self) -> None:
        if self.ctx.cancel.is_set():
            raise InterruptedBuildError("interrupted")

    def _run_command(self, action: Action, scratch: Path, spares: _Spares | None) -> ActionResult:
        from pyimg.core.sandbox import SandboxSpec, probe_isolation, run_sandboxed, sanitized_etc

        execroot = scratch / "execroot"
        execroot.mkdir(exist_ok=True)  # kept empty between the actions of a scratch slot
        links: dict[tuple[int, int], Digest] = {}
        isolation = probe_isolation()
        # Without a sandbox a command could reach the spares (they are outside its execroot).
        staged = _StagedInputs(allow_binds=isolation != "none",
                               spares=spares if isolation != "none" else None)
        for p in action.inputs + action.tools:
            self._stage_into_execroot(p, execroot, links, staged)
        for p in action.outputs:
            staged.make_dir(execroot, os.path.dirname(p))
        for p in action.output_dirs:
            staged.make_dir(execroot, p)
        tool_dirs: list[Path] = []
        # What a host tool is keyed by is what it is shown: its program, data and what "auto"
        # found, at their host paths (those under the system dirs are mounted anyway).
        tool_roots = sorted({Path(p) for spec in tool_specs(action)
                             for p in (spec.path, *self.host_tool_identity(spec).roots())})
        if action.host_tools:
            # Inside the execroot so that PATH holds no host path (it would vary by workspace).
            bin_dir = Path(HOST_TOOLS_DIR)
            tool_links = {os.path.basename(tool): tool for tool in action.host_tools}
            if (staged.spares is None
                    or not staged.spares.take_links(tool_links, execroot / bin_dir)):
                staged.make_dir(execroot, HOST_TOOLS_DIR)
                for name, tool in tool_links.items():
                    os.symlink(tool, execroot / bin_dir / name)
            staged.dirs.add(HOST_TOOLS_DIR)
            tool_dirs.append(bin_dir)
        tool_dirs.extend(sorted({Path(t).parent for t in action.tools}))
        if isolation == "none":
            if not self.ctx.sandbox_strict:
                self.ctx.warn(
                    "actions run without a sandbox here (no user/network namespaces): "
                    "they can see the network and undeclared files"
                )
            if self.ctx.sandbox_strict:
                raise ActionFailedError(
                    f"{action.describe()}: cannot isolate actions on this machine "
                    "(no user/network namespaces) and --sandbox=strict was given",
                    origin=action.origin,
                )
        secret_files: dict[str, Path] = {}
        lock_fds: list[int] = []
        try:
            writable = self._lock_cache_dirs(action, lock_fds)
            secret_files = self._secret_files(action)
            spec = SandboxSpec(
                argv=action.argv,
                execroot=execroot,
                env=dict(action.env),
                tool_dirs=tuple(tool_dirs),
                writable_dirs=writable,
                secret_files=secret_files,
                read_only_files=tuple(staged.read_only),
                read_only_host_paths=tuple(tool_roots),
                etc_dir=None if isolation == "none" else self._sanitized_etc(sanitized_etc),
                scratch_dir=scratch / _SANDBOX_DIR,
            )
            result = run_sandboxed(spec, self.ctx.cancel, isolation=isolation)
        finally:
            # The secret file goes when the action ends, whatever happened (docs/sandbox-secrets-caches.md).
            for path in secret_files.values():
                assert self.ctx.secrets is not None  # it made them
                self.ctx.secrets.release(path)
            for fd in lock_fds:
                os.close(fd)  # closing the last descriptor releases the flock
        if self.ctx.cancel.is_set():
            raise InterruptedBuildError("interrupted")
        output = self._redact(action, result.output)
        # Before anything else: a changed input is the cause to report, and must not be ingested.
        self._check_inputs_unchanged(action, execroot, staged, output)
        if result.exit_code != 0:
            raise ActionFailedError(
                _failure_message(action, f"exited with code {result.exit_code}", output),
                origin=action.origin,
            )
        missing = [p for p in action.outputs if not (execroot / p).is_file()]
        missing += [p for p in action.output_dirs if not (execroot / p).is_dir()]
        if missing:
            raise ActionFailedError(
                _failure_message(
                    action, "did not create declared output(s): " + ", ".join(missing),
                    output,
                ),
                origin=action.origin,
            )
        # Before _ingest: an output holding a secret must never reach the content store.
        self._check_no_secret_in_outputs(action, execroot)
        return self._ingest(action, execroot, links)

    def _sanitized_etc(self, sanitized_etc: Callable[[Path, bool], Path | None]) -> Path | None:
        """The copy of /etc a command is shown instead of /etc plus one mask mount per host
        secret (core/sandbox.py, `sanitized_etc`); it lives in the cache, so builds share it.
        Made only once this build has run _COMMANDS_BEFORE_ETC_COPY commands: making it costs
        0.3 to 1 s, what tens to hundreds of commands save with it, so small builds (a leaf
        edit) use the masks unless a copy exists already."""
        with self._lock:
            self._commands_run += 1
            make = self._commands_run > _COMMANDS_BEFORE_ETC_COPY
        try:
            return sanitized_etc(self.ctx.cache_root / "sandbox", make)
        except OSError:
            return None  # a full disk or an odd /etc: the masks show the same, a little slower

    def _lock_cache_dirs(self, action: Action, fds: list[int]) -> dict[str, Path]:
        """Each cache dir of the action, exclusively locked until the descriptors in `fds` close.

        One writer at a time per cache dir, across threads and processes (flock locks belong to an
        open file description): tools' caches (Go, pip, ccache) are not all safe for concurrent
        writers, and a copy per action would cost a copy of the whole cache. Names are locked in
        sorted order, so two actions that share several cache dirs cannot deadlock.
        """
        base = self.ctx.cache_root / "cache_dirs"
        for var, name in action.cache_dirs:
            if not _CACHE_DIR_NAME_RE.match(name):
                raise UserInputError(
                    f"{action.describe()}: cache dir name {name!r} (for {var}) must be one path "
                    "component of letters, digits, '_', '-' or '.', not starting with '.'",
                    origin=action.origin,
                )
        for name in sorted({name for _, name in action.cache_dirs}):
            (base / name).mkdir(parents=True, exist_ok=True)
            fd = os.open(base / f".{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            fds.append(fd)
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    self._check_cancelled()
                    time.sleep(_LOCK_POLL_SECONDS)
        return {var: base / name for var, name in action.cache_dirs}

    def _secret_files(self, action: Action) -> dict[str, Path]:
        if not action.secrets:
            return {}
        from pyimg.core.secrets import valid_secret_id

        for sid in action.secrets:
            if not valid_secret_id(sid):
                raise UserInputError(
                    f"{action.describe()}: secret id {sid!r} must match [A-Za-z_][A-Za-z0-9_]*",
                    origin=action.origin,
                )
        provider = self.ctx.secrets
        if provider is None:
            raise UserInputError(f"{action.describe()} needs secrets but none were given",
                                 origin=action.origin)
        files: dict[str, Path] = {}
        try:
            for sid in action.secrets:
                files[sid] = provider.private_file(sid)
        except BaseException:
            for path in files.values():
                provider.release(path)
            raise
        return files

    def _redact(self, action: Action, output: bytes) -> bytes:
        if not action.secrets or self.ctx.secrets is None:
            return output
        from pyimg.core.sandbox import OUTPUT_TAIL_BYTES

        if len(output) >= OUTPUT_TAIL_BYTES:
            # The tail may start inside a secret, where no pattern matches: drop that line.
            output = output.split(b"\n", 1)[-1]
        return self.ctx.secrets.redact(action.secrets, output)

    def _check_no_secret_in_outputs(self, action: Action, root: Path) -> None:
        if not action.secrets or self.ctx.secrets is None:
            return
        files: list[tuple[str, Path]] = []
        for p in action.outputs:
            if (root / p).is_file() and not (root / p).is_symlink():
                files.append((p, root / p))
        for p in action.output_dirs:
            for dirpath, dirnames, filenames in os.walk(root / p):
                dirnames.sort()
                for name in sorted(filenames):
                    full = Path(dirpath) / name
                    if full.is_file() and not full.is_symlink():
                        files.append((f"{p}/{full.relative_to(root / p).as_posix()}", full))
        leak = self.ctx.secrets.find_leak(action.secrets, files)
        if leak is not None:
            raise ActionFailedError(
                f"{action.describe()}: output '{leak.path}' contains the value of secret "
                f"'{leak.secret_id}' (raw, base64 or hex); the output was discarded and not cached",
                origin=action.origin,
            )

    def _stage_into_execroot(self, path: str, execroot: Path,
                             links: dict[tuple[int, int], Digest], staged: _StagedInputs) -> None:
        """Stage one input so that the command cannot change the store through it.

        A small file is a private copy (changing it changes nothing else; the check after the
        command fails the action). A large one is a hard link to its blob that the sandbox mounts
        read-only over itself: no write, chmod, rename or unlink reaches it, and a mount cannot
        be undone by a command without capabilities. Without a sandbox everything is copied.
        """
        dest = execroot / path
        staged.make_dir(execroot, os.path.dirname(path))
        produced = self.produced(path)
        if produced is None:
            # Sources enter the store once (copied, so a tool cannot edit the user's file through a
            # hard link), then are staged like any other input.
            src = self.source_path(path)
            digest, executable = self.cas.put_file(src, self.digests.digest(src)[0])
            files = {"": FileOutput(digest, src.stat().st_size, executable)}
        else:
            kind, result = produced
            files = {"": result.files[path]} if kind == "file" else dict(result.dirs[path])
            if kind == "dir":
                staged.make_dir(execroot, path)  # an input directory is there even when empty
        for rel, f in files.items():
            target = dest / rel if rel else dest
            exec_path = f"{path}/{rel}" if rel else path
            blob = self.cas.path(f.digest, f.executable)
            if staged.bind(f.size):
                self.cas.link_to(f.digest, target, f.executable)
                st = target.stat()
                links[(st.st_dev, st.st_ino)] = f.digest
                staged.read_only.append(exec_path)
                staged.add(exec_path, target, blob, shared_inode=True)
            else:
                staged.make_dir(execroot, os.path.dirname(exec_path))
                target.unlink(missing_ok=True)  # the same input named twice
                staged.copy(self.cas, f.digest, target, f.executable)
                staged.add(exec_path, target, blob, shared_inode=False)

    def _check_inputs_unchanged(
        self, action: Action, execroot: Path, staged: _StagedInputs, output: bytes
    ) -> None:
        """Fails the action, naming the file, when the command changed a staged input or a blob.

        A changed blob (which the staging makes impossible) is removed from the store, so that it
        is never served; a changed private copy only means the command broke the rule.
        """
        for exec_path, target, shared, before, blob, blob_before in staged.entries:
            blob_now = _stat_key(blob, shared_inode=True)
            # Only a change in place: the store itself replaces a blob by rename (a new inode).
            if blob_now != blob_before and blob_now and blob_before and blob_now[3] == blob_before[3]:
                blob.unlink(missing_ok=True)
                what = f"the content store's blob {blob.name} changed ({_change(blob_before, blob_now)})"
            else:
                now = _stat_key(target, shared)
                if now == before:
                    continue
                what = _change(before, now)
            raise ActionFailedError(
                _failure_message(
                    action,
                    f"changed its input '{exec_path}' ({what}): inputs are read-only to a command; "
                    f"copy the file to change it (cp {shlex.quote(exec_path)} copy)",
                    output,
                ),
                origin=action.origin,
            )

    def _ingest(self, action: Action, root: Path, links: dict[tuple[int, int], Digest]) -> ActionResult:
        files: dict[str, FileOutput] = {}
        dirs: dict[str, dict[str, FileOutput]] = {}
        for p in action.outputs:
            path = root / p
            if not path.is_file() or path.is_symlink():
                raise ActionFailedError(
                    f"{action.describe()} did not create declared output '{p}'", origin=action.origin
                )
            files[p] = self._put(path, links)
        for p in action.output_dirs:
            base = root / p
            if not base.is_dir():
                raise ActionFailedError(
                    f"{action.describe()} did not create declared output directory '{p}'",
                    origin=action.origin,
                )
            tree: dict[str, FileOutput] = {}
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames.sort()
                for name in sorted(filenames):
                    full = Path(dirpath) / name
                    rel = full.relative_to(base).as_posix()
                    if not is_utf8_name(rel):
                        # Keys, records and labels are UTF-8 text: refuse rather than crash.
                        raise ActionFailedError(
                            f"{action.describe()}: output directory '{p}' holds a file whose "
                            f"path is not valid UTF-8: {repr(os.fsencode(rel))[1:]} (pyimg packs "
                            f"only UTF-8 file names)",
                            origin=action.origin,
                        )
                    if full.is_symlink():
                        raise ActionFailedError(
                            f"{action.describe()}: output directory '{p}' holds a symlink '{rel}' "
                            "(not supported in output directories)",
                            origin=action.origin,
                        )
                    tree[rel] = self._put(full, links)
            dirs[p] = tree
        return ActionResult(files, dirs)

    def _put(self, path: Path, links: dict[tuple[int, int], Digest]) -> FileOutput:
        st = path.stat()
        # An output with another name is linked to a file pyimg may not own (a built-in or a
        # command that hard-linked a source): copied, so that the store never shares its inode.
        digest, executable = self.cas.put_file(path, links.get((st.st_dev, st.st_ino)),
                                               link=st.st_nlink == 1)
        return FileOutput(digest, st.st_size, executable)


# A scratch slot holds these directories between actions, empty; anything else is removed or
# kept as a spare in _SPARE_DIR, which no command sees.
_SANDBOX_DIR = "sandbox"  # the sandbox's HOME and TMPDIR (core/sandbox.py, SandboxSpec.scratch_dir)
_SLOT_DIRS = ("execroot", _SANDBOX_DIR, f"{_SANDBOX_DIR}/home", f"{_SANDBOX_DIR}/tmp")
_SPARE_DIR = "spare"
_MAX_SPARES = 512  # per slot: more than the directories and small inputs of most commands


class _ScratchSlots:
    """Scratch trees reused from one action to the next (one per action running at once), as
    Bazel's reused sandbox directories: making and removing the five directories every command
    needs cost about 1 ms per action here (a mkdir 70 us, a rmdir 145 us on this disk).

    Between two actions a slot is emptied: everything but its own directories goes, and those
    must be plain directories of ours, mode 0755, without extended attributes (a default ACL
    would shape the next action's files); a slot that cannot be brought back to that is removed
    whole and a fresh one made. So nothing of one action is visible to the next."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._free: list[Path] = []
        self._made = 0
        self._lock = threading.Lock()
        self._spares: dict[Path, _Spares] = {}

    def take(self) -> Path:
        with self._lock:
            if self._free:
                return self._free.pop()
            self._made += 1
            slot = self._root / f"slot-{os.getpid()}-{self._made}"
        remove_tree(slot)
        slot.mkdir(parents=True)
        (slot / _SPARE_DIR).mkdir(mode=0o700)
        self._spares[slot] = _Spares(slot / _SPARE_DIR)
        return slot

    def spares(self, slot: Path) -> _Spares:
        return self._spares[slot]

    def give_back(self, slot: Path) -> None:
        try:
            clean = _empty_slot(slot, self._spares[slot])
        except OSError:
            clean = False
        if not clean:
            remove_tree(slot)
            with self._lock:
                del self._spares[slot]
            return
        with self._lock:
            self._free.append(slot)


class _Spares:
    """Directories and small private files that a slot's earlier commands left, emptied, kept to be
    renamed into the next command's execroot instead of made anew (Bazel's reused sandbox
    directories go one step: they keep the paths the next action shares).

    Why: a command's execroot is a dozen directories and input copies, and making and freeing
    them is most of what an action costs the kernel. On ext4 without a journal (the benchmark
    machine's disk) each inode made is a scan past every inode of its block group freed in the
    last minutes (`recently_deleted`): 34% of a 2,000-target cold build's CPU, growing with
    the build's length; with a journal, a transaction each. With spares a slot frees almost
    nothing: a command's outputs are hard links the store keeps.

    A spare is a plain directory or a regular file of ours with one link, no extended attribute
    (an ACL or xattr would reach the next command) and, for a file, at most COPY_INPUTS_UP_TO
    bytes; its bytes and mode are replaced when it is used. Used by one worker at a time."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._dirs: list[str] = []
        self._files: list[str] = []
        self._named = 0
        self._uid = os.getuid()
        # The last command's directory of host-tool links, and what it held: most commands
        # have the same (sh), and a symlink is an inode that cannot be reused.
        self._links: tuple[str, dict[str, str]] | None = None

    def make_dir(self, path: str) -> None:
        """`os.mkdir(path)` with a spare directory when there is one."""
        if self._dirs:
            spare = self._dirs.pop()
            try:
                os.rename(spare, path)
                return
            except OSError:
                self._dirs.append(spare)  # `path` is there already: mkdir says how
        os.mkdir(path)

    def copy(self, cas: ContentStore, digest: Digest, dest: Path, executable: bool) -> None:
        """`cas.copy_to` onto a spare file when there is one (`dest` must not exist)."""
        if self._files:
            spare = self._files.pop()
            try:
                os.rename(spare, dest)
            except OSError:
                self._files.append(spare)
            else:
                cas.copy_to(digest, dest, executable, overwrite=True)
                return
        cas.copy_to(digest, dest, executable)

    def take_links(self, links: dict[str, str], dest: Path) -> bool:
        """Rename the kept directory of symlinks to `dest` if it holds exactly `links` (name ->
        target); False when there is none or it holds others (then it is removed)."""
        if self._links is None:
            return False
        kept, held = self._links
        self._links = None
        if held == links:
            try:
                os.rename(kept, dest)
                return True
            except OSError:
                pass
        remove_tree(Path(kept))
        return False

    def keep_links(self, path: str) -> bool:
        """Keep `path`, a directory of symlinks only, for `take_links`; False if it is not one."""
        try:
            st = os.lstat(path)
            if (not stat.S_ISDIR(st.st_mode) or st.st_uid != self._uid
                    or stat.S_IMODE(st.st_mode) != 0o755 or os.listxattr(path)):
                return False
            held: dict[str, str] = {}
            with os.scandir(path) as entries:
                for entry in entries:
                    if not entry.is_symlink() or entry.stat(follow_symlinks=False).st_uid != self._uid:
                        return False
                    held[entry.name] = os.readlink(entry.path)
            if self._links is not None:
                remove_tree(Path(self._links[0]))
            kept = os.path.join(self._root, "links")
            os.rename(path, kept)
        except OSError:
            return False
        self._links = (kept, held)
        return True

    def keep_or_remove(self, path: str, is_dir: bool) -> None:
        """Empty `path` (a directory's entries each kept or removed), then keep it as a spare if
        it qualifies, else remove it."""
        try:
            if is_dir:
                with os.scandir(path) as entries:
                    for entry in entries:
                        self.keep_or_remove(entry.path, entry.is_dir(follow_symlinks=False))
            st = os.lstat(path)
            if self._qualifies(path, st, is_dir):
                self._named += 1
                spare = os.path.join(self._root, str(self._named))
                os.rename(path, spare)
                (self._dirs if is_dir else self._files).append(spare)
                return
        except OSError:
            pass  # a directory the command closed to us: removed below, opened up as needed
        if is_dir:
            remove_tree(Path(path))
            if os.path.lexists(path):  # the parent is closed to us: it must not become a spare
                raise OSError(f"cannot remove {path}")
        else:
            os.unlink(path)

    def _qualifies(self, path: str, st: os.stat_result, is_dir: bool) -> bool:
        if len(self._dirs) + len(self._files) >= _MAX_SPARES or st.st_uid != self._uid:
            return False
        if is_dir:
            if not stat.S_ISDIR(st.st_mode) or os.listxattr(path):
                return False
            if stat.S_IMODE(st.st_mode) != 0o755:
                os.chmod(path, 0o755)  # moving a directory needs write access to it (its "..")
            return True
        return (stat.S_ISREG(st.st_mode) and st.st_nlink == 1
                and st.st_size <= COPY_INPUTS_UP_TO and not os.listxattr(path))


def _empty_slot(slot: Path, spares: _Spares) -> bool:
    """Empty `slot` down to its own directories (made where missing), what it held kept as
    `spares` or removed; False when one of its directories is not a plain directory of ours
    with mode 0755 and no extended attributes, or will not empty."""
    uid = os.getuid()
    spare_dir = os.lstat(slot / _SPARE_DIR)
    if not stat.S_ISDIR(spare_dir.st_mode) or spare_dir.st_uid != uid:
        return False
    for rel in ("", *_SLOT_DIRS):
        d = slot / rel if rel else slot
        try:
            st = os.lstat(d)
        except FileNotFoundError:
            d.mkdir(mode=0o755)
            st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or os.listxattr(d):
            return False
        if stat.S_IMODE(st.st_mode) != 0o755:
            os.chmod(d, 0o755)
        keep = {name.rsplit("/", 1)[-1] for name in _SLOT_DIRS
                if name.rpartition("/")[0] == rel}
        if not rel:
            keep.add(_SPARE_DIR)
        with os.scandir(d) as entries:
            for entry in entries:
                if entry.name in keep:
                    continue
                if rel == "execroot" and entry.name == HOST_TOOLS_DIR and spares.keep_links(entry.path):
                    continue
                spares.keep_or_remove(entry.path, entry.is_dir(follow_symlinks=False))
        if not set(os.listdir(d)) <= keep:  # the kept ones are made on their own turn
            return False
    return True


class _DurableBatch:
    """Action-cache entries whose blobs were written without an fsync each: a committer thread
    syncs the store's filesystem once per batch, then writes the batch's entries (unsynced: the
    next sync covers them, and a torn one fails its check line). So an entry never names a blob
    that a crash could lose, and a crash loses only the entries not written yet."""

    def __init__(self, cas: ContentStore, cache: ActionCache) -> None:
        self._cas = cas
        self._cache = cache
        self._pending: list[tuple[Digest, ActionResult]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._drop_rest = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._commit_loop, name="pyimg-ac-commit",
                                        daemon=True)
        self._thread.start()

    def add(self, key: Digest, result: ActionResult) -> None:
        with self._cond:
            if self._closed:
                return  # a worker that finished after Ctrl-C: its entry is dropped
            self._pending.append((key, result))
            if len(self._pending) >= _BATCH_ENTRIES:
                self._cond.notify()

    def close(self, commit: bool) -> None:
        """Commit what is pending and sync once more (`commit`), or drop it; then re-raise what
        a commit failed with (a full disk)."""
        with self._cond:
            self._closed = True
            self._drop_rest = not commit
            self._cond.notify()
        self._thread.join()
        if self._error is not None and commit:
            raise self._error

    def _commit_loop(self) -> None:
        written: list[Path] = []  # entries written since the last sync of the filesystem
        while True:
            with self._cond:
                self._cond.wait_for(
                    lambda: self._closed or len(self._pending) >= _BATCH_ENTRIES, _BATCH_SECONDS)
                batch, self._pending = self._pending, []
                closed, drop = self._closed, self._drop_rest
            if drop or self._error is not None:
                return
            try:
                if batch:
                    blobs = {self._cas.path(f.digest, f.executable)
                             for _, result in batch for f in result.all_files()}
                    if self._durable(blobs):
                        written = []  # the filesystem's sync covered them too
                    for key, result in batch:
                        self._cache.put(key, result, sync=False)
                        written.append(self._cache.entry_path(key))
                if closed:
                    if written:
                        self._durable(set(written))
                    return
            except BaseException as e:  # noqa: BLE001 - raised by close()
                self._error = e
                return

    def _durable(self, paths: set[Path]) -> bool:
        """Make the files at `paths` durable: each fsynced with its directory and that one's
        parent when they are few, else one sync of the store's filesystem (True)."""
        if len(paths) > _FSYNC_FILES_UP_TO:
            self._cas.sync()
            return True
        with no_space_reported(self._cas.root):
            dirs = {d for p in paths for d in (p.parent, p.parent.parent)}
            for path in sorted(paths) + sorted(dirs):
                fsync_path(path)
        return False


class _StagedInputs:
    """The inputs staged for one command, with their stat before it ran; which ones to bind."""

    def __init__(self, allow_binds: bool, spares: _Spares | None = None) -> None:
        self.allow_binds = allow_binds
        self.spares = spares
        self.read_only: list[str] = []
        self.dirs: set[str] = set()  # the directories of the execroot made (see `make_dir`)
        # (exec path, staged path, whether it is the blob's inode, its stat key, blob, blob's key)
        self.entries: list[
            tuple[str, Path, bool, tuple[int, ...] | None, Path, tuple[int, ...] | None]
        ] = []

    def make_dir(self, execroot: Path, rel: str) -> None:
        """Make the directory `rel` of `execroot` and its parents, as `mkdir -p`, with one mkdir
        per directory not made yet for this command: a root-source edit re-runs the actions
        with the most inputs, each from another package, and a mkdir costs 0.1 to 0.2 ms here
        (docs/benchmarks.md, "Scale"), where `Path.mkdir(parents=True)` spends up to four."""
        if not rel or rel in self.dirs:
            return
        parent = os.path.dirname(rel)
        self.make_dir(execroot, parent)
        try:
            if self.spares is not None:
                self.spares.make_dir(os.path.join(execroot, rel))
            else:
                os.mkdir(execroot / rel)
        except FileExistsError:
            if not os.path.isdir(execroot / rel):
                raise
        self.dirs.add(rel)

    def copy(self, cas: ContentStore, digest: Digest, target: Path, executable: bool) -> None:
        """A private copy of a blob at `target` (which must not exist), on a spare if there is one."""
        if self.spares is not None:
            self.spares.copy(cas, digest, target, executable)
        else:
            cas.copy_to(digest, target, executable)

    def bind(self, size: int) -> bool:
        return (
            self.allow_binds
            and size > COPY_INPUTS_UP_TO
            and len(self.read_only) < _MAX_READ_ONLY_BINDS
        )

    def add(self, exec_path: str, target: Path, blob: Path, shared_inode: bool) -> None:
        self.entries.append((
            exec_path, target, shared_inode, _stat_key(target, shared_inode), blob,
            _stat_key(blob, True),
        ))


def _stat_key(path: Path, shared_inode: bool) -> tuple[int, ...] | None:
    """What proves a staged file unchanged: mode, size, mtime, inode, and ctime unless the inode is
    shared with the store (every hard link made by a concurrent action moves a blob's ctime)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    key = (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ino)
    return key if shared_inode else (*key, st.st_ctime_ns)


def _change(before: tuple[int, ...] | None, now: tuple[int, ...] | None) -> str:
    if now is None:
        return "deleted"
    if before is None:
        return "created"
    if now[3] != before[3]:
        return "replaced by another file"
    if now[0] != before[0]:
        return f"mode {before[0] & 0o7777:04o} -> {now[0] & 0o7777:04o}"
    if now[1] != before[1]:
        return f"size {before[1]} -> {now[1]} bytes"
    return "rewritten"


def _failure_message(action: Action, what: str, output: bytes) -> str:
    tail = output.decode("utf-8", "replace").splitlines()[-OUTPUT_TAIL_LINES:]
    lines = [f"{action.describe()} {what}", f"  mnemonic: {action.mnemonic}"]
    if action.argv:
        lines.append("  command: " + " ".join(shlex.quote(a) for a in action.argv))
    if tail:
        lines.append("  output (last lines):")
        lines.extend("    " + line for line in tail)
    return "\n".join(lines)

