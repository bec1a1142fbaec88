"""Runs one command of a build action hermetically: scrubbed env, no network, declared files only.

The engine prepares an execroot holding exactly the declared inputs (and empty parents for the
declared outputs) and calls `run_sandboxed`; this module decides how to isolate the command and
reports which mechanism it used (docs/sandbox-secrets-caches.md).

What the command sees (the same for "bwrap" and "unshare"; see `run_sandboxed` for "none"):

    /pyimg/execroot          the execroot, read-write, and the working directory. A fixed path, so
                             that absolute paths a tool records (debug info, shebangs, error
                             messages) do not vary with the host's directory layout.
    /pyimg/execroot/<f>      each `read_only_files` entry: a read-only bind mount of itself, so
                             that the command can neither write, chmod, delete nor replace it
    /pyimg/home              an empty directory, $HOME (`SandboxSpec.scratch_dir`)
    /tmp                     an empty directory, $TMPDIR
    /pyimg/cache/<VAR>       each writable_dirs entry, read-write, path in $VAR
    /pyimg/secrets/<id>      each secret file, read-only, path in $PYIMG_SECRET_<id>
    /usr /etc                host directories, read-only (the shell, coreutils, ld.so.cache),
                             with host secrets masked: see `host_secret_masks`
    /bin /sbin /lib /lib64   read-only, or the host's symlinks into /usr where the host is usr-merged
    <read_only_host_paths>   read-only at their host path; tool dirs outside the execroot likewise
    /proc /dev               a new procfs for the new pid namespace; a minimal /dev
    nothing else: no /home, /root, /work, /run, /var, /sys, no workspace outside the execroot.

Environment: the declared env, then PATH = the tool dirs (in order) + "/usr/bin:/bin" (so that the
shell and coreutils work, like Bazel's default genrule PATH), TZ=UTC, LC_ALL=C.UTF-8, LANG=C.UTF-8,
SOURCE_DATE_EPOCH (the declared value, else "0"), HOME, TMPDIR, PWD (bwrap --chdir sets it, and so
does every shell) and the cache/secret variables. The declared env may override TZ, LC_ALL, LANG
and SOURCE_DATE_EPOCH (they are part of the action key then); declaring PATH, HOME, TMPDIR, PWD,
PYIMG_SECRET_* or a writable_dirs name is a ValueError.

The command runs as uid/gid 0 of a new user namespace with no capabilities (files it writes belong
to the invoking user on the host; when pyimg runs as root that is host root, which owns /etc/shadow,
hence the masks), umask 022, host name "localhost", in its own network, pid, ipc
and uts namespaces. The "unshare" fallback builds the same tree with util-linux tools; it is weaker
than bwrap in the ways `_unshare_argv` lists.
"""

from __future__ import annotations

import functools
import os
import re
import selectors
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "EXECROOT_IN_SANDBOX",
    "OUTPUT_TAIL_BYTES",
    "SandboxResult",
    "SandboxSpec",
    "host_secret_masks",
    "probe_isolation",
    "run_sandboxed",
    "sanitized_etc",
]

EXECROOT_IN_SANDBOX = "/pyimg/execroot"
HOME_IN_SANDBOX = "/pyimg/home"
TMP_IN_SANDBOX = "/tmp"
CACHE_IN_SANDBOX = "/pyimg/cache"
SECRETS_IN_SANDBOX = "/pyimg/secrets"
OUTPUT_TAIL_BYTES = 64 * 1024
BASE_PATH = ("/usr/bin", "/bin")

# Host directories every command may read. /etc is needed for ld.so.cache, passwd, nsswitch.conf.
_SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# Masked even where they are world-readable by mistake; /root and /home are never mounted at all.
_SECRET_GLOBS = ("/etc/shadow*", "/etc/gshadow*", "/etc/ssh/ssh_host_*key")
# Walked for entries that not every local user may read (see host_secret_masks).
_SECRET_SCAN_DIRS = ("/etc",)
_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_ISOLATIONS = ("bwrap", "unshare", "none")
_POLL_SECONDS = 0.05
# After the command exits, how long to wait for a silent pipe to reach EOF. Only matters with
# isolation "none", where a daemon that called setsid() can hold the pipe open forever.
_DRAIN_IDLE_SECONDS = 0.3


