"""Tests for pyimg.core.sandbox: each guarantee of the sandbox, on every mechanism that works here."""

from __future__ import annotations

import functools
import json
import os
import socket
import subprocess
import tempfile
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
from pyimg.core import sandbox
from pyimg.core.sandbox import (
    EXECROOT_IN_SANDBOX,
    OUTPUT_TAIL_BYTES,
    SandboxResult,
    SandboxSpec,
    probe_isolation,
    run_sandboxed,
)

ENGINE = Path(__file__).resolve().parents[3] / "engine"


@functools.cache
def _available(isolation: str) -> bool:
    with tempfile.TemporaryDirectory() as d:
        spec = SandboxSpec(argv=("true",), execroot=Path(d), env={})
        try:
            return run_sandboxed(spec, isolation=isolation).exit_code == 0
        except OSError:
            return False


@pytest.fixture(params=["bwrap", "unshare"])
def isolated(request: pytest.FixtureRequest) -> str:
    if not _available(request.param):
        pytest.skip(f"{request.param} does not work on this machine")
    return request.param


@pytest.fixture(params=["bwrap", "unshare", "none"])
def any_isolation(request: pytest.FixtureRequest) -> str:
    if not _available(request.param):
        pytest.skip(f"{request.param} does not work on this machine")
    return request.param


@pytest.fixture
def execroot(tmp_path: Path) -> Path:
    d = tmp_path / "execroot"
    (d / "pkg").mkdir(parents=True)
    (d / "pkg" / "src.txt").write_text("declared input\n")
    (d / "pyimg-out" / "pkg").mkdir(parents=True)
    return d


def sh(script: str, execroot: Path, isolation: str, **kw: object) -> SandboxResult:
    spec = SandboxSpec(argv=("/bin/sh", "-c", script), execroot=execroot, **kw)  # type: ignore[arg-type]
    return run_sandboxed(spec, isolation=isolation)


def _env_of(output: bytes) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.decode().splitlines() if "=" in line)


