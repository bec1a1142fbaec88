"""The no-op fast path: a stat-level record of the last successful build, checked before the
engine is imported, so that `pyimg build` with nothing changed costs little more than start-up.

After a successful build, `write_record` notes the (size, mtime, inode, ctime) of every file the
build read (BUILD/.bzl/MODULE files, sources, host tools, pyimg's own code), the (mtime, inode)
of every workspace directory (a file added or removed anywhere changes its directory's mtime, which
covers glob() and package discovery) with a digest of its listing (each entry's name and type, a
link's target: a file saved by renaming a new one over it changes the mtime, not the listing), and
the stat of every output it placed under pyimg-out/.
`check_record` compares them for the same command line in the same directory: with all unchanged,
`replay` prints the build's report; when only files changed (every directory and output as left,
or a directory with the listing it had; every file still there), the check goes to the incremental build (`build/incremental.py`), which
decides whether those are sources it can re-key from. Anything else, and any `--secret`, takes the
normal path.

The record file is one JSON line of stats, then the incremental build's index line, which a no-op
never parses.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

__all__ = [
    "Check",
    "check_record",
    "command_key",
    "fast_summary",
    "file_stat",
    "locate",
    "output_stats",
    "pyimg_code",
    "record_path",
    "replay",
    "valid_record",
    "write_record",
]

_ABSENT = object()
# <output base>/noop/<command key>.json, one record per command line (and beside it the
# incremental build's <command key>.actions)
RECORDS = "noop"
_SKIP_DIRS = {"pyimg-out", "node_modules"}


def file_stat(path: str, with_ctime: bool = True) -> list[int] | None:
    """What the record keeps of a file: [size, mtime_ns, inode, ctime_ns (or 0)], None if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns if with_ctime else 0]


def command_key(argv: list[str]) -> str:
    data = json.dumps([argv, os.getcwd()], separators=(",", ":"))
    return hashlib.sha256(data.encode()).hexdigest()


def pyimg_code() -> list[str]:
    """pyimg's own modules: an upgrade or an edit of the engine must never replay a record."""
    root = Path(__file__).resolve().parents[1]
    return sorted(str(p) for p in root.rglob("*.py"))


def pyimg_dirs() -> dict[str, list[int] | None]:
    """The stat of each of pyimg's package directories: a module added to or removed from the
    engine changes its directory's mtime. The check compares these instead of listing the
    engine's modules again (an rglob of 190 modules cost the no-op more than a millisecond)."""
    dirs = []
    for d, subdirs, _ in os.walk(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))):
        subdirs[:] = [n for n in subdirs if n != "__pycache__"]  # written by imports, not edits
        dirs.append(d)
    return _file_stats(dirs)


def _file_stats(paths: Iterable[str | Path]) -> dict[str, list[int] | None]:
    return {str(p): file_stat(str(p), with_ctime=False) for p in paths}


def _workspace_dirs(workspace: Path) -> dict[str, tuple[list[int] | None, str | None]]:
    """Each workspace directory's stat and listing digest (None: it changed while listed)."""
    out: dict[str, tuple[list[int] | None, str | None]] = {}
    pending = [str(workspace)]
    while pending:
        d = pending.pop()
        stat = file_stat(d, with_ctime=False)
        try:
            digest, subdirs = _listing(d)
        except OSError:
            digest, subdirs = None, []
        out[d] = (stat, digest if file_stat(d, with_ctime=False) == stat else None)
        pending.extend(os.path.join(d, n) for n in subdirs
                       if n not in _SKIP_DIRS and not n.startswith("."))
    return out


def _listing(directory: str) -> tuple[str, list[str]]:
    """A digest of what glob() and package discovery see of `directory` (each entry's name,
    whether it is a directory, a link and where it points), and its subdirectories."""
    entries = []
    subdirs = []
    with os.scandir(directory) as it:
        for e in it:
            if e.is_symlink():
                entries.append(f"l {e.name} {os.readlink(e.path)}")
            elif e.is_dir(follow_symlinks=False):
                entries.append(f"d {e.name}")
                subdirs.append(e.name)
            else:
                entries.append(f"f {e.name}")
    digest = hashlib.sha256("\0".join(sorted(entries)).encode()).hexdigest()[:32]
    return digest, subdirs


def record_path(output_base: Path, key: str) -> Path:
    return output_base / RECORDS / f"{key[:32]}.json"


def output_stats(outputs: Iterable[str]) -> dict[str, list[int] | None]:
    """The stat of each output, and of every file and directory under an output directory."""
    out: dict[str, list[int] | None] = {}
    for o in outputs:
        if os.path.isdir(o):
            for dirpath, _, names in os.walk(o):
                out[dirpath] = file_stat(dirpath, with_ctime=False)  # a file added in it
                for n in names:
                    p = os.path.join(dirpath, n)
                    # Outputs are hard links into the store: linking again changes ctime.
                    out[p] = file_stat(p, with_ctime=False)
        else:
            out[o] = file_stat(o, with_ctime=False)
    return out