@dataclass(frozen=True)
class SandboxSpec:
    """One command to run. Paths are host paths; `argv[0]` is looked up in the sandbox's PATH.

    A relative tool dir is relative to the execroot; an absolute one inside the execroot is seen
    under /pyimg/execroot, any other is mounted read-only at its own path.
    """

    argv: tuple[str, ...]
    execroot: Path
    env: Mapping[str, str]
    tool_dirs: tuple[Path, ...] = ()
    read_only_host_paths: tuple[Path, ...] = ()
    writable_dirs: Mapping[str, Path] = field(default_factory=lambda: MappingProxyType({}))
    secret_files: Mapping[str, Path] = field(default_factory=lambda: MappingProxyType({}))
    timeout: float | None = None
    # Files of the execroot (relative paths) mounted read-only over themselves; ignored by "none".
    read_only_files: tuple[str, ...] = ()
    # A copy of the host's /etc without its secrets (`sanitized_etc`), shown at /etc with one
    # mount; None shows the host's /etc with one mask mount per secret (`host_secret_masks`).
    etc_dir: Path | None = None
    # A directory for the sandbox's own HOME and TMPDIR (`home`, `tmp`, made if missing, which
    # must be empty), left in place for the caller to empty and reuse (core/executor.py,
    # `_ScratchSlots`); None makes a fresh temporary directory and removes it after the command.
    scratch_dir: Path | None = None


@dataclass(frozen=True)
class SandboxResult:
    """What happened. `exit_code` follows the shell: 128+N when the command died of signal N.

    `output` is the last OUTPUT_TAIL_BYTES of stdout and stderr interleaved (one pipe).
    `timed_out` is True when the sandbox killed the command because `timeout` passed; a cancelled
    command also comes back as a result (exit 137), the caller knows it set the event.
    """

    exit_code: int
    output: bytes
    isolation: str
    timed_out: bool = False


# A mount in the sandbox: kind is "ro", "rw", "ro-file", "symlink" (src is the link text) or "tmpfs".
@dataclass(frozen=True, order=True)
class _Mount:
    dest: str
    kind: str
    src: str = ""


@dataclass(frozen=True)
class _Plan:
    mounts: tuple[_Mount, ...]
    env: dict[str, str]
    cwd: str


def probe_isolation() -> str:
    """The strongest mechanism that works on this machine: "bwrap", "unshare" or "none".

    Memoised for the life of the process: each candidate is tried once by running `true` inside
    exactly the sandbox `run_sandboxed` would build.
    """
    return _probe()


@functools.cache
def _probe() -> str:
    for isolation in ("bwrap", "unshare"):
        if _works(isolation):
            return isolation
    return "none"


def _works(isolation: str) -> bool:
    with tempfile.TemporaryDirectory(prefix="pyimg-probe-") as d:
        spec = SandboxSpec(argv=("true",), execroot=Path(d), env={}, timeout=10)
        try:
            result = run_sandboxed(spec, isolation=isolation)
        except (OSError, ValueError):
            return False
        return result.exit_code == 0


def host_secret_masks() -> tuple[tuple[str, bool], ...]:
    """The host paths a sandbox hides, as (path, is_dir), sorted; memoised for the process.

    The rule: a command sees of the host's /etc only what every local user may read. Each entry
    under /etc that is not readable by "other" (a file without o+r, a directory without o+rx) is
    masked, with nothing below it, plus `_SECRET_GLOBS` whatever their modes. This matters when
    pyimg runs as root: the command is then host root without capabilities, and root owns
    /etc/shadow (mode 0640). Mapping it to another uid inside the namespace would not help, as
    ownership is decided by the host uid behind it. A masked file reads as an empty file of mode
    0000 and a masked directory as an empty one, both on a read-only mount: "Permission denied",
    as an unprivileged user sees it.
    """
    return _host_secret_masks(_SECRET_SCAN_DIRS, _SECRET_GLOBS)


def _host_secret_masks(
    scan_dirs: tuple[str, ...], globs: tuple[str, ...]
) -> tuple[tuple[str, bool], ...]:
    return _scan_host(scan_dirs, globs)[0]


# What one walk of the scanned directories saw: (path, lstat, link text or "") in walk order.
_Entries = tuple[tuple[str, os.stat_result, str], ...]


@functools.cache
def _scan_host(
    scan_dirs: tuple[str, ...], globs: tuple[str, ...]
) -> tuple[tuple[tuple[str, bool], ...], _Entries]:
    """The masks, and every entry the walk saw (what `sanitized_etc` copies and is named by):
    one walk serves both, as it costs about 40 ms for a typical /etc."""
    import glob
    import stat

    entries: list[tuple[str, os.stat_result, str]] = []
    found: dict[str, bool] = {}
    for pattern in globs:
        for path in glob.glob(pattern):
            if not os.path.islink(path):
                found[path] = os.path.isdir(path)
    for top in scan_dirs:
        for dirpath, dirnames, filenames in os.walk(top, onerror=lambda e: None):
            dirnames.sort()
            for name in sorted((*dirnames, *filenames)):
                path = os.path.join(dirpath, name)
                try:
                    st = os.lstat(path)
                    link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else ""
                except OSError:
                    continue
                entries.append((path, st, link))
                if stat.S_ISDIR(st.st_mode):
                    if st.st_mode & 0o005 != 0o005:
                        found[path] = True
                elif stat.S_ISREG(st.st_mode) and not st.st_mode & 0o004:
                    found[path] = False
            # Nothing below a masked directory is visible: do not descend into it.
            dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in found]
    # Only the top-most: a path below a masked directory is hidden already.
    kept: list[tuple[str, bool]] = []
    for path in sorted(found, key=lambda p: Path(p).parts):
        if not any(is_dir and _under(path, d) for d, is_dir in kept):
            kept.append((path, found[path]))
    return tuple(kept), tuple(entries)