def _processes_with(marker: str) -> list[str]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cmdline = (p / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline:
                found.append(p.name)
    return found


def _wait_gone(marker: str, within: float = 2.0) -> list[str]:
    end = time.monotonic() + within
    while (left := _processes_with(marker)) and time.monotonic() < end:
        time.sleep(0.02)
    return left


def test_probe_isolation_is_memoised_and_valid() -> None:
    first = probe_isolation()
    assert first in ("bwrap", "unshare", "none")
    assert probe_isolation() == first
    # The CI machine (DESIGN.md, "Tests on real components") has both mechanisms.
    if Path("/usr/bin/bwrap").exists():
        assert first == "bwrap"
        # Unprivileged user namespaces work, so the fallback must work too (no silent skips).
        assert _available("unshare")


def test_environment_is_scrubbed(
    execroot: Path, any_isolation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEAKY_HOST_VAR", "leak")
    monkeypatch.setenv("TZ", "America/New_York")
    result = run_sandboxed(
        SandboxSpec(argv=("env",), execroot=execroot, env={"CFLAGS": "-O2"}),
        isolation=any_isolation,
    )
    assert result.exit_code == 0, result.output
    assert result.isolation == any_isolation
    env = _env_of(result.output)
    assert set(env) == {
        "CFLAGS",
        "PATH",
        "TZ",
        "LC_ALL",
        "LANG",
        "SOURCE_DATE_EPOCH",
        "HOME",
        "TMPDIR",
        "PWD",
    }
    assert env["CFLAGS"] == "-O2"
    assert env["PATH"] == "/usr/bin:/bin"
    assert (env["TZ"], env["LC_ALL"], env["LANG"]) == ("UTC", "C.UTF-8", "C.UTF-8")
    assert env["SOURCE_DATE_EPOCH"] == "0"
    if any_isolation != "none":
        assert (env["HOME"], env["TMPDIR"]) == ("/pyimg/home", "/tmp")
        assert env["PWD"] == EXECROOT_IN_SANDBOX
    else:
        assert env["PWD"] == str(execroot)


def test_declared_source_date_epoch_and_fresh_home(execroot: Path, any_isolation: str) -> None:
    result = sh(
        'echo "$SOURCE_DATE_EPOCH"; ls -A "$HOME" "$TMPDIR" | wc -l; touch "$HOME/x" "$TMPDIR/y"',
        execroot,
        any_isolation,
        env={"SOURCE_DATE_EPOCH": "1700000000"},
    )
    assert result.exit_code == 0, result.output
    lines = result.output.decode().split()
    # `ls -A a b` prints two headers and a blank line when both are empty.
    assert lines[0] == "1700000000"
    assert lines[1] == "3"


def test_tool_dirs_come_first_on_path(execroot: Path, any_isolation: str) -> None:
    tool = execroot / "tools" / "bin" / "mytool"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\necho tool ran in $(pwd)\n")
    tool.chmod(0o755)
    result = run_sandboxed(
        SandboxSpec(argv=("mytool",), execroot=execroot, env={}, tool_dirs=(Path("tools/bin"),)),
        isolation=any_isolation,
    )
    assert result.exit_code == 0, result.output
    cwd = EXECROOT_IN_SANDBOX if any_isolation != "none" else str(execroot)
    assert result.output.decode() == f"tool ran in {cwd}\n"


def test_umask_is_022(execroot: Path, any_isolation: str) -> None:
    old = os.umask(0o077)
    try:
        result = sh(
            "umask; echo x > pyimg-out/pkg/f; stat -c %a pyimg-out/pkg/f",
            execroot,
            any_isolation,
            env={},
        )
    finally:
        os.umask(old)
    assert result.output.decode().split() == ["0022", "644"]
    assert (execroot / "pyimg-out" / "pkg" / "f").read_text() == "x\n"


def test_execroot_is_at_a_fixed_path(execroot: Path, isolated: str) -> None:
    result = sh("pwd; cat pkg/src.txt", execroot, isolated, env={})
    assert result.output.decode() == f"{EXECROOT_IN_SANDBOX}\ndeclared input\n"


def test_no_network(execroot: Path, any_isolation: str) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.2)
        port = server.getsockname()[1]
        result = run_sandboxed(
            SandboxSpec(
                argv=("bash", "-c", f"echo hello > /dev/tcp/127.0.0.1/{port} && echo CONNECTED"),
                execroot=execroot,
                env={},
                timeout=5,
            ),
            isolation=any_isolation,
        )
        try:
            conn, _ = server.accept()
            conn.close()
            reached = True
        except TimeoutError:
            reached = False
    if any_isolation == "none":
        # The control: without a sandbox the same command reaches the host.
        assert reached and b"CONNECTED" in result.output, result
    else:
        assert not reached
        assert result.exit_code != 0
        assert b"CONNECTED" not in result.output


def test_undeclared_files_are_not_readable(tmp_path: Path, execroot: Path, isolated: str) -> None:
    workspace_file = tmp_path / "workspace" / "undeclared.txt"
    workspace_file.parent.mkdir()
    workspace_file.write_text("UNDECLARED-CONTENT")
    home_file = tmp_path / "home" / ".netrc"
    home_file.parent.mkdir()
    home_file.write_text("machine example.com password hunter2")
    result = sh(
        f"cat {workspace_file}; cat {home_file}; ls {tmp_path}; ls /root /home /work; echo done",
        execroot,
        isolated,
        env={},
    )
    out = result.output.decode()
    assert "UNDECLARED-CONTENT" not in out
    assert "hunter2" not in out
    assert out.endswith("done\n")
    assert out.count("No such file or directory") == 6


def test_read_only_host_paths(tmp_path: Path, execroot: Path, isolated: str) -> None:
    toolchain = tmp_path / "toolchain"
    toolchain.mkdir()
    (toolchain / "include.h").write_text("#define X 1\n")
    single = tmp_path / "license.txt"
    single.write_text("MIT\n")
    result = sh(
        f"cat {toolchain}/include.h {single}; touch {toolchain}/new && echo WROTE; "
        "touch /usr/new && echo WROTE",
        execroot,
        isolated,
        env={},
        read_only_host_paths=(toolchain, single),
    )
    assert b"#define X 1\nMIT\n" in result.output
    assert b"WROTE" not in result.output
    assert not (toolchain / "new").exists()


def test_no_processes_left_behind(execroot: Path, any_isolation: str) -> None:
    marker = f"98{uuid.uuid4().int % 10**6}.5"
    result = sh(f"sleep {marker} & echo started", execroot, any_isolation, env={})
    assert result.output == b"started\n"
    assert _wait_gone(marker) == []


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_cancel_and_timeout_kill_everything_promptly(
    execroot: Path, any_isolation: str, how: str
) -> None:
    marker = f"97{uuid.uuid4().int % 10**6}.5"
    cancel = threading.Event()
    spec = SandboxSpec(
        argv=("/bin/sh", "-c", f"sleep {marker} & echo started; sleep {marker}"),
        execroot=execroot,
        env={},
        timeout=1.0 if how == "timeout" else None,
    )
    # One second leaves the sandbox time to start on a loaded machine (the masks of host secret
    # files make `unshare` take tens of ms); "promptly" means long before the sleeps would end.
    if how == "cancel":
        threading.Timer(1.0, cancel.set).start()
    start = time.monotonic()
    result = run_sandboxed(spec, cancel, isolation=any_isolation)
    elapsed = time.monotonic() - start
    assert elapsed < 10
    assert result.exit_code == 137
    assert result.timed_out is (how == "timeout")
    assert result.output.startswith(b"started\n")
    assert (b"cancelled" if how == "cancel" else b"timed out after 1") in result.output
    assert _wait_gone(marker, within=1.0) == []


def test_secret_files_are_read_only_and_only_by_path(
    tmp_path: Path, execroot: Path, isolated: str
) -> None:
    secret = tmp_path / "npm_token"
    secret.write_text("s3cr3t-value")
    result = sh(
        'cat "$PYIMG_SECRET_npm_token"; echo; echo "$PYIMG_SECRET_npm_token"; '
        'echo x > "$PYIMG_SECRET_npm_token" || echo READONLY; env',
        execroot,
        isolated,
        env={},
        secret_files={"npm_token": secret},
    )
    lines = result.output.decode().splitlines()
    assert lines[:2] == ["s3cr3t-value", "/pyimg/secrets/npm_token"]
    assert "READONLY" in lines
    assert secret.read_text() == "s3cr3t-value"
    env = _env_of(result.output)
    assert env["PYIMG_SECRET_npm_token"] == "/pyimg/secrets/npm_token"
    assert not any("s3cr3t" in v for v in env.values())


def test_writable_dirs(tmp_path: Path, execroot: Path, any_isolation: str) -> None:
    cache = tmp_path / "go-build"
    cache.mkdir()
    (cache / "old").write_text("from last build\n")
    result = sh(
        'cat "$GOCACHE/old"; echo new > "$GOCACHE/new"; echo "$GOCACHE"',
        execroot,
        any_isolation,
        env={},
        writable_dirs={"GOCACHE": cache},
    )
    assert result.exit_code == 0, result.output
    inside = "/pyimg/cache/GOCACHE" if any_isolation != "none" else str(cache)
    assert result.output.decode().splitlines() == ["from last build", inside]
    assert (cache / "new").read_text() == "new\n"


def test_exit_code_and_interleaved_output(execroot: Path, any_isolation: str) -> None:
    result = sh("echo out; echo err >&2; exit 3", execroot, any_isolation, env={})
    assert (result.exit_code, result.output) == (3, b"out\nerr\n")


@pytest.mark.parametrize("pidfd", [True, False], ids=["pidfd", "no-pidfd"])
def test_a_command_that_closes_its_output_before_exiting(
    execroot: Path, any_isolation: str, pidfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The output before the close is kept and the exit code is the command's, whether its exit
    is seen through a pidfd or (older kernels) by waiting on the process."""
    if not pidfd:
        monkeypatch.setattr(sandbox, "_exit_fd", lambda pid: None)
    result = sh("echo before; exec >&- 2>&-; sleep 0.2; exit 4", execroot, any_isolation, env={})
    assert (result.exit_code, result.output) == (4, b"before\n")


def test_output_keeps_the_tail(execroot: Path, any_isolation: str) -> None:
    result = sh("head -c 300000 /dev/zero | tr '\\0' a; echo END", execroot, any_isolation, env={})
    assert result.exit_code == 0
    assert len(result.output) == OUTPUT_TAIL_BYTES
    assert result.output.endswith(b"aaaEND\n")


def test_missing_command_is_a_clear_failure(execroot: Path, any_isolation: str) -> None:
    result = run_sandboxed(
        SandboxSpec(argv=("no-such-tool", "--help"), execroot=execroot, env={}),
        isolation=any_isolation,
    )
    assert result.exit_code == 127
    assert b"command not found: 'no-such-tool'" in result.output
    result = run_sandboxed(
        SandboxSpec(argv=("./pkg/src.txt",), execroot=execroot, env={}), isolation=any_isolation
    )
    assert result.exit_code == 127
    assert b"cannot execute './pkg/src.txt'" in result.output


def test_host_only_absolute_tool_is_not_found_inside(
    tmp_path: Path, execroot: Path, isolated: str
) -> None:
    tool = tmp_path / "hosttool"
    tool.write_text("#!/bin/sh\necho ran\n")
    tool.chmod(0o755)
    result = run_sandboxed(
        SandboxSpec(argv=(str(tool),), execroot=execroot, env={}), isolation=isolated
    )
    assert result.exit_code == 127


@pytest.mark.parametrize("name", ["PATH", "HOME", "TMPDIR", "PWD", "PYIMG_SECRET_x"])
def test_reserved_env_cannot_be_declared(execroot: Path, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        run_sandboxed(SandboxSpec(argv=("true",), execroot=execroot, env={name: "x"}))


def test_bad_secret_id_is_rejected(tmp_path: Path, execroot: Path) -> None:
    with pytest.raises(ValueError, match="secret id"):
        run_sandboxed(
            SandboxSpec(
                argv=("true",), execroot=execroot, env={}, secret_files={"a-b": tmp_path / "s"}
            )
        )


_UNPRIVILEGED = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from pyimg.core.sandbox import SandboxSpec, probe_isolation, run_sandboxed
    report = {"uid": os.getuid(), "probe": probe_isolation()}
    for iso in ("bwrap", "unshare"):
        r = run_sandboxed(
            SandboxSpec(argv=("sh", "-c", "id -u; ls /root 2>&1; echo x > out; cat out"),
                        execroot=Path(sys.argv[2]), env={}),
            isolation=iso,
        )
        report[iso] = [r.exit_code, r.output.decode()]
    print(json.dumps(report))
    """
)


def _world_readable(path: Path) -> bool:
    return all(p.stat().st_mode & 0o005 == 0o005 for p in (path, *path.parents))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch to an unprivileged user")
@pytest.mark.skipif(not _world_readable(ENGINE), reason="the checkout is not readable by nobody")
def test_works_rootless() -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as d:
        Path(d).chmod(0o755)
        execroot = Path(d) / "execroot"
        execroot.mkdir()
        os.chown(execroot, 65534, 65534)
        proc = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3"]
            + ["-c", _UNPRIVILEGED, str(ENGINE), str(execroot)],
            capture_output=True,
            env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1", "TMPDIR": "/tmp"},
            timeout=30,
        )
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        assert report["uid"] == 65534
        assert report["probe"] == "bwrap"
        for iso in ("bwrap", "unshare"):
            code, out = report[iso]
            assert code == 0, out
            assert out.splitlines()[0] == "0"  # fake root inside the user namespace
            assert "No such file or directory" in out
            assert out.endswith("x\n")
        # Files it writes belong to the real (unprivileged) user on the host.
        assert (execroot / "out").stat().st_uid == 65534