def write_record(
    output_base: Path,
    workspace: Path,
    argv: list[str],
    inputs: Iterable[str],
    outputs: Iterable[str],
    stdout: str,
    actions: int,
    extra: dict[str, Any] | None = None,
    lines: Iterable[bytes] = (),
    observed: Mapping[str, Sequence[int] | None] | None = None,
) -> None:
    """Record a successful build (call it only after every output is in place). `extra` is kept
    for the command that replays the record (push: the layout it pushes); `lines` are the
    incremental build's. `observed` holds the stat at which the build hashed a source file
    (None: unknown): an edit made while the build ran must not pass for what it hashed."""
    if any(a == "--secret" or a.startswith("--secret=") for a in argv):
        return  # a secret's value is in action keys but not on the command line
    observed = observed or {}
    files = {p: _observed(observed[p]) if p in observed else file_stat(p)
             for p in sorted(set(inputs) | set(pyimg_code()))}
    walked = _workspace_dirs(workspace)
    dirs = {d: stat for d, (stat, _) in walked.items()}
    listings = {d: listing for d, (_, listing) in walked.items()}
    out_files = output_stats(outputs)
    # An input recorded as absent (None: pyimg.lock, say) must stay absent; outputs must exist.
    if any(v is None for v in out_files.values()):
        return
    key = command_key(argv)
    record = {"key": key, "files": files, "dirs": dirs, "listings": listings, "outputs": out_files,
              "engine_dirs": pyimg_dirs(), "stdout": stdout, "actions": actions,
              "extra": extra or {}}
    _write(record_path(output_base, key), json.dumps(record).encode(), lines)


def _observed(stat: Sequence[int] | None) -> list[int] | None:
    # None records the file as absent: a later check finds it present and builds in full.
    return list(stat) if stat is not None else None


def _write(path: Path, head: bytes, lines: Iterable[bytes]) -> None:
    from pyimg.core.cas import atomic_write_bytes

    atomic_write_bytes(path, b"\n".join([head, *lines]))


# How many changed values `Check._head` replaces in the record's text before it serializes the
# record again instead.
_MOST_PATCHES = 64


class Check:
    """The record of this command line's last successful build and what changed since: `changed`
    maps every file whose stat differs to its new stat, `dirs` every directory whose stat
    differs but not its listing. With changes, `lock` holds the output base exclusively (from
    the check on, so nothing can build in between) until `release`."""

    def __init__(self, cache_root: Path, output_base: Path, path: Path, record: dict[str, Any],
                 raw: bytes, tail: int, changed: dict[str, list[int]],
                 lock: IO[str] | None, dirs: dict[str, list[int]] | None = None) -> None:
        self.cache_root = cache_root
        self.output_base = output_base
        self.path = path
        self.record = record
        self.raw = raw  # the record file, whose incremental build's line starts at `tail`
        self.tail = tail
        self.changed = changed
        self.dirs = dirs or {}
        self.lock = lock
        self._patches: list[tuple[Any, str, Any]] = []  # (old value, key, new value)

    @contextmanager
    def held(self, command: str) -> Iterator[None]:
        """Run `command` under the lock taken by the check, then release it."""
        from pyimg.core.session import holding

        assert self.lock is not None
        try:
            with holding(self.lock, command):
                yield
        finally:
            self.release()

    def release(self) -> None:
        if self.lock is not None:
            self.lock.close()  # closing the descriptor releases the flock
            self.lock = None

    def set(self, section: str | None, key: str, value: Any) -> None:
        """Change one value of the record (in its map `section`, or at its top)."""
        values = self.record[section] if section else self.record
        old = values.get(key, _ABSENT)
        values[key] = value
        self._patches.append((old, key, value))

    def drop(self, section: str, key: str) -> None:
        del self.record[section][key]
        self._patches.append((_ABSENT, key, _ABSENT))

    def save(self, lines: Iterable[bytes]) -> None:
        """Write the record as changed by `set` and `drop`, and `lines`."""
        _write(self.path, self._head(), lines)

    def _head(self) -> bytes:
        """The record's line: the one read, with each changed value replaced in its text (a few
        values of thousands: serializing it all again costs milliseconds). `json.dumps` writes
        `"key": value` the same wherever it is; a key not found exactly once in the line (a
        value added or removed, a key in two maps) and the whole record is serialized again."""
        if len(self._patches) > _MOST_PATCHES:
            # Each patch scans the whole line (megabytes at 10,000 actions) twice: a root-source
            # edit changes thousands of outputs' stats, and one serialization is then cheaper.
            return json.dumps(self.record).encode()
        head = self.raw[:self.tail].rstrip(b"\n")
        for old, key, new in self._patches:
            if old is _ABSENT or new is _ABSENT:
                return json.dumps(self.record).encode()
            before, after = (json.dumps({key: v})[1:-1].encode() for v in (old, new))
            if head.count(before) != 1:
                return json.dumps(self.record).encode()
            head = head.replace(before, after)
        return head


