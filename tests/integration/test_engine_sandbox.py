"""Actions are hermetic: undeclared files, the network and the host environment stay out."""

from __future__ import annotations

import socket
import threading

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
            cmd = "cat p/secret.txt > $@ || cat %s/p/secret.txt > $@",
        )
    """ % ws.root)
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