def run_sandboxed(
    spec: SandboxSpec,
    cancel: threading.Event | None = None,
    *,
    isolation: str | None = None,
) -> SandboxResult:
    """Runs `spec.argv` in a sandbox and waits for it; never raises for a failing command.

    `isolation` forces a mechanism (the default is `probe_isolation()`); the engine passes "none"
    when the user asks for it and prints one warning per build whenever the result says "none".

    Cancellation and timeout kill every process of the sandbox (SIGKILL to the process group;
    the pid namespace takes the rest with it) and return within about a second with exit 137 and
    a "pyimg: ..." line at the end of the output. Nothing the command started outlives the call.

    With "none" the command runs on the host in the execroot with the same scrubbed environment,
    HOME/TMPDIR in empty host directories and host paths for caches and secrets: the file system,
    network and processes are not isolated (a daemon that calls setsid() can survive).

    Raises ValueError for a malformed spec and OSError when the sandbox itself cannot start.
    """
    isolation = isolation or probe_isolation()
    if isolation not in _ISOLATIONS:
        raise ValueError(f"unknown isolation {isolation!r}; expected one of {_ISOLATIONS}")
    _validate(spec)
    scratch = spec.scratch_dir or Path(tempfile.mkdtemp(prefix="pyimg-sandbox-"))
    try:
        (scratch / "home").mkdir(parents=True, exist_ok=True)
        (scratch / "tmp").mkdir(exist_ok=True)
        plan = _plan(spec, scratch, isolation)
        missing = _check_command(spec.argv[0], plan, spec.execroot, isolation)
        if missing:
            return SandboxResult(127, missing.encode(), isolation)
        if isolation == "bwrap":
            argv = _bwrap_argv(plan, spec.argv)
        elif isolation == "unshare":
            (scratch / "root").mkdir(exist_ok=True)
            argv = _unshare_argv(plan, spec.argv, scratch / "root")
        else:
            argv = list(spec.argv)
        return _run(argv, plan, spec, cancel, isolation)
    finally:
        # The sandbox's mounts live in its own mount namespace (private propagation), so the host
        # sees only plain directories here and this never reaches into the execroot or a cache.
        if spec.scratch_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)


def _validate(spec: SandboxSpec) -> None:
    if not spec.argv:
        raise ValueError("empty argv")
    if not spec.execroot.is_absolute() or not spec.execroot.is_dir():
        raise ValueError(f"execroot must be an existing absolute directory: {spec.execroot}")
    reserved = {"PATH", "HOME", "TMPDIR", "PWD", *spec.writable_dirs}
    for name in spec.env:
        if name in reserved or name.startswith("PYIMG_SECRET_"):
            raise ValueError(f"env variable {name} is set by the sandbox and cannot be declared")
    for name in spec.writable_dirs:
        if not _NAME_RE.match(name):
            raise ValueError(f"writable dir variable {name!r} is not a valid variable name")
    for sid in spec.secret_files:
        if not _NAME_RE.match(sid):
            raise ValueError(f"secret id {sid!r} must match [A-Za-z_][A-Za-z0-9_]*")
    for p in (
        *spec.read_only_host_paths,
        *spec.writable_dirs.values(),
        *spec.secret_files.values(),
    ):
        if not p.is_absolute():
            raise ValueError(f"host path must be absolute: {p}")
    for rel in spec.read_only_files:
        if os.path.isabs(rel) or ".." in Path(rel).parts or not (spec.execroot / rel).is_file():
            raise ValueError(f"read-only file must be a file of the execroot: {rel}")
    for p in spec.read_only_host_paths:
        if _under(str(p), "/pyimg") or str(p) in ("/", "/proc", "/dev", "/tmp"):
            raise ValueError(f"cannot expose {p} read-only: it is managed by the sandbox")


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


_MASK_LOCK = threading.Lock()
_MASK_SOURCES: list[tuple[str, str]] = []