def test_read_only_files_cannot_be_changed_nor_the_mount_undone(execroot: Path, isolated: str) -> None:
    src = execroot / "pkg" / "src.txt"
    src.chmod(0o444)
    before = src.stat()
    script = (
        # Subshells: a failed redirection ends a non-interactive sh.
        "chmod 0755 pkg/src.txt; chmod u+w pkg/src.txt; (echo poison >> pkg/src.txt);"
        " (: > pkg/src.txt); echo x > other; mv -f other pkg/src.txt; rm -f pkg/src.txt;"
        " ln pkg/src.txt link; umount pkg/src.txt;"
        " mount -o remount,rw,bind pkg/src.txt;"
        # A nested user namespace has every capability, but over locked mounts only.
        " unshare -Urm sh -c 'umount pkg/src.txt; mount -o remount,rw,bind pkg/src.txt;"
        " (echo poison >> pkg/src.txt)'; cat pkg/src.txt"
    )
    result = sh(script, execroot, isolated, env={}, read_only_files=("pkg/src.txt",))
    assert result.output.endswith(b"declared input\n"), result.output
    after = src.stat()
    assert (after.st_mode, after.st_size, after.st_mtime_ns, after.st_ino, after.st_ctime_ns) == (
        before.st_mode, before.st_size, before.st_mtime_ns, before.st_ino, before.st_ctime_ns)
    assert not (execroot / "link").exists()


