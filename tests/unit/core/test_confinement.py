"""Confinement: which symlinks keep a path inside its root, and how a problem is described."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pyimg.core.confinement import DANGLING, LOOP, OUTSIDE, Confinement, LinkProblem


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "ws/p").mkdir(parents=True)
    (tmp_path / "ws/p/a.txt").write_text("a")
    (tmp_path / "ws/shared").mkdir()
    (tmp_path / "ws/shared/s.txt").write_text("s")
    (tmp_path / "out").mkdir()
    (tmp_path / "out/secret").write_text("x")
    return tmp_path / "ws"


def test_plain_files_links_inside_and_missing_files_are_fine(root: Path) -> None:
    os.symlink("../shared/s.txt", root / "p/in.txt")
    os.symlink("in.txt", root / "p/chain.txt")  # a link to a link, both inside
    os.symlink(root / "shared", root / "p/dir")  # absolute, but inside
    c = Confinement(root)
    for rel in ("p/a.txt", "p/in.txt", "p/chain.txt", "p/dir", "p/dir/s.txt", "p/missing"):
        assert c.check(rel) is None, rel


def test_a_link_leaving_the_root_is_named_with_its_target(root: Path) -> None:
    outside = root.parent / "out/secret"
    os.symlink(outside, root / "p/abs")
    os.symlink("../../out/secret", root / "p/rel")
    c = Confinement(root)
    assert c.check("p/abs") == LinkProblem("p/abs", "p/abs", str(outside), str(outside), OUTSIDE)
    problem = c.check("p/rel")
    assert problem == LinkProblem("p/rel", "p/rel", "../../out/secret", str(outside), OUTSIDE)
    assert str(problem).startswith(
        f"'p/rel' is a symlink to '../../out/secret' (resolved: '{outside}'), outside the "
        "workspace")


def test_a_path_through_a_directory_link_names_the_directory(root: Path) -> None:
    os.symlink(root.parent / "out", root / "p/assets")
    problem = Confinement(root).check("p/assets/secret")
    assert problem is not None and (problem.path, problem.link) == ("p/assets/secret", "p/assets")
    assert str(problem).startswith("'p/assets/secret' goes through 'p/assets', which is a "
                                   f"symlink to '{root.parent / 'out'}', outside the workspace")


def test_a_chain_that_ends_outside_is_refused_at_the_first_link(root: Path) -> None:
    os.symlink(root.parent / "out/secret", root / "shared/leak")
    os.symlink("../shared/leak", root / "p/innocent")
    problem = Confinement(root).check("p/innocent")
    assert problem is not None and problem.kind == OUTSIDE and problem.link == "p/innocent"
    assert problem.resolved == str(root.parent / "out/secret")


def test_dangling_links_and_loops(root: Path) -> None:
    os.symlink("gone", root / "p/dangling")
    os.symlink("loop2", root / "p/loop1")
    os.symlink("loop1", root / "p/loop2")
    c = Confinement(root)
    dangling, loop = c.check("p/dangling"), c.check("p/loop1")
    assert dangling is not None and dangling.kind == DANGLING
    assert str(dangling) == "'p/dangling' is a symlink to 'gone', which does not exist (a dangling symlink)"
    assert loop is not None and loop.kind == LOOP
    assert str(loop) == "'p/loop1' is a symlink to 'loop2', which never resolves (a symlink loop)"


def test_the_root_itself_may_be_reached_through_a_link(tmp_path: Path, root: Path) -> None:
    os.symlink(root, tmp_path / "alias")
    assert Confinement(tmp_path / "alias").check("p/a.txt") is None
    os.symlink(root, root / "p/top")
    assert Confinement(root).check("p/top/p/a.txt") is None