def _mask_sources() -> tuple[str, str]:
    """An empty file and an empty directory, both mode 0000, that masked host paths are bound
    to; made once per process (not per command: a mode-0000 directory in each scratch made
    every sandbox's removal take the slow path) and removed when the process exits."""
    with _MASK_LOCK:
        if _MASK_SOURCES and not all(map(os.path.lexists, _MASK_SOURCES[0])):
            _MASK_SOURCES.clear()  # removed under a long-running process (a /tmp cleaner)
        if not _MASK_SOURCES:
            import atexit

            where = Path(tempfile.mkdtemp(prefix="pyimg-masks-"))
            (where / "file").touch(mode=0)
            (where / "dir").mkdir(mode=0)
            atexit.register(_remove_mask_sources, where)
            _MASK_SOURCES.append((str(where / "file"), str(where / "dir")))
        return _MASK_SOURCES[0]


def _remove_mask_sources(where: Path) -> None:
    try:
        (where / "dir").chmod(0o700)  # rmtree must list it
    except OSError:
        pass
    shutil.rmtree(where, ignore_errors=True)


def sanitized_etc(state_dir: Path, make: bool = True) -> Path | None:
    """A read-only copy of the host's /etc with what `host_secret_masks` hides masked in it,
    under `state_dir`; made once per content of /etc and reused by later builds. With
    `make=False`, or while another thread is making it, None unless it exists already.

    Why: bwrap pays for every mount (it re-reads the mount table for each), so one mount of this
    copy in place of /etc and its 11 mask mounts takes about a third off a short command's
    sandbox start (docs/benchmarks.md, "Per-action cost at scale"). Making it costs about 1,200
    file operations (0.3 s where hard links to /etc's files are allowed, 1 s or more where
    files must be copied), which is why the executor asks for it only once a build has run
    some commands. The copy is named by a digest of every entry's path, mode, size, mtime, inode and
    link target, from the walk `host_secret_masks` makes anyway, so an edited /etc gets a fresh
    copy. A masked file is an empty file of mode 0000 and a masked directory an empty one,
    exactly what the mask mounts show. It is written under a temporary name, fsynced and
    renamed: a crash leaves a temporary directory, never a partial copy under the final name.
    """
    key = str(state_dir)
    with _ETC_LOCK:
        made = _SANITIZED_ETC.get(key)
        if made is not None and made.is_dir():
            return made
        masks, entries = _scan_host(_SECRET_SCAN_DIRS, _SECRET_GLOBS)
        name, below = _etc_copy_name("/etc", masks, entries)
        if (state_dir / name).is_dir():
            _mark_used(state_dir / name)
            _SANITIZED_ETC[key] = state_dir / name
            return state_dir / name
    if not make or not _ETC_MAKE_LOCK.acquire(blocking=False):
        return None
    try:
        made = _make_sanitized_etc(state_dir, "/etc", name, masks, below)
    finally:
        _ETC_MAKE_LOCK.release()
    with _ETC_LOCK:
        _SANITIZED_ETC[key] = made
    return made


_ETC_LOCK = threading.Lock()
_ETC_MAKE_LOCK = threading.Lock()
_SANITIZED_ETC: dict[str, Path] = {}
_STALE_ETC_SECONDS = 24 * 3600


def _etc_copy_name(
    top: str, masks: tuple[tuple[str, bool], ...], entries: _Entries
) -> tuple[str, _Entries]:
    """The copy's directory name, and the entries below `top` it holds."""
    import hashlib

    masked = sorted((path, is_dir) for path, is_dir in masks if _under(path, top))
    below = tuple(e for e in entries if _under(e[0], top) and e[0] != top)
    fingerprint = hashlib.sha256(repr(masked).encode())
    for path, st, link in below:
        fingerprint.update(
            f"{path}\0{st.st_mode}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ino}\0{link}\n"
            .encode("utf-8", "surrogateescape")
        )
    return "etc-" + fingerprint.hexdigest()[:32], below


