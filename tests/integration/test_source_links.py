"""Sources never reach outside the workspace: a symlink that leaves it (named in `srcs`, matched
by glob(), or a directory on the way) is refused at the attribute or glob() that names it, also
when it is re-pointed after a successful build (no-op and incremental paths); a link that stays
inside packs as the file it points to; dangling links and loops get clear errors."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from workspace_helpers import Workspace

SECRET = b"ghp_do-not-pack-me-0123456789"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the workspace holding credentials, as ~/.docker would."""
    d = tmp_path / "home"
    (d / ".docker").mkdir(parents=True)
    (d / ".docker/config.json").write_bytes(SECRET)
    (d / "assets").mkdir()
    (d / "assets/logo.png").write_bytes(SECRET)
    return d


def _nowhere_holds_secret(ws: Workspace) -> None:
    """Neither the content store nor pyimg-out holds the secret's bytes."""
    for root in (ws.cache, ws.root / "pyimg-out"):
        for dirpath, _, names in os.walk(root):
            for n in names:
                p = Path(dirpath, n)
                if p.is_file() and not p.is_symlink():
                    assert SECRET not in p.read_bytes(), p


def _layer_members(path: Path) -> dict[str, tuple[str, bytes | None]]:
    with tarfile.open(path) as tar:
        out = {}
        for m in tar.getmembers():
            kind = "file" if m.isfile() else "symlink" if m.issym() else "dir"
            data = tar.extractfile(m).read() if m.isfile() else None  # type: ignore[union-attr]
            out[m.name] = (kind, data)
        return out


def test_explicit_src_linking_outside_is_refused_at_the_attribute(ws, outside):
    ws.write("p/BUILD.pyimg", """\
        pkg_tar(
            name = "layer",
            srcs = ["a.txt", "c.json"],
        )
    """)
    ws.write("p/a.txt", "a\n")
    os.symlink(outside / ".docker/config.json", ws.root / "p/c.json")
    r = ws.run("build", "//p:layer")
    assert r.code == 2
    assert r.err.startswith(
        "ERROR: p/BUILD.pyimg:3:5: source file '//p:c.json': 'p/c.json' is a symlink to "
        f"'{outside}/.docker/config.json', outside the workspace"), r.err
    assert "Traceback" not in r.err
    _nowhere_holds_secret(ws)


def test_glob_matching_a_link_outside_is_refused_at_the_glob(ws, outside):
    ws.write("p/BUILD.pyimg", 'pkg_tar(name = "layer", srcs = glob(["**"]))\n')
    ws.write("p/a.txt", "a\n")
    # Relative, so the message shows where it resolves to as well.
    os.symlink(os.path.relpath(outside / ".docker/config.json", ws.root / "p"),
               ws.root / "p/c.json")
    r = ws.run("build", "//p:layer")
    assert r.code == 2
    assert r.err.startswith(
        "ERROR: p/BUILD.pyimg:1:32: glob(['**']): 'p/c.json' is a symlink to "
        "'../../home/.docker/config.json' (resolved: "
        f"'{outside}/.docker/config.json'), outside the workspace"), r.err
    _nowhere_holds_secret(ws)


def test_glob_walking_into_a_directory_link_outside_is_refused(ws, outside):
    ws.write("p/BUILD.pyimg", """\
        pkg_tar(name = "all", srcs = glob(["**"]))
        pkg_tar(name = "top", srcs = glob(["*.txt"]))
    """)
    ws.write("p/a.txt", "a\n")
    os.symlink(outside / "assets", ws.root / "p/assets")
    r = ws.run("build", "//p:all")
    assert r.code == 2
    assert r.err.startswith(
        f"ERROR: p/BUILD.pyimg:1:30: glob(['**']): 'p/assets' is a symlink to '{outside}/assets', "
        "outside the workspace"), r.err
    _nowhere_holds_secret(ws)
    # A glob that cannot match below the link never walks into it.
    ws.write("p/BUILD.pyimg", 'pkg_tar(name = "top", srcs = glob(["*.txt"]))\n')
    r = ws.run("build", "//p:top")
    assert r.code == 0, r.err


def test_path_through_a_directory_link_outside_is_refused(ws, outside):
    ws.write("p/BUILD.pyimg", """\
        pkg_tar(
            name = "layer",
            srcs = [
                "assets/logo.png",
            ],
        )
    """)
    os.symlink(outside / "assets", ws.root / "p/assets")
    r = ws.run("build", "//p:layer")
    assert r.code == 2
    assert r.err.startswith(
        "ERROR: p/BUILD.pyimg:3:5: source file '//p:assets/logo.png': 'p/assets/logo.png' goes "
        f"through 'p/assets', which is a symlink to '{outside}/assets', outside the workspace"
    ), r.err
    _nowhere_holds_secret(ws)


def test_links_inside_the_workspace_pack_as_the_files_they_point_to(ws):
    ws.write("p/BUILD.pyimg", """\
        pkg_tar(name = "layer", srcs = glob(["**"]), strip_prefix = ".")
    """)
    ws.write("shared/conf.txt", "conf v1\n")
    ws.write("site/index.html", "<h1>hi</h1>\n")
    os.symlink("../shared/conf.txt", ws.root / "p/conf.txt")
    os.symlink("../site", ws.root / "p/web")  # a directory link: glob() walks it, as in Bazel
    r = ws.run("build", "//p:layer")
    assert r.code == 0, r.err
    assert _layer_members(ws.out("p/layer.tar")) == {
        "conf.txt": ("file", b"conf v1\n"),
        "web": ("dir", None),
        "web/index.html": ("file", b"<h1>hi</h1>\n"),
    }
    # The content is what counts: editing the file the link points to rebuilds the layer.
    ws.write("shared/conf.txt", "conf v2\n")
    r = ws.run("build", "//p:layer")
    assert r.code == 0, r.err
    assert _layer_members(ws.out("p/layer.tar"))["conf.txt"] == ("file", b"conf v2\n")


