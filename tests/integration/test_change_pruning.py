"""Change pruning (build/incremental.py, docs/architecture.md "Change pruning"): a BUILD edit that
changes no target evaluates only its package, runs nothing and gives a clean build's outputs;
an edit that changes a target or a rule's implementation takes the full build; error locations
follow the lines the edit moved."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from pyimg.build.incremental import PRUNED_NOTE
from workspace_helpers import Workspace

RULES = '''
WORD = "{word}"

def _word_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".txt")
    ctx.actions.write(out, WORD + " " + ctx.attr.text + "\\n")
    return [DefaultInfo(files = [out])]

word = rule(implementation = _word_impl, attrs = {{"text": attr.string()}})
'''
A_BUILD = '''load("//defs:rules.bzl", "word")

genrule(name = "x", srcs = ["s.txt"], outs = ["x.out"], cmd = "cat $(SRCS) > $@",
        visibility = ["//visibility:public"])
word(name = "w", text = "hello")
'''
# y fails when its input says "fail": how a test makes an action fail after an edit.
B_BUILD = '''genrule(name = "y", srcs = ["//a:x"], outs = ["y.out"],
        cmd = "cat $(SRCS) > $@; ! grep -q fail $(SRCS)")
'''


def _workspace(tmp_path: Path) -> Workspace:
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("defs/BUILD.pyimg", "")
    ws.write("defs/rules.bzl", RULES.format(word="one"))
    ws.write("a/BUILD.pyimg", A_BUILD)
    ws.write("a/s.txt", "source\n")
    ws.write("b/BUILD.pyimg", B_BUILD)
    built = ws.run("build", "//...")
    assert built.code == 0, built.err
    return ws


def _edit(path: Path, before: str = "", after: str = "") -> None:
    """Rewrite a file in place (as editors that keep the inode do: the directory is as it was)."""
    text = path.read_text()
    with open(path, "r+") as f:
        f.write(before + text + after)
        f.truncate()


def _outputs(root: Path) -> dict[str, bytes]:
    out = root / "pyimg-out"
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _clean_outputs(ws: Workspace, tmp_path: Path) -> dict[str, bytes]:
    clean = Workspace(tmp_path / "clean", tmp_path / "clean-cache")
    shutil.rmtree(clean.root)
    shutil.copytree(ws.root, clean.root, ignore=shutil.ignore_patterns("pyimg-out"))
    built = clean.run("build", "//...")
    assert built.code == 0, built.err
    return _outputs(clean.root)


def test_a_comment_edit_runs_nothing_and_gives_the_clean_outputs(tmp_path: Path) -> None:
    ws = _workspace(tmp_path)
    report = ws.run("build", "//...").out
    _edit(ws.root / "a/BUILD.pyimg", after="# a comment\n")
    built = ws.run("build", "//...")
    assert built.code == 0, built.err
    assert "Build completed: 0 actions run" in built.err
    assert PRUNED_NOTE in built.err
    assert built.out == report
    assert _outputs(ws.root) == _clean_outputs(ws, tmp_path)
    # The records were updated: the same command again is a plain no-op.
    again = ws.run("build", "//...")
    assert "nothing changed since the last build" in again.err


def test_two_build_files_and_a_source_edited_at_once(tmp_path: Path) -> None:
    """The BUILD files are pruned; the source goes the incremental way and runs what reads it."""
    ws = _workspace(tmp_path)
    _edit(ws.root / "a/BUILD.pyimg", before="# top\n")
    _edit(ws.root / "b/BUILD.pyimg", after="\n\n# end\n")
    (ws.root / "a/s.txt").write_text("edited\n")
    built = ws.run("build", "//...")
    assert built.code == 0, built.err
    assert "Build completed: 2 actions run" in built.err
    assert PRUNED_NOTE in built.err
    assert (ws.out("b/y.out")).read_text() == "edited\n"
    assert _outputs(ws.root) == _clean_outputs(ws, tmp_path)


def test_a_rule_implementation_edit_is_not_pruned(tmp_path: Path) -> None:
    """A .bzl edit that changes what a rule does but no target takes the full build; so does
    any other change of a .bzl file's contents. Saved again as it was, it changes nothing."""
    ws = _workspace(tmp_path)
    rules = ws.root / "defs/rules.bzl"
    rules.write_text(RULES.format(word="two"))
    built = ws.run("build", "//...")
    assert built.code == 0, built.err
    assert PRUNED_NOTE not in built.err
    assert "Build completed: 1 actions run" in built.err
    assert ws.out("a/w.txt").read_text() == "two hello\n"
    _edit(rules, after="# only a comment\n")
    built = ws.run("build", "//...")
    assert built.code == 0, built.err
    assert PRUNED_NOTE not in built.err
    _edit(rules)  # the same bytes, another mtime
    built = ws.run("build", "//...")
    assert built.code == 0, built.err
    assert PRUNED_NOTE in built.err
    assert _outputs(ws.root) == _clean_outputs(ws, tmp_path)