def _make_sanitized_etc(
    state_dir: Path, top: str, name: str, masks: tuple[tuple[str, bool], ...], below: _Entries
) -> Path:
    import stat

    masked = dict(masks)
    final = state_dir / name
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".{name}.{os.getpid()}"
    _remove_etc_copy(tmp)
    tmp.mkdir(mode=0o700)
    dir_modes: list[tuple[Path, os.stat_result]] = []
    may_link = True
    for path, st, link in below:
        dest = tmp / os.path.relpath(path, top)
        if path in masked:
            if masked[path]:
                dest.mkdir(mode=0)
            else:
                dest.touch(mode=0)
            os.chmod(dest, 0)  # whatever the umask
        elif stat.S_ISDIR(st.st_mode):
            dest.mkdir(mode=0o700)
            dir_modes.append((dest, st))
        elif stat.S_ISLNK(st.st_mode):
            os.symlink(link, dest)
        elif stat.S_ISREG(st.st_mode):
            try:
                # A hard link is the host file itself, as the plain /etc mount showed it; the
                # mount is read-only, so nothing reaches it through the sandbox.
                if may_link:
                    try:
                        os.link(path, dest, follow_symlinks=False)
                        continue
                    except OSError:
                        may_link = False  # another file system, or protected_hardlinks
                shutil.copyfile(path, dest, follow_symlinks=False)
                os.chmod(dest, st.st_mode & 0o777)  # never setuid/setgid: owned by this user
                os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
                _fsync(dest)
            except OSError:  # readable by "other" but not by us: hidden like a secret
                dest.unlink(missing_ok=True)
                dest.touch(mode=0)
                os.chmod(dest, 0)
        # Sockets, fifos and device nodes are not copied: a command has no use for them.
    # Children first. Every copied directory stays writable by its owner here, so that removing
    # the copy never needs a chmod (which, on a hard-linked file, would change the host's file);
    # in the sandbox the mount is read-only anyway.
    for dest, st in reversed(dir_modes):
        os.chmod(dest, st.st_mode & 0o777 | 0o700)
        os.utime(dest, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(tmp, os.stat(top).st_mode & 0o777 | 0o700)
    # The copy must be whole under its final name after a power loss too: every copied file was
    # synced, now every directory (not os.sync(): on a shared machine that waits for everyone's
    # dirty pages). Once per content of /etc.
    for dest, _ in reversed(dir_modes):
        _fsync(dest)
    _fsync(tmp)
    try:
        os.rename(tmp, final)
    except OSError:
        _remove_etc_copy(tmp)  # another process made it first
        if not final.is_dir():
            raise
    _fsync(state_dir)
    _prune_etc_copies(state_dir, keep=name)
    return final


def _mark_used(copy: Path) -> None:
    """Its mtime is when a process last started to use it: `_prune_etc_copies` spares it a day."""
    try:
        os.utime(copy)
    except OSError:
        pass


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune_etc_copies(state_dir: Path, keep: str) -> None:
    """Removes copies of older contents of /etc (and abandoned temporary ones) that no process
    started to use for a day: a build still running with one must keep it."""
    now = time.time()
    for entry in state_dir.iterdir():
        if entry.name == keep or "etc-" not in entry.name:
            continue
        try:
            if now - entry.lstat().st_mtime > _STALE_ETC_SECONDS:
                _remove_etc_copy(entry)
        except OSError:
            pass


def _remove_etc_copy(path: Path) -> None:
    """Removes a copy of /etc. Only its masked directories (mode 0000, empty) need a chmod to
    be listed; no file is ever chmodded, as files may be hard links to the host's /etc."""
    if not os.path.lexists(path):
        return
    for dirpath, dirnames, _ in os.walk(path):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if not os.path.islink(full) and os.lstat(full).st_mode & 0o700 != 0o700:
                os.chmod(full, 0o700)
    shutil.rmtree(path, ignore_errors=True)


def _plan(spec: SandboxSpec, scratch: Path, isolation: str) -> _Plan:
    """Mounts, environment and working directory for one run; "none" maps everything to the host."""
    execroot = str(spec.execroot)
    inside = isolation != "none"
    mounts: dict[str, _Mount] = {}

    def add(m: _Mount) -> None:
        mounts.setdefault(m.dest, m)

    def expose_ro(host: str) -> None:
        # A usr-merged host has /bin -> usr/bin: keep the symlink so paths resolve the same way
        # (and a path below it, /bin/sh, is then shown through it).
        if any(_under(host, m.dest) for m in mounts.values() if m.kind in ("ro", "symlink")):
            return
        if os.path.islink(host) and os.path.dirname(host) == "/":
            add(_Mount(host, "symlink", os.readlink(host)))
        elif os.path.isfile(host):
            add(_Mount(host, "ro-file", host))
        elif os.path.exists(host):
            add(_Mount(host, "ro", host))

    path_dirs: list[str] = []
    for d in spec.tool_dirs:
        host = str(spec.execroot / d)  # an absolute d replaces the execroot
        if _under(host, execroot):
            rel = os.path.relpath(host, execroot)
            path_dirs.append(
                os.path.normpath(os.path.join(EXECROOT_IN_SANDBOX, rel)) if inside else host
            )
        else:
            path_dirs.append(host)
    path_dirs.extend(BASE_PATH)

    env = dict(spec.env)
    env.setdefault("TZ", "UTC")
    env.setdefault("LC_ALL", "C.UTF-8")
    env.setdefault("LANG", "C.UTF-8")
    env.setdefault("SOURCE_DATE_EPOCH", "0")
    env["PATH"] = ":".join(path_dirs)

    if not inside:
        env["HOME"] = str(scratch / "home")
        env["TMPDIR"] = str(scratch / "tmp")
        env.update({k: str(v) for k, v in spec.writable_dirs.items()})
        env.update({f"PYIMG_SECRET_{k}": str(v) for k, v in spec.secret_files.items()})
        env["PWD"] = execroot
        return _Plan((), env, execroot)

    env["HOME"] = HOME_IN_SANDBOX
    env["TMPDIR"] = TMP_IN_SANDBOX
    add(_Mount(EXECROOT_IN_SANDBOX, "rw", execroot))
    for rel in spec.read_only_files:
        add(_Mount(f"{EXECROOT_IN_SANDBOX}/{Path(rel).as_posix()}", "ro-file", f"{execroot}/{rel}"))
    add(_Mount(HOME_IN_SANDBOX, "rw", str(scratch / "home")))
    add(_Mount(TMP_IN_SANDBOX, "rw", str(scratch / "tmp")))
    for name, host_dir in sorted(spec.writable_dirs.items()):
        dest = f"{CACHE_IN_SANDBOX}/{name}"
        add(_Mount(dest, "rw", str(host_dir)))
        env[name] = dest
    for sid, host_file in sorted(spec.secret_files.items()):
        dest = f"{SECRETS_IN_SANDBOX}/{sid}"
        add(_Mount(dest, "ro-file", str(host_file)))
        env[f"PYIMG_SECRET_{sid}"] = dest
    if spec.etc_dir is not None:
        add(_Mount("/etc", "ro", str(spec.etc_dir)))
    for host in _SYSTEM_DIRS:
        expose_ro(host)
    masks = host_secret_masks()
    if spec.etc_dir is not None:
        masks = tuple((host, is_dir) for host, is_dir in masks if not _under(host, "/etc"))
    if masks:
        masked_file, masked_dir = _mask_sources()
        for host, is_dir in masks:
            if any(_under(host, m.dest) for m in mounts.values() if m.kind == "ro"):
                kind, src = ("ro", masked_dir) if is_dir else ("ro-file", masked_file)
                add(_Mount(host, kind, str(src)))
    for p in spec.read_only_host_paths:
        expose_ro(os.path.normpath(str(p)))
    for path_dir in path_dirs:
        if not _under(path_dir, "/pyimg"):
            expose_ro(path_dir)
    # Parents before children: both bwrap and the unshare script mount in this order.
    ordered = sorted(mounts.values(), key=lambda m: Path(m.dest).parts)
    return _Plan(tuple(ordered), env, EXECROOT_IN_SANDBOX)


def _host_path(inside: str, plan: _Plan, depth: int = 0) -> str | None:
    """The host file the sandbox shows at `inside`, or None when it shows nothing there."""
    best: _Mount | None = None
    for m in plan.mounts:
        if _under(inside, m.dest) and (best is None or len(m.dest) > len(best.dest)):
            best = m
    if best is None or best.kind == "tmpfs":
        return None
    rest = inside[len(best.dest) :]
    if best.kind == "symlink":
        if depth > 8:
            return None
        target = os.path.normpath(os.path.join(os.path.dirname(best.dest), best.src))
        return _host_path(target + rest, plan, depth + 1)
    return best.src + rest


def _check_command(argv0: str, plan: _Plan, execroot: Path, isolation: str) -> str | None:
    """A clear message when argv0 cannot be executed in the sandbox; None when it can."""

    def executable(inside: str) -> bool:
        host = _host_path(inside, plan) if isolation != "none" else inside
        return host is not None and os.path.isfile(host) and os.access(host, os.X_OK)

    if "/" in argv0:
        inside = argv0 if argv0.startswith("/") else os.path.join(plan.cwd, argv0)
        if executable(os.path.normpath(inside)):
            return None
        return f"pyimg: cannot execute {argv0!r}: no such executable file in the sandbox\n"
    for d in plan.env["PATH"].split(":"):
        if executable(os.path.join(d, argv0)):
            return None
    return f"pyimg: command not found: {argv0!r} (PATH={plan.env['PATH']})\n"


def _bwrap_argv(plan: _Plan, argv: tuple[str, ...]) -> list[str]:
    # Flags: https://github.com/containers/bubblewrap/blob/main/bwrap.xml
    # --unshare-all = user, ipc, pid, net (only an unconfigured loopback), uts, cgroup namespaces;
    # --unshare-user plus --uid/--gid 0 gives the same fake root as `unshare --map-root-user`;
    # --cap-drop ALL because bwrap keeps capabilities when it is started by real root;
    # --die-with-parent: PR_SET_PDEATHSIG, the sandbox dies with bwrap (kills on cancel);
    # --new-session: setsid(), so the command cannot push input to our terminal (TIOCSTI).
    args = [
        shutil.which("bwrap") or "bwrap",
        "--unshare-all",
        "--unshare-user",
        "--uid",
        "0",
        "--gid",
        "0",
        "--cap-drop",
        "ALL",
        "--hostname",
        "localhost",
        "--die-with-parent",
        "--new-session",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ]
    for m in plan.mounts:
        if m.kind == "symlink":
            args += ["--symlink", m.src, m.dest]
        elif m.kind == "rw":
            args += ["--bind", m.src, m.dest]
        elif m.kind in ("ro", "ro-file"):
            args += ["--ro-bind", m.src, m.dest]
        else:
            args += ["--tmpfs", m.dest]
    # bwrap execvp()s argv[0] with the PATH it inherits, i.e. the sandbox's PATH.
    return [*args, "--chdir", plan.cwd, "--", *argv]


def _unshare_argv(plan: _Plan, argv: tuple[str, ...], root: Path) -> list[str]:
    """A shell script, run as root of new user/mount/pid/net/ipc/uts namespaces, that builds the
    same tree as bwrap on a tmpfs at `root`, chroots into it and drops all capabilities.

    Weaker than bwrap: chroot instead of pivot_root (the host tree stays mounted behind the root;
    without capabilities the command cannot chroot out, but this relies on setpriv being in /usr),
    and /dev is a handful of bind-mounted host nodes.
    Namespaces: https://man7.org/linux/man-pages/man7/user_namespaces.7.html (a read-only bind
    remount is allowed in a user namespace; clearing locked flags is not, hence `--bind -o ro`).
    """
    mount = _which_abs("mount")
    chroot = _which_abs("chroot")
    setpriv = shutil.which("setpriv", path="/usr/bin:/usr/sbin")
    r = shlex.quote(str(root))
    q = shlex.quote
    lines = [
        'fail() { echo "pyimg: sandbox setup failed: $1" >&2; exit 125; }',
        f"{mount} -t tmpfs -o mode=0755 pyimg {r} || fail 'tmpfs root'",
        f"mkdir -p {r}/proc {r}/dev {r}/pyimg",
        # A new procfs for the new pid namespace (it shows only the sandbox's processes).
        f"{mount} -t proc proc {r}/proc || fail 'mount /proc'",
        f"{mount} -t tmpfs -o mode=0755 dev {r}/dev || fail 'mount /dev'",
        f"mkdir -p {r}/dev/shm && {mount} -t tmpfs -o mode=1777 shm {r}/dev/shm",
        f"ln -s /proc/self/fd {r}/dev/fd",
        f"ln -s /proc/self/fd/0 {r}/dev/stdin",
        f"ln -s /proc/self/fd/1 {r}/dev/stdout",
        f"ln -s /proc/self/fd/2 {r}/dev/stderr",
    ]
    for node in _DEV_NODES:
        if os.path.exists(f"/dev/{node}"):
            lines.append(f"touch {r}/dev/{node} && {mount} --bind /dev/{node} {r}/dev/{node}")
    for m in plan.mounts:
        dest = r + q(m.dest)
        src = q(m.src)
        what = q(m.dest)
        if m.kind == "symlink":
            lines.append(f"ln -s {src} {dest} || fail {what}")
        elif m.kind == "rw":
            lines.append(f"mkdir -p {dest} && {mount} --bind {src} {dest} || fail {what}")
        elif m.kind == "ro":
            lines.append(f"mkdir -p {dest} && {mount} --bind -o ro {src} {dest} || fail {what}")
        elif m.kind == "ro-file":
            lines.append(
                # touch only a missing file: touching one on a read-only mount (/etc) fails.
                f"mkdir -p $(dirname {dest}) && {{ [ -e {dest} ] || touch {dest}; }} && "
                f"{mount} --bind -o ro {src} {dest} || fail {what}"
            )
        else:
            lines.append(f"mkdir -p {dest} && {mount} -t tmpfs tmpfs {dest} || fail {what}")
    lines.append("hostname localhost 2>/dev/null || true")
    drop = f"{setpriv} --bounding-set=-all --inh-caps=-all -- " if setpriv else ""
    # env -C chdirs after the chroot; env then execvp()s argv[0] with the sandbox's PATH.
    cwd = q(plan.cwd)
    lines.append(f"PWD={cwd}; export PWD")
    lines.append(f'exec {chroot} {r} {drop}/usr/bin/env -C {cwd} -- "$@"')
    script = "\n".join(lines)
    unshare = _which_abs("unshare")
    # --kill-child: SIGKILL to the namespace's init when unshare dies, which takes the whole pid
    # namespace down (https://man7.org/linux/man-pages/man7/pid_namespaces.7.html).
    flags = ["--user", "--map-root-user", "--net", "--mount", "--pid", "--ipc", "--uts"]
    return [unshare, *flags, "--fork", "--kill-child", "/bin/sh", "-c", script, "pyimg", *argv]


def _which_abs(name: str) -> str:
    found = shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")
    if found is None:
        raise OSError(f"{name} not found")
    return found


def _run(
    argv: list[str],
    plan: _Plan,
    spec: SandboxSpec,
    cancel: threading.Event | None,
    isolation: str,
) -> SandboxResult:
    cwd = str(spec.execroot) if isolation == "none" else "/"
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=plan.env,
            cwd=cwd,
            umask=0o022,
            start_new_session=True,  # our own process group, killed as a whole
        )
    except OSError as e:
        # Only reachable with isolation "none" (the sandboxes are found by absolute path).
        return SandboxResult(127, f"pyimg: cannot execute {argv[0]!r}: {e}\n".encode(), isolation)
    assert proc.stdout is not None
    exit_fd = _exit_fd(proc.pid)
    try:
        tail, killed_because = _watch(proc, exit_fd, spec, cancel, isolation)
    finally:
        if exit_fd is not None:
            os.close(exit_fd)
    proc.stdout.close()
    code = proc.wait()
    if code < 0:
        code = 128 - code
    if killed_because:
        tail += f"\npyimg: killed: {killed_because}\n".encode()
        del tail[: max(0, len(tail) - OUTPUT_TAIL_BYTES)]
    return SandboxResult(code, bytes(tail), isolation, timed_out=killed_because.startswith("timed"))