def test_read_only_files_must_be_files_of_the_execroot(execroot: Path) -> None:
    for bad in ("/etc/passwd", "../x", "pkg/missing"):
        with pytest.raises(ValueError, match="read-only file"):
            run_sandboxed(SandboxSpec(argv=("true",), execroot=execroot, env={},
                                      read_only_files=(bad,)))


def test_secret_masks_are_what_other_users_cannot_read(tmp_path: Path) -> None:
    etc = tmp_path / "etc"
    (etc / "ssh").mkdir(parents=True)
    (etc / "private").mkdir(mode=0o700)
    (etc / "private" / "key").write_text("k")
    (etc / "opasswd").write_text("o")
    (etc / "opasswd").chmod(0o600)
    (etc / "ssh" / "ssh_host_ed25519_key").write_text("k")
    (etc / "ssh" / "ssh_host_ed25519_key").chmod(0o644)  # world-readable by mistake: by name
    (etc / "ssh" / "ssh_config").write_text("c")
    (etc / "link").symlink_to("opasswd")
    masks = sandbox._host_secret_masks((str(etc),), (f"{etc}/ssh/ssh_host_*key",))
    assert masks == (
        (f"{etc}/opasswd", False),
        (f"{etc}/private", True),
        (f"{etc}/ssh/ssh_host_ed25519_key", False),
    )


