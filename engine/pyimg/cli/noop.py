"""The no-op fast path: a stat-level record of the last successful build, checked before the
engine is imported, so that `pyimg build` with nothing changed costs little more than start-up.

After a successful build, `write_record` notes the (size, mtime, inode, ctime) of every file the
build read (BUILD/.bzl/MODULE files, sources, host tools, pyimg's own code), the (mtime, inode)
of every workspace directory (a file added or removed anywhere changes its directory's mtime, which
covers glob() and package discovery), and the stat of every output it placed under pyimg-out/.
`try_fast_noop` replays the build's report only when the same command line, in the same directory,
finds all of them unchanged; anything else, and any `--secret`, takes the normal path.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["fast_summary", "record_path", "try_fast_noop", "valid_record", "write_record"]

RECORDS = "noop"  # <output base>/noop/<command key>.json, one record per command line
_SKIP_DIRS = {"pyimg-out", "node_modules"}


def _stat(path: str, with_ctime: bool = True) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns if with_ctime else 0]


def _command_key(argv: list[str]) -> str:
    data = json.dumps([argv, os.getcwd()], separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()


def _pyimg_code() -> list[str]:
    """pyimg's own modules: an upgrade or an edit of the engine must never replay a record."""
    root = Path(__file__).resolve().parents[1]
    return sorted(str(p) for p in root.rglob("*.py"))


def _workspace_dirs(workspace: Path) -> list[str]:
    out = []
    for dirpath, dirnames, _ in os.walk(workspace):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        out.append(dirpath)
    return out


def record_path(output_base: Path, key: str) -> Path:
    return output_base / RECORDS / f"{key[:32]}.json"


def write_record(
    output_base: Path,
    workspace: Path,
    argv: list[str],
    inputs: Iterable[str],
    outputs: Iterable[str],
    stdout: str,
    actions: int,
    extra: dict[str, Any] | None = None,
) -> None:
    """Record a successful build (call it only after every output is in place). `extra` is kept
    for the command that replays the record (push: the layout it pushes)."""
    from pyimg.core.cas import atomic_write_bytes

    if any(a == "--secret" or a.startswith("--secret=") for a in argv):
        return  # a secret's value is in action keys but not on the command line
    files = {p: _stat(p) for p in sorted(set(inputs) | set(_pyimg_code()))}
    dirs = {d: _stat(d, with_ctime=False) for d in _workspace_dirs(workspace)}
    out_files: dict[str, list[int] | None] = {}
    for o in outputs:
        if os.path.isdir(o):
            for dirpath, _, names in os.walk(o):
                out_files[dirpath] = _stat(dirpath, with_ctime=False)  # a file added in it
                for n in names:
                    p = os.path.join(dirpath, n)
                    # Outputs are hard links into the store: linking again changes ctime.
                    out_files[p] = _stat(p, with_ctime=False)
        else:
            out_files[o] = _stat(o, with_ctime=False)
    # An input recorded as absent (None: pyimg.lock, say) must stay absent; outputs must exist.
    if any(v is None for v in out_files.values()):
        return
    key = _command_key(argv)
    record = {"key": key, "files": files, "dirs": dirs, "outputs": out_files,
              "stdout": stdout, "actions": actions, "extra": extra or {}}
    atomic_write_bytes(record_path(output_base, key), json.dumps(record).encode())


def _locate_output_base(argv: list[str], workspace: Path) -> Path:
    """The output base that `Session.open` would use for these flags (without importing it)."""
    def flag(name: str) -> str | None:
        for i, a in enumerate(argv):
            if a == name and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(name + "="):
                return a.split("=", 1)[1]
        return None

    output_base = flag("--output-base")
    if output_base:
        return Path(output_base).resolve()
    from pyimg.cli.session import default_cache_root

    disk_cache = flag("--disk-cache")
    cache_root = Path(disk_cache).resolve() if disk_cache else default_cache_root()
    tag = hashlib.sha256(str(workspace).encode()).hexdigest()[:16]
    return cache_root / "output_bases" / tag


def valid_record(argv: list[str], workspace: Path) -> dict[str, Any] | None:
    """The record of the last successful run of this command line, if nothing it depends on
    changed since; None otherwise (and always with PYIMG_FAST_NOOP=0)."""
    import fcntl

    if os.environ.get("PYIMG_FAST_NOOP") == "0":
        return None  # the escape hatch: always verify everything (docs/cli.md)
    output_base = _locate_output_base(argv, workspace)
    key = _command_key(argv)
    try:
        record = json.loads(record_path(output_base, key).read_bytes())
    except (OSError, ValueError):
        return None
    if record.get("key") != key:
        return None
    try:
        lock = open(output_base / "lock", "a+")  # noqa: SIM115 - held while we check
    except OSError:
        return None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # another command is at work here: take the normal path (it waits)
        if any(_stat(p) != s for p, s in record["files"].items()):
            return None
        if any(_stat(p, with_ctime=False) != s for p, s in record["dirs"].items()):
            return None
        if any(_stat(p, with_ctime=False) != s for p, s in record["outputs"].items()):
            return None
        if set(_pyimg_code()) - set(record["files"]):
            return None  # a new engine module
        from pyimg.cli.build_record import mark_all_cached

        mark_all_cached(output_base)  # so that `explain` says what a no-op build would
    return record


def try_fast_noop(argv: list[str], workspace: Path) -> bool:
    """Replay the last build's report if nothing it depends on changed; False otherwise."""
    start = time.monotonic()
    record = valid_record(argv, workspace)
    if record is None:
        return False
    sys.stdout.write(record["stdout"])
    sys.stdout.flush()
    print(fast_summary(record, time.monotonic() - start), file=sys.stderr)
    return True


def fast_summary(record: dict[str, Any], seconds: float) -> str:
    return (f"Build completed: 0 actions run, {record['actions']} cache hits, {seconds:.2f}s "
            "(nothing changed since the last build)")