def locate(argv: list[str], workspace: Path,
           configured_cache: str | None = None) -> tuple[Path, Path]:
    """The cache root and output base that `Session.open` would use for these flags
    (`configured_cache`: PYIMG_DISK_CACHE, see `default_cache_root`)."""
    def flag(name: str) -> str | None:
        for i, a in enumerate(argv):
            if a == name and i + 1 < len(argv):
                return argv[i + 1]
            if a.startswith(name + "="):
                return a.split("=", 1)[1]
        return None

    from pyimg.core.session import default_cache_root

    disk_cache = flag("--disk-cache")
    cache_root = (Path(disk_cache).resolve() if disk_cache
                  else default_cache_root(configured_cache))
    output_base = flag("--output-base")
    if output_base:
        return cache_root, Path(output_base).resolve()
    tag = hashlib.sha256(str(workspace).encode()).hexdigest()[:16]
    return cache_root, cache_root / "output_bases" / tag


def check_record(argv: list[str], workspace: Path,
                 configured_cache: str | None = None) -> Check | None:
    """The record of the last successful run of this command line and what changed since; None
    when there is none, when more than files changed, or when another command holds the output
    base. (With PYIMG_FAST_NOOP=0 the command line does not ask: docs/cli.md.)"""
    import fcntl

    cache_root, output_base = locate(argv, workspace, configured_cache)
    key = command_key(argv)
    path = record_path(output_base, key)
    try:
        raw = path.read_bytes()
        tail = raw.find(b"\n") + 1 or len(raw)
        record = json.loads(raw[:tail])
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("key") != key:
        return None
    try:
        lock = open(output_base / "lock", "a+")  # noqa: SIM115 - see finally
    except OSError:
        return None
    handed_over = False  # to the Check, which releases it
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return None  # another command is at work here: take the normal path (it waits)
        dirs = _moved_dirs(record)
        if dirs is None:
            return None
        if any(file_stat(p, with_ctime=False) != s for p, s in record["outputs"].items()):
            return None
        engine_dirs = record.get("engine_dirs")
        if not isinstance(engine_dirs, dict) or any(
                file_stat(d, with_ctime=False) != s for d, s in engine_dirs.items()):
            return None  # a module added to or removed from the engine
        changed = {}
        for p, s in record["files"].items():
            now = file_stat(p)
            if now != s:
                if now is None or s is None:
                    return None  # a file that appeared or went away
                changed[p] = now
        if not changed:
            from pyimg.build.build_record import mark_all_cached

            mark_all_cached(output_base)  # so that `explain` says what a no-op build would
            return Check(cache_root, output_base, path, record, raw, tail, {}, None)
        if tail == len(raw):
            return None
        try:
            # Shared to exclusive: if another command was waiting, it gets the lock first and
            # this fails; so holding it now means nothing built since the files were checked.
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return None
        check = Check(cache_root, output_base, path, record, raw, tail, changed, lock, dirs)
        handed_over = True
        return check
    finally:
        if not handed_over:
            lock.close()


def _moved_dirs(record: dict[str, Any]) -> dict[str, list[int]] | None:
    """The workspace directories whose stat changed with their listing as recorded (a file saved
    by a rename, `sed -i`), with their new stat; None when one's listing changed too."""
    listings: dict[str, str | None] = record.get("listings", {})
    moved = {}
    for p, s in record["dirs"].items():
        now = file_stat(p, with_ctime=False)
        if now != s:
            recorded = listings.get(p)
            try:
                if now is None or recorded is None or _listing(p)[0] != recorded:
                    return None
            except OSError:
                return None
            if file_stat(p, with_ctime=False) != now:
                return None
            moved[p] = now
    return moved


def valid_record(argv: list[str], workspace: Path,
                 configured_cache: str | None = None) -> dict[str, Any] | None:
    """The record of the last successful run of this command line if nothing it depends on
    changed since; None otherwise."""
    check = check_record(argv, workspace, configured_cache)
    if check is None or check.changed:
        if check is not None:
            check.release()
        return None
    return check.record


def replay(record: dict[str, Any], start: float) -> None:
    """Print the report of the recorded build, as the build printed it."""
    sys.stdout.write(record["stdout"])
    sys.stdout.flush()
    print(fast_summary(record, time.monotonic() - start), file=sys.stderr)


def fast_summary(record: dict[str, Any], seconds: float) -> str:
    return (f"Build completed: 0 actions run, {record['actions']} cache hits, {seconds:.2f}s "
            "(nothing changed since the last build)")
