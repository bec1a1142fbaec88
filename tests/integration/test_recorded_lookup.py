"""A full build after a BUILD edit serves unchanged actions from the last build's action lines
(build/recorded.py) and notices each changed one by its key."""

from __future__ import annotations

import shutil
from pathlib import Path

from workspace_helpers import Workspace

BUILD = """
genrule(name = "a", srcs = ["a.txt"], outs = ["a.out"], cmd = "cat $(SRCS) > $@")
genrule(name = "b", srcs = [":a"], outs = ["b.out"], cmd = "{cmd}")
genrule(name = "c", srcs = [":b"], outs = ["c.out"], cmd = "cat $(SRCS) > $@")
"""


def test_a_changed_definition_or_input_is_not_served_from_the_record(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("MODULE.pyimg", "")
    ws.write("a.txt", "a\n")
    ws.write("BUILD.pyimg", BUILD.format(cmd="cat $(SRCS) > $@"))
    assert ws.run("build", "//...").code == 0
    # Only the record can serve the actions now: what it must not serve runs.
    shutil.rmtree(ws.cache / "ac")
    ws.write("BUILD.pyimg", BUILD.format(cmd="cat $(SRCS) $(SRCS) > $@"))
    built = ws.run("build", "//...")
    assert built.code == 0, built.err
    # b's command changed (same inputs and outputs), and c reads b's new output.
    assert "Build completed: 2 actions run" in built.err, built.err
    assert (ws.root / "pyimg-out/c.out").read_text() == "a\na\n"
    shutil.rmtree(ws.cache / "ac")
    ws.write("BUILD.pyimg", "# a comment\n" + BUILD.format(cmd="cat $(SRCS) $(SRCS) > $@"))
    built = ws.run("build", "//...")
    assert built.code == 0, built.err
    assert "Build completed: 0 actions run" in built.err, built.err