def test_host_secret_files_are_unreadable(execroot: Path, isolated: str) -> None:
    masks = sandbox.host_secret_masks()
    files = [p for p, is_dir in masks if not is_dir]
    dirs = [p for p, is_dir in masks if is_dir]
    if Path("/etc/shadow").exists():
        assert ("/etc/shadow", False) in masks and ("/etc/gshadow", False) in masks
    script = "for f in $0; do cat $f; done; for d in $1; do ls -A $d; done; echo end"
    spec = SandboxSpec(argv=("/bin/sh", "-c", script, " ".join(files), " ".join(dirs)),
                       execroot=execroot, env={})
    result = run_sandboxed(spec, isolation=isolated)
    out = result.output.decode()
    assert out.endswith("end\n")
    for path in files + dirs:
        assert f"{path}: Permission denied" in out or f"'{path}': Permission denied" in out, out
    # As root (CI runs these tests both ways) the host could read them all: none leaked in.
    for path in files:
        try:
            secret = Path(path).read_text(errors="replace").strip()
        except OSError:
            continue
        for line in secret.splitlines():
            assert line.strip() == "" or line not in out


def _fake_etc(tmp_path: Path) -> Path:
    etc = tmp_path / "etc"
    (etc / "ssh").mkdir(parents=True)
    (etc / "private").mkdir(mode=0o700)
    (etc / "private" / "key").write_text("private key")
    (etc / "opasswd").write_text("old passwords")
    (etc / "opasswd").chmod(0o600)
    (etc / "ssh" / "ssh_host_ed25519_key").write_text("host key")
    (etc / "ssh" / "ssh_host_ed25519_key").chmod(0o644)
    (etc / "ssh" / "ssh_config").write_text("config")
    (etc / "ro").mkdir()
    (etc / "ro" / "f").write_text("in a read-only directory")
    (etc / "ro").chmod(0o555)
    (etc / "link").symlink_to("ssh/ssh_config")
    return etc


def _copy_of(etc: Path, state: Path) -> Path:
    sandbox._scan_host.cache_clear()  # a new process: /etc is walked again
    masks, entries = sandbox._scan_host((str(etc),), (f"{etc}/ssh/ssh_host_*key",))
    name, below = sandbox._etc_copy_name(str(etc), masks, entries)
    return sandbox._make_sanitized_etc(state, str(etc), name, masks, below)


