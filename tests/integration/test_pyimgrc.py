"""`.pyimgrc` lines: a `COMMAND` line applies to that command; a `common` line gives each
command only the flags it has (as Bazel does), so that build flags there leave `pyimg worker`
working; a flag no command has is a usage error naming the line."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from pyimg.cli.main import main
from workspace_helpers import Workspace

BUILD = 'genrule(name = "g", outs = ["g.txt"], cmd = "echo hi > $@")\n'


def test_build_flags_on_a_common_line_leave_the_worker_alone(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("p/BUILD.pyimg", BUILD)
    ws.write(".pyimgrc", f"common --disk-cache {tmp_path / 'rc-cache'} --jobs 2 --keep-going\n"
                         "common --remote-timeout=7 --verbose\n")
    # The worker has none of these flags: it gets to its own (a URL it refuses).
    r = ws.run("worker", "--remote", "http://nowhere:1")
    assert r.code == 2, r.err
    assert "unrecognized" not in r.err and "expected grpc://HOST:PORT" in r.err, r.err
    r = ws.run("query", "//p:all")
    assert r.code == 0 and "//p:g" in r.out, r.err
    # The build takes them: run without the harness's --disk-cache (which would come later and
    # win), its cache is the rc's.
    old = os.getcwd()
    os.chdir(ws.root)
    try:
        with contextlib.redirect_stderr(io.StringIO()) as err:
            code = main(["build", "//p:g"])
    finally:
        os.chdir(old)
    assert code == 0, err.getvalue()
    assert (tmp_path / "rc-cache").is_dir()


def test_a_common_flag_of_no_command_is_a_usage_error(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("p/BUILD.pyimg", BUILD)
    ws.write(".pyimgrc", "# defaults\ncommon --jobs 2 --no-such-flag\n")
    r = ws.run("build", "//p:g")
    assert r.code == 2
    assert f"{ws.root / '.pyimgrc'}:2:1: `common` takes flags of pyimg's commands; " \
           "'--no-such-flag' is not one" in r.err, r.err
