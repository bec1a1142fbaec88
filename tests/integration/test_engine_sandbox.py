"""Actions are hermetic: undeclared files, the network and the host environment stay out."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from pathlib import Path

import pytest
from pyimg.core.sandbox import probe_isolation

needs_isolation = pytest.mark.skipif(probe_isolation() == "none", reason="no namespaces here")


@needs_isolation
def test_undeclared_workspace_file_is_unreadable(ws):
    ws.write("p/secret.txt", "do not read\n")
    ws.write("p/BUILD.pyimg", """
        genrule(
            name = "peek",
            outs = ["peek.txt"],
            cmd = "cat p/secret.txt > $@ || cat {ws.root}/p/secret.txt > $@",
        )
    """.replace("{ws.root}", str(ws.root)))
    r = ws.run("build", "//p:peek")
    assert r.code == 1
    assert "No such file" in r.err


@needs_isolation
def test_host_loopback_server_is_unreachable(ws):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    server.settimeout(5)
    accepted = []

    def accept() -> None:
        try:
            conn, _ = server.accept()
            accepted.append(True)
            conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    ws.write("p/BUILD.pyimg", f"""
        genrule(
            name = "net",
            outs = ["net.txt"],
            cmd = "python3 -c 'import socket; socket.create_connection((\\"127.0.0.1\\", {port}), timeout=2)' && echo reached > $@",
        )
    """)
    r = ws.run("build", "//p:net")
    server.close()
    thread.join(timeout=6)
    assert r.code == 1
    assert accepted == []


def test_environment_is_scrubbed(ws, monkeypatch):
    monkeypatch.setenv("LEAKY_VARIABLE", "leak")
    ws.write("p/BUILD.pyimg", """
        genrule(name = "env", outs = ["env.txt"], cmd = "env | cut -d= -f1 | sort > $@", env = {"DECLARED": "yes"})
    """)
    r = ws.run("build", "//p:env")
    assert r.code == 0, r.err
    names = ws.out("p/env.txt").read_text().split()
    assert "LEAKY_VARIABLE" not in names
    assert "DECLARED" in names
    assert set(names) <= {"DECLARED", "HOME", "LANG", "LC_ALL", "PATH", "PWD", "SOURCE_DATE_EPOCH",
                          "TMPDIR", "TZ", "SHLVL", "_"}


def test_outputs_do_not_depend_on_the_workspace_path(tmp_path):
    from workspace_helpers import Workspace

    digests = []
    for name in ("one", "two/deeper"):
        w = Workspace(tmp_path / name, tmp_path / f"cache-{name.replace('/', '-')}")
        w.write("p/BUILD.pyimg", 'genrule(name = "pwd", outs = ["pwd.txt"], cmd = "pwd > $@; echo $$PATH >> $@")')
        assert w.run("build", "//p:pwd").code == 0
        digests.append(w.out("p/pwd.txt").read_text())
    assert digests[0] == digests[1]
    assert str(tmp_path) not in digests[0]


@needs_isolation
def test_home_files_are_unreadable(ws):
    home = Path.home()
    marker = home / f".pyimg-test-{uuid.uuid4().hex}"
    try:
        marker.write_text("private\n")
    except OSError:
        pytest.skip("home is not writable")
    try:
        ws.write("p/BUILD.pyimg", f"""
            genrule(name = "home", outs = ["home.txt"],
                    cmd = "cat {marker} > $@ || ls -A {home} > $@ || true; echo done >> $@")
        """)
        r = ws.run("build", "//p:home")
        assert r.code == 0, r.err
        seen = ws.out("p/home.txt").read_text()
        assert "private" not in seen and marker.name not in seen
    finally:
        marker.unlink()


def test_fixed_environment_umask_and_time_zone(ws):
    ws.write("p/BUILD.pyimg", """
        genrule(name = "fixed", outs = ["fixed.txt"], cmd = "umask > $@; echo $$TZ $$LC_ALL "
                + "$$SOURCE_DATE_EPOCH >> $@; date +%Z >> $@; touch f; stat -c %a f >> $@")
        genrule(name = "epoch", outs = ["epoch.txt"], env = {"SOURCE_DATE_EPOCH": "1700000000"},
                cmd = "echo $$SOURCE_DATE_EPOCH > $@")
    """)
    r = ws.run("build", "//p:fixed", "//p:epoch")
    assert r.code == 0, r.err
    assert ws.out("p/fixed.txt").read_text().split("\n") == ["0022", "UTC C.UTF-8 0", "UTC", "644", ""]
    assert ws.out("p/epoch.txt").read_text() == "1700000000\n"


def test_no_process_outlives_its_action(ws):
    # Unusual sleep lengths mark the processes; setsid and nohup try to escape the group.
    ws.write("p/BUILD.pyimg", """
        genrule(name = "daemon", outs = ["d.txt"],
                cmd = "(sleep 987.61 &); setsid sleep 987.62 & nohup sleep 987.63 >/dev/null 2>&1 & echo > $@")
    """)
    r = ws.run("build", "//p:daemon")
    assert r.code == 0, r.err
    deadline = time.monotonic() + 3
    while (left := _processes_with("987.6")) and time.monotonic() < deadline:
        time.sleep(0.05)
    if left and probe_isolation() == "none":
        pytest.skip("without a pid namespace a setsid() daemon can survive (documented)")
    assert left == []


def _processes_with(marker: str) -> list[str]:
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                if marker.encode() in (p / "cmdline").read_bytes():
                    found.append(p.name)
            except OSError:
                continue
    return found


def test_without_namespaces_one_warning_or_strict_failure(ws, monkeypatch):
    import pyimg.core.sandbox as sandbox

    monkeypatch.setattr(sandbox, "probe_isolation", lambda: "none")
    ws.write("p/BUILD.pyimg", """
        genrule(name = "a", outs = ["a.txt"], cmd = "echo a > $@")
        genrule(name = "b", outs = ["b.txt"], cmd = "echo b > $@")
    """)
    r = ws.run("build", "//p:a", "//p:b")
    assert r.code == 0, r.err
    assert r.err.count("WARNING:") == 1 and "without a sandbox" in r.err
    ws.write("p/BUILD.pyimg", """
        genrule(name = "a", outs = ["a.txt"], cmd = "echo a2 > $@")
    """)
    r = ws.run("build", "--sandbox=strict", "//p:a")
    assert r.code == 1
    assert "--sandbox=strict" in r.err and "p/BUILD.pyimg:" in r.err
    assert ws.out("p/a.txt").read_text() == "a\n"  # the unisolated command did not run


@needs_isolation
def test_host_secret_files_are_unreadable_also_when_pyimg_runs_as_root(ws):
    # As root the command is host root (without capabilities) on the host's read-only /etc, and
    # root owns /etc/shadow: the sandbox masks it. CI runs this as root and as uid 65534.
    if not Path("/etc/shadow").exists():
        pytest.skip("no /etc/shadow here")
    ws.write("p/BUILD.pyimg", """
        genrule(name = "peek", outs = ["peek.txt"],
                cmd = "for f in /etc/shadow /etc/gshadow /etc/ssh/ssh_host_*key /root; do "
                      + "cat $$f || ls -A $$f; done > $@ 2>&1; echo end >> $@")
    """)
    r = ws.run("build", "//p:peek")
    assert r.code == 0, r.err
    seen = ws.out("p/peek.txt").read_text()
    assert "/etc/shadow: Permission denied" in seen and "/etc/gshadow: Permission denied" in seen
    assert "\nroot:" not in "\n" + seen  # the first line of shadow and gshadow


@needs_isolation
def test_host_secrets_stay_hidden_once_the_build_uses_its_copy_of_etc(ws, monkeypatch):
    # Past a few commands a build shows commands a copy of /etc (one mount instead of a mask per
    # host secret); the copy lives in the cache and hides what the masks hid.
    from pyimg.core import executor

    monkeypatch.setattr(executor, "_COMMANDS_BEFORE_ETC_COPY", 1)
    ws.write("p/BUILD.pyimg", """
        genrule(name = "first", outs = ["first.txt"], cmd = "echo first > $@")
        genrule(name = "peek", srcs = [":first"], outs = ["peek.txt"],
                cmd = "for f in /etc/shadow /etc/gshadow /etc/ssl/private; do "
                      + "cat $$f || ls -A $$f; done > $@ 2>&1; "
                      + "grep -c '^root:' /etc/passwd >> $@; echo end >> $@")
    """)
    r = ws.run("build", "//p:peek")
    assert r.code == 0, r.err
    assert [p.name[:4] for p in (ws.cache / "sandbox").iterdir()] == ["etc-"]
    seen = ws.out("p/peek.txt").read_text()
    for path in ("/etc/shadow", "/etc/gshadow", "/etc/ssl/private"):
        if Path(path).exists():
            assert f"{path}: Permission denied" in seen or f"'{path}': Permission denied" in seen
    assert "\n1\nend\n" in seen  # the rest of /etc is there
    assert "\nroot:" not in "\n" + seen


@needs_isolation
def test_a_copy_of_etc_that_cannot_be_made_falls_back_to_the_masks(ws, monkeypatch):
    from pyimg.core import executor, sandbox

    def full_disk(state_dir, make=True):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(executor, "_COMMANDS_BEFORE_ETC_COPY", 0)
    monkeypatch.setattr(sandbox, "sanitized_etc", full_disk)
    ws.write("p/BUILD.pyimg", """
        genrule(name = "peek", outs = ["peek.txt"],
                cmd = "cat /etc/shadow > $@ 2>&1 || grep -c '^root:' /etc/passwd >> $@")
    """)
    r = ws.run("build", "//p:peek")
    assert r.code == 0, r.err
    seen = ws.out("p/peek.txt").read_text()
    assert "\nroot:" not in "\n" + seen and seen.endswith("1\n")
    assert not (ws.cache / "sandbox").exists()


@needs_isolation
@pytest.mark.parametrize("mark", ["set", "skip"])
def test_nothing_an_action_leaves_in_its_reused_scratch_is_seen_by_the_next(ws, mark):
    # With one job both actions run in the same scratch slot, one after the other (b needs a);
    # a slot with extended attributes is replaced, one without is emptied and reused.
    ws.write("p/xattrs.py", """
        import os, sys
        dirs = (".", os.environ["HOME"], os.environ["TMPDIR"])
        for d in dirs:
            if sys.argv[1] == "set":
                os.setxattr(d, "user.leak", b"1")
            elif sys.argv[1] == "list":
                print(d, os.listxattr(d))
    """)
    ws.write("p/BUILD.pyimg", """
        genrule(
            name = "a",
            srcs = ["xattrs.py"],
            outs = ["a.txt"],
            cmd = " && ".join([
                "echo a > $@",
                "mkdir -p leak-dir/deep p/leak-pkg && touch leak-file leak-dir/deep/leak p/leak-in-p",
                "touch $$HOME/leak-home $$TMPDIR/leak-tmp && mkdir $$HOME/leak-home-dir",
                "{ ! [ -x /usr/bin/python3 ] || /usr/bin/python3 $< MARK; }",
                "chmod 000 leak-dir && chmod 700 . $$HOME && chmod 1777 $$TMPDIR",
            ]),
        )
        genrule(
            name = "b",
            srcs = [":a", "xattrs.py"],
            outs = ["b.txt"],
            cmd = "{ ls -laR . $$HOME $$TMPDIR; stat -c '%a %n' . $$HOME $$TMPDIR; " +
                  "! [ -x /usr/bin/python3 ] || /usr/bin/python3 p/xattrs.py list; } > $@",
        )
    """.replace("MARK", mark))
    r = ws.run("build", "--jobs", "1", "//p:b")
    assert r.code == 0, r.err
    seen = ws.out("p/b.txt").read_text()
    assert "leak" not in seen, seen
    assert "755 .\n755 /pyimg/home\n755 /tmp\n" in seen, seen


@needs_isolation
def test_a_command_sees_nothing_an_earlier_command_left_in_its_slot(ws):
    """One worker runs a chain in one reused scratch slot, whose directories and input copies
    become the next commands' (core/executor.py, `_Spares`): each command still sees exactly
    its own inputs, empty HOME and TMPDIR, and fresh copies of its inputs' bytes and modes."""
    ws.write("p/a.txt", "a\n" * 100)
    ws.write("q/b.txt", "b\n")
    litter = ("mkdir -p junk/deep $$HOME/h $$TMPDIR/t && echo left > junk/deep/f"
              " && echo left > $$HOME/h/f && echo left > $$TMPDIR/t/f && chmod 700 junk")
    look = ("(find . $$HOME $$TMPDIR -mindepth 1 | sed 's|'$$HOME'|HOME|;s|'$$TMPDIR'|TMP|' "
            " | sort; stat -c '%n %a %s' $(SRCS) | sort; cat $(SRCS)) > $@")
    ws.write("p/BUILD.pyimg", f"""
        genrule(name = "one", srcs = ["a.txt"], outs = ["one.txt"], cmd = "{look} && {litter}")
        genrule(name = "two", srcs = [":one", "//q:b.txt"], outs = ["two.txt"],
                cmd = "{look} && {litter}")
        genrule(name = "three", srcs = ["//q:b.txt"], outs = ["three.txt"], cmd = "{look}")
    """)
    ws.write("q/BUILD.pyimg", 'exports_files(["b.txt"])\n')
    r = ws.run("build", "-j", "1", "//p:three", "//p:two")
    assert r.code == 0, r.err
    two = ws.out("p/two.txt").read_text().splitlines()
    assert two[:8] == [
        "./_pyimg_host_tools", "./_pyimg_host_tools/sh", "./pyimg-out", "./pyimg-out/p",
        "./pyimg-out/p/one.txt", "./pyimg-out/p/two.txt", "./q", "./q/b.txt"]
    assert two[8].startswith("pyimg-out/p/one.txt 444 ") and two[9] == "q/b.txt 444 2"
    assert two[10:18] == [  # one.txt: what "one" saw
        "./_pyimg_host_tools", "./_pyimg_host_tools/sh", "./p", "./p/a.txt", "./pyimg-out",
        "./pyimg-out/p", "./pyimg-out/p/one.txt", "p/a.txt 444 200"]
    three = ws.out("p/three.txt").read_text().splitlines()
    assert three == [
        "./_pyimg_host_tools", "./_pyimg_host_tools/sh", "./pyimg-out", "./pyimg-out/p",
        "./pyimg-out/p/three.txt", "./q", "./q/b.txt", "q/b.txt 444 2", "b"]
