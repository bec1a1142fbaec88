"""What the full and the incremental build share to run actions and place their outputs: the
output-format version, the build context, and materialization under pyimg-out/.

Light on imports on purpose: the incremental build (`build/incremental.py`) runs without loading
Starlark, analysis or the built-in actions until one is needed.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pyimg.core.action_cache import ActionResult
from pyimg.core.cas import ContentStore, no_space_reported, remove_tree
from pyimg.core.digest import Digest
from pyimg.core.executor import ActionExecutor, BuildContext
from pyimg.core.session import Session
from pyimg.errors import IntegrityError, PyimgError

if TYPE_CHECKING:
    from pyimg.core.builtin import BlobSource
    from pyimg.core.secrets import SecretProvider

__all__ = ["current_format_version", "format_files", "materialize", "new_context"]


def current_format_version() -> str:
    """pyimg's output-format version: enters every action key (docs/sandbox-secrets-caches.md)."""
    from pyimg.oci.format import OUTPUT_FORMAT_VERSION

    return f"pyimg-actions/1;{OUTPUT_FORMAT_VERSION}"


def format_files() -> list[str]:
    """The files behind the output-format version besides pyimg's own modules: the compression
    libraries it names (a build record holding their stat stays valid while they do)."""
    import zlib

    import zstandard

    modules = [zlib, zstandard, getattr(zstandard, "backend_c", None)]
    files = [os.path.realpath(f) for m in modules if (f := getattr(m, "__file__", None))]
    try:  # the shared libz that the zlib module is linked against
        with open("/proc/self/maps") as maps:
            files += {line.split()[-1] for line in maps if "/libz.so" in line}
    except OSError:
        pass
    return sorted(set(files))


class LazyBuiltins(Mapping[str, Any]):
    """The built-in actions, imported when the first one runs (a no-op build imports none)."""

    def __init__(self) -> None:
        self._table: Mapping[str, Any] | None = None

    def _load(self) -> Mapping[str, Any]:
        if self._table is None:
            from pyimg.actions.builtins import load_builtins

            self._table = load_builtins()
        return self._table

    def __getitem__(self, name: str) -> Any:
        return self._load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())


def new_context(
    session: Session, jobs: int, sandbox_strict: bool, source_root: Callable[[str], Path],
    format_version: str | None = None, out: TextIO | None = None,
    lazy_blobs: BlobSource | None = None, secrets: SecretProvider | None = None,
) -> BuildContext:
    """The context of one build's executor; warnings go to `out` (stderr), each once.
    `format_version` is the current one when omitted; `lazy_blobs` gives the pulled bases'
    layers to the builtins that need their bytes; `secrets`, the --secret values."""
    out = out or sys.stderr
    warned: list[str] = []

    def warn(message: str) -> None:
        if message not in warned:
            warned.append(message)
            print(f"WARNING: {message}", file=out, flush=True)

    return BuildContext(
        workspace=session.workspace,
        cache_root=session.cache_root,
        scratch_root=session.output_base / "scratch",
        source_root=source_root,
        format_version=format_version or current_format_version(),
        builtins=LazyBuiltins(),
        jobs=jobs,
        sandbox_strict=sandbox_strict,
        warn=warn,
        cancel=threading.Event(),
        lazy_blobs=lazy_blobs,
        secrets=secrets,
    )


# A blob linked out under pyimg-out/ is re-hashed first, whatever its stat says (bytes can rot
# under an unchanged stat): always up to this size (manifests, configs, small files: a hash costs
# less than the link), and beyond it unless this build wrote it, hashing its bytes on the way in.
# So a cold build reads no layer twice; a layer served from the cache is read once more.
RECHECK_ALWAYS_BYTES = 1 << 20


def _check_blob(cas: ContentStore, digest: Digest, executable: bool, where: Path,
                workspace: Path) -> None:
    """Fail the build on a blob that no longer holds its digest's bytes (it is dropped, so the
    next build makes it again) instead of linking it out."""
    blob = cas.path_str(digest, executable)
    try:
        size = os.stat(blob).st_size
    except FileNotFoundError:
        size = 0  # recheck says so below
    if cas.recheck(digest, executable, trust_fresh=size > RECHECK_ALWAYS_BYTES):
        return
    rel = where.relative_to(workspace) if where.is_relative_to(workspace) else where
    raise IntegrityError(
        f"{rel}: blob {digest} of the content store ({blob}) no longer holds the bytes of its "
        "digest (they changed on disk); it was dropped, and the next build makes it again. "
        "`pyimg cache verify` checks the whole cache."
    )