def test_sanitized_etc_holds_what_the_masks_show(tmp_path: Path) -> None:
    etc = _fake_etc(tmp_path)
    copy = _copy_of(etc, tmp_path / "state")
    # What every user may read is there, as it is; a masked entry is empty and mode 0000.
    assert (copy / "ssh" / "ssh_config").read_text() == "config"
    assert (copy / "ro" / "f").read_text() == "in a read-only directory"
    assert os.readlink(copy / "link") == "ssh/ssh_config"
    for masked in ("opasswd", "ssh/ssh_host_ed25519_key", "private"):
        st = os.lstat(copy / masked)
        assert st.st_mode & 0o7777 == 0 and (st.st_size == 0 or (copy / masked).is_dir())
    (copy / "private").chmod(0o700)
    assert list((copy / "private").iterdir()) == []
    (copy / "private").chmod(0)
    # The same content of /etc is the same copy; an edited /etc gets another one.
    assert _copy_of(etc, tmp_path / "state") == copy
    (etc / "ssh" / "ssh_config").write_text("edited config")
    os.utime(etc / "ssh" / "ssh_config", ns=(1, 1))
    edited = _copy_of(etc, tmp_path / "state")
    assert edited != copy and (edited / "ssh" / "ssh_config").read_text() == "edited config"
    # Removing a copy never changes a host file (the copy's files may be hard links to them).
    sandbox._remove_etc_copy(edited)
    assert not edited.exists()
    assert (etc / "opasswd").stat().st_mode & 0o777 == 0o600
    assert (etc / "ro" / "f").read_text() == "in a read-only directory"
    (etc / "ro").chmod(0o755)


def test_sanitized_etc_is_made_only_when_asked_and_then_reused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    sandbox._SANITIZED_ETC.clear()
    assert sandbox.sanitized_etc(state, make=False) is None
    made = sandbox.sanitized_etc(state)
    assert made is not None and made.parent == state
    sandbox._SANITIZED_ETC.clear()  # a later process finds it without making it again
    assert sandbox.sanitized_etc(state, make=False) == made
    sandbox._remove_etc_copy(state)


def test_host_secret_files_are_unreadable_through_the_sanitized_etc(
    execroot: Path, isolated: str, tmp_path: Path
) -> None:
    masks = sandbox.host_secret_masks()
    files = [p for p, is_dir in masks if not is_dir]
    dirs = [p for p, is_dir in masks if is_dir]
    etc_dir = sandbox.sanitized_etc(tmp_path / "state")
    script = "for f in $0; do cat $f; done; for d in $1; do ls -A $d; done; echo end"
    spec = SandboxSpec(argv=("/bin/sh", "-c", script, " ".join(files), " ".join(dirs)),
                       execroot=execroot, env={}, etc_dir=etc_dir)
    plan = sandbox._plan(spec, tmp_path, isolated)
    assert [m for m in plan.mounts if sandbox._under(m.dest, "/etc")] == [
        sandbox._Mount("/etc", "ro", str(etc_dir))]
    out = run_sandboxed(spec, isolation=isolated).output.decode()
    assert out.endswith("end\n")
    for path in files + dirs:
        assert f"{path}: Permission denied" in out or f"'{path}': Permission denied" in out, out
    for path in files:
        try:
            secret = Path(path).read_text(errors="replace").strip()
        except OSError:
            continue
        for line in secret.splitlines():
            assert line.strip() == "" or line not in out


def test_sanitized_etc_shows_the_same_etc_as_the_masks(
    execroot: Path, isolated: str, tmp_path: Path
) -> None:
    # Names, link texts, sizes and contents of every readable file: what a command could tell
    # apart (a link's target is not read: /etc/mtab shows the mount table, which differs).
    script = ("cd /etc && find . -path ./ssl/private -prune -o -print | LC_ALL=C sort | "
              "while read -r f; do if [ -L \"$f\" ]; then echo \"$f -> $(readlink \"$f\")\"; "
              "elif [ -f \"$f\" ] && [ -r \"$f\" ]; then "
              "echo \"$f $(cksum < \"$f\")\"; else echo \"$f\"; fi; done")
    seen = []
    for etc_dir in (None, sandbox.sanitized_etc(tmp_path / "state")):
        spec = SandboxSpec(argv=("/bin/sh", "-c", script), execroot=execroot, env={},
                           etc_dir=etc_dir)
        result = run_sandboxed(spec, isolation=isolated)
        seen.append(result.output.decode())
    assert seen[0] == seen[1]
    assert "./passwd " in seen[1]