def test_dangling_links_are_refused_clearly(ws):
    ws.write("p/BUILD.pyimg", """\
        pkg_tar(name = "explicit", srcs = ["old.txt"])
    """)
    ws.write("q/BUILD.pyimg", """\
        pkg_tar(name = "globbed", srcs = glob(["*.txt"]))
    """)
    os.symlink("renamed.txt", ws.root / "p/old.txt")
    os.symlink("renamed.txt", ws.root / "q/old.txt")
    r = ws.run("build", "//p:explicit")
    assert r.code == 2
    assert r.err.startswith(
        "ERROR: p/BUILD.pyimg:1:28: source file '//p:old.txt': 'p/old.txt' is a symlink to "
        "'renamed.txt', which does not exist (a dangling symlink)"), r.err
    r = ws.run("build", "//q:globbed")
    assert r.code == 2
    assert r.err.startswith(
        "ERROR: q/BUILD.pyimg:1:34: glob(['*.txt']): 'q/old.txt' is a symlink to 'renamed.txt', "
        "which does not exist (a dangling symlink)"), r.err


def test_symlink_loops_are_refused_clearly(ws):
    ws.write("p/BUILD.pyimg", 'pkg_tar(name = "layer", srcs = ["self.txt"])\n')
    os.symlink("self.txt", ws.root / "p/self.txt")
    r = ws.run("build", "//p:layer")
    assert r.code == 2
    assert r.err.startswith(
        "ERROR: p/BUILD.pyimg:1:25: source file '//p:self.txt': 'p/self.txt' is a symlink to "
        "'self.txt', which never resolves (a symlink loop)"), r.err
    # A directory linking to its own parent: glob() would walk it forever.
    ws.write("q/BUILD.pyimg", 'pkg_tar(name = "layer", srcs = glob(["**"]))\n')
    ws.write("q/d/e/a.txt", "a\n")
    os.symlink("..", ws.root / "q/d/e/up")
    r = ws.run("build", "//q:layer")
    assert r.code == 2
    assert r.err.startswith(
        "ERROR: q/BUILD.pyimg:1:32: glob(['**']): 'q/d/e/up' is a symlink to '..', a directory "
        "that contains it (a symlink loop)"), r.err


# A link re-pointed outside after a successful build: the records of that build (the no-op
# record, the incremental build's index, the analysis cache) must not let it through.
REPOINT_CASES = {
    "explicit": ('pkg_tar(name = "layer", srcs = ["a.txt", "c.json"])\n', "1:25",
                 "source file '//p:c.json': 'p/c.json'"),
    "glob": ('pkg_tar(name = "layer", srcs = glob(["*"]))\n', "1:32",
             "glob(['*']): 'p/c.json'"),
}


def _repoint(link: Path, target: Path, keep_dir_mtime: bool) -> None:
    st = link.parent.stat()
    link.unlink()
    os.symlink(target, link)
    if keep_dir_mtime:
        # Hides the change from the directory stats of the no-op record: only the file's own
        # stat (followed) differs, so the check hands it to the incremental build.
        os.utime(link.parent, ns=(st.st_atime_ns, st.st_mtime_ns))


@pytest.mark.parametrize("keep_dir_mtime", [False, True], ids=["noop-check", "incremental"])
@pytest.mark.parametrize("case", sorted(REPOINT_CASES))
def test_link_repointed_outside_after_a_build_is_refused(ws, outside, monkeypatch, case,
                                                         keep_dir_mtime):
    import pyimg.cli.incremental as incremental

    build, position, message = REPOINT_CASES[case]
    ws.write("p/BUILD.pyimg", build)
    ws.write("p/a.txt", "a\n")
    ws.write("p/inside.json", "{}\n")
    os.symlink("inside.json", ws.root / "p/c.json")
    assert ws.run("build", "//p:layer").code == 0
    assert ws.run("build", "//p:layer").err.endswith("(nothing changed since the last build)\n")
    layer = ws.out("p/layer.tar").read_bytes()

    rebuilt: list[object] = []
    rebuild = incremental.rebuild

    def spy(*a, **kw):
        rebuilt.append(code := rebuild(*a, **kw))
        return code

    monkeypatch.setattr(incremental, "rebuild", spy)
    _repoint(ws.root / "p/c.json", outside / ".docker/config.json", keep_dir_mtime)
    r = ws.run("build", "//p:layer")
    assert r.code == 2, r.err
    assert r.err.startswith(f"ERROR: p/BUILD.pyimg:{position}: {message} is a symlink to "
                            f"'{outside}/.docker/config.json', outside the workspace"), r.err
    # The incremental build was asked and declined (the full build reported it).
    assert rebuilt == ([None] if keep_dir_mtime else [])
    assert ws.out("p/layer.tar").read_bytes() == layer
    _nowhere_holds_secret(ws)
    # And it stays refused: the failed build left no record to replay.
    r = ws.run("build", "//p:layer")
    assert r.code == 2 and f"p/BUILD.pyimg:{position}:" in r.err