def materialize(session: Session, cas: ContentStore, executor: ActionExecutor,
                goals: Iterable[str], lazy: BlobSource, fetch: bool = True,
                out: TextIO | None = None) -> None:
    """Put the top-level outputs under pyimg-out/, as hard links to the content store; a goal
    already linked to its blob is left alone, one that no action produced in this build too.

    An image layout also gets the pulled base layers its output leaves out: every one (fetched
    if need be) with `fetch`, else those already in the store (a push fetches no more than the
    destination lacks, and the layout stays sparse only where bytes were never downloaded).
    A download is announced on `out` (stderr): it may be the longest step of a build.
    Each blob is checked before it is linked (`_check_blob`); a corrupt one fails the build.
    """
    with no_space_reported(session.workspace / "pyimg-out"):
        _materialize(session, cas, executor, goals, lazy, fetch, out)


def _materialize(session: Session, cas: ContentStore, executor: ActionExecutor,
                 goals: Iterable[str], lazy: BlobSource, fetch: bool, out: TextIO | None) -> None:
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
            _check_blob(cas, f.digest, f.executable, dest, session.workspace)
            if dest.is_dir() and not dest.is_symlink():
                remove_tree(dest)
            cas.link_to(f.digest, dest, f.executable)
        else:
            _materialize_dir(cas, result, path, dest, lazy, fetch, out or sys.stderr,
                             session.workspace)


def _same_file(dest: Path, blob: Path) -> bool:
    try:
        a, b = dest.stat(), blob.stat()
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _lazy_blobs(root: Path, tree: Mapping[str, Any], lazy: BlobSource) -> set[str]:
    """The blob paths (`blobs/sha256/<hex>`) that an image layout output leaves to `lazy`: the
    layers of a pulled base. Empty for a directory that is not an OCI layout."""
    if "oci-layout" not in tree or "index.json" not in tree:
        return set()
    from pyimg.oci.layout import Layout, walk_all

    return {
        rel
        for d in walk_all(Layout(root))
        if (rel := f"blobs/{d.digest.algorithm}/{d.digest.hex}") not in tree and lazy.knows(d.digest)
    }


def _materialize_dir(cas: ContentStore, result: ActionResult, path: str, dest: Path,
                     lazy: BlobSource, fetch: bool, out: TextIO, workspace: Path) -> None:
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
    try:
        for rel, f in sorted(tree.items()):
            _check_blob(cas, f.digest, f.executable, dest / rel, workspace)
            cas.link_to(f.digest, tmp / rel, f.executable)
        tmp.mkdir(parents=True, exist_ok=True)
        blobs = wanted(tmp)
        if blobs:
            # Only what the store lacks: asking `lazy` for a stored layer would verify it again.
            missing = [d for d in blobs if not cas.verify(d)]
            if missing:
                print(f"Fetching {len(missing)} base image layer{'s' * (len(missing) != 1)} for "
                      f"{path}", file=out, flush=True)
                from concurrent.futures import ThreadPoolExecutor

                # Into the store, verified; layers of one base download side by side, like a pull.
                with ThreadPoolExecutor(max_workers=min(4, len(missing))) as pool:
                    list(pool.map(lazy.fetch, missing))
            for digest in blobs:
                _check_blob(cas, digest, False, dest / "blobs" / "sha256" / digest.hex, workspace)
                cas.link_to(digest, tmp / "blobs" / "sha256" / digest.hex)
    except BaseException:
        # A full disk, a failed fetch or a corrupt blob leaves pyimg-out/ as it was.
        remove_tree(tmp)
        raise
    old = dest.parent / f".old-{os.getpid()}-{dest.name}"
    if dest.exists() or dest.is_symlink():
        os.rename(dest, old)
    os.rename(tmp, dest)
    if old.exists() or old.is_symlink():
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink()