def test_target_edits_are_not_pruned(tmp_path: Path) -> None:
    """An attribute, a visibility, a new target: the full build, with a clean build's outputs."""
    ws = _workspace(tmp_path)
    a_build = ws.root / "a/BUILD.pyimg"
    for old, new in [('text = "hello"', 'text = "hi"'),
                     ('visibility = ["//visibility:public"]', 'visibility = ["//b:__pkg__"]'),
                     ("", 'word(name = "w2")\n')]:
        if old:
            a_build.write_text(a_build.read_text().replace(old, new))
        else:
            _edit(a_build, after=new)
        built = ws.run("build", "//...")
        assert built.code == 0, built.err
        assert PRUNED_NOTE not in built.err, new
    assert ws.out("a/w.txt").read_text() == "one hi\n"
    assert _outputs(ws.root) == _clean_outputs(ws, tmp_path)


def test_a_top_comment_keeps_error_lines_right(tmp_path: Path) -> None:
    """Lines inserted at the top of a BUILD file move every target: the edit is pruned, and an
    action that fails later is reported at its target's new line, by the incremental build and
    when both edits come at once."""
    ws = _workspace(tmp_path)
    _edit(ws.root / "b/BUILD.pyimg", before="# one\n# two\n")
    built = ws.run("build", "//...")
    assert built.code == 0, built.err
    assert PRUNED_NOTE in built.err
    (ws.root / "a/s.txt").write_text("fail\n")
    failed = ws.run("build", "//...")
    assert failed.code != 0
    assert "b/BUILD.pyimg:3:1: Genrule //b:y" in failed.err, failed.err
    # Both at once: three more lines on top, and the failing source still there.
    _edit(ws.root / "b/BUILD.pyimg", before="# three\n\n\n")
    failed = ws.run("build", "//...")
    assert failed.code != 0
    assert "b/BUILD.pyimg:6:1: Genrule //b:y" in failed.err, failed.err
    (ws.root / "a/s.txt").write_text("fine\n")
    built = ws.run("build", "//...")
    assert built.code == 0, built.err
    assert _outputs(ws.root) == _clean_outputs(ws, tmp_path)


def test_a_build_file_that_fails_to_evaluate_then_restored(tmp_path: Path) -> None:
    """An edit that breaks a BUILD file: the error at its line, nothing recorded as good; the
    file restored as it was is pruned (its record is still the last good build's)."""
    ws = _workspace(tmp_path)
    a_build = ws.root / "a/BUILD.pyimg"
    good = a_build.read_text()
    _edit(a_build, after="genrule(name = \n")
    failed = ws.run("build", "//...")
    assert failed.code != 0
    assert "a/BUILD.pyimg:6:16: Parse error" in failed.err, failed.err
    failed = ws.run("build", "//...")  # and again: no record took the broken file for good
    assert failed.code != 0
    assert "a/BUILD.pyimg:6:16: Parse error" in failed.err, failed.err
    a_build.write_text(good)
    built = ws.run("build", "//...")
    assert built.code == 0, built.err
    assert PRUNED_NOTE in built.err
    assert "Build completed: 0 actions run" in built.err
    assert _outputs(ws.root) == _clean_outputs(ws, tmp_path)


def _save_by_rename(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_files_saved_by_a_rename(tmp_path: Path) -> None:
    """`sed -i` and many editors save a file by renaming a new one over it, which moves the
    directory's mtime but not its listing: a BUILD file saved so is pruned, a source so is
    built incrementally, and the next build is a plain no-op."""
    ws = _workspace(tmp_path)
    a_build = ws.root / "a/BUILD.pyimg"
    _save_by_rename(a_build, a_build.read_text() + "# saved by a rename\n")
    built = ws.run("build", "//...")
    assert built.code == 0, built.err
    assert PRUNED_NOTE in built.err
    assert "Build completed: 0 actions run" in built.err
    _save_by_rename(ws.root / "a/s.txt", "renamed\n")
    built = ws.run("build", "//...")
    assert built.code == 0, built.err
    assert "Build completed: 2 actions run" in built.err
    assert ws.out("b/y.out").read_text() == "renamed\n"
    again = ws.run("build", "//...")
    assert "nothing changed since the last build" in again.err
    assert _outputs(ws.root) == _clean_outputs(ws, tmp_path)