def _watch(
    proc: subprocess.Popen[bytes],
    exit_fd: int | None,
    spec: SandboxSpec,
    cancel: threading.Event | None,
    isolation: str,
) -> tuple[bytearray, str]:
    """Collect the tail of the command's output until it exits and its output ends (or stays
    idle); kill it on cancel or timeout. Returns the tail and why it was killed ("" if not).

    The loop wakes on output, on the command's exit (`exit_fd`, a pidfd) and every
    _POLL_SECONDS for cancellation and the timeout. A command that closes its output a moment
    before it exits (one short action in six, two at a time) used to cost a whole poll: 50 ms
    (tools/bench/sandbox.py).
    """
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    tail = bytearray()
    deadline = None if spec.timeout is None else time.monotonic() + spec.timeout
    killed_because = ""
    exited_at: float | None = None
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        if exit_fd is not None:
            sel.register(exit_fd, selectors.EVENT_READ)
        eof = False
        while True:
            got_data = False
            if eof and exit_fd is None:
                _wait_briefly(proc)  # the command closed its output but still runs
            for key, _ in sel.select(_POLL_SECONDS) if sel.get_map() else ():
                if key.fd == exit_fd:
                    sel.unregister(exit_fd)  # it exited (readable from now on): reaped below
                    continue
                chunk = _read(fd)
                if chunk == b"":
                    eof = True  # every process holding the pipe has closed it
                    sel.unregister(fd)
                elif chunk:
                    got_data = True
                    tail += chunk
                    if len(tail) > OUTPUT_TAIL_BYTES:
                        del tail[: len(tail) - OUTPUT_TAIL_BYTES]
            if proc.poll() is None:
                if cancel is not None and cancel.is_set() and not killed_because:
                    killed_because = "cancelled"
                    _kill(proc)
                elif deadline is not None and time.monotonic() > deadline and not killed_because:
                    killed_because = f"timed out after {spec.timeout:g}s"
                    _kill(proc)
                continue
            if exited_at is None:
                exited_at = time.monotonic()
                if isolation == "none":
                    _killpg(proc.pid)  # leftovers of the group ("none" has no pid namespace)
            if eof:
                break
            if got_data:
                exited_at = time.monotonic()
            elif time.monotonic() - exited_at > _DRAIN_IDLE_SECONDS:
                break
    return tail, killed_because


def _exit_fd(pid: int) -> int | None:
    """A descriptor that becomes readable when process `pid` exits (Linux 5.3+), or None."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _wait_briefly(proc: subprocess.Popen[bytes]) -> None:
    """Wait for `proc` to exit, at most one poll interval (where there is no pidfd)."""
    try:
        proc.wait(timeout=_POLL_SECONDS)
    except subprocess.TimeoutExpired:
        pass


def _read(fd: int) -> bytes | None:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None


def _kill(proc: subprocess.Popen[bytes]) -> None:
    # SIGKILL to bwrap/unshare (our process group); --die-with-parent / --kill-child then kill the
    # namespace's init, and the kernel kills everything else in the pid namespace.
    _killpg(proc.pid)
    try:
        proc.kill()
    except ProcessLookupError:
        pass


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
