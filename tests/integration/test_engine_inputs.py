"""A command cannot change its inputs: nothing it does reaches the content store or a later build."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyimg.core.sandbox import probe_isolation
from workspace_helpers import Workspace

BIG = 2 * 1024 * 1024  # above the size up to which inputs are copied: staged by a read-only bind

# The inputs: a small and a large source file, a small and a large output of another action.
INPUTS = {
    "small_src": "p/small.txt",
    "big_src": "p/big.bin",
    "small_gen": "pyimg-out/p/gen_small.txt",
    "big_gen": "pyimg-out/p/gen_big.bin",
}
LABELS = {"small_src": "small.txt", "big_src": "big.bin", "small_gen": ":gen_small",
          "big_gen": ":gen_big"}

# What a command does to its input X; `&&` so that a refused operation fails the command.
OPERATIONS = {
    "chmod": "chmod 0755 X",
    "append": "chmod u+w X && echo poison >> X",
    "truncate": "chmod u+w X && : > X",
    "rename_over": "echo poison > other && mv -f other X",
    "delete": "rm -f X",
}

BUILD = """
genrule(name = "gen_small", outs = ["gen_small.txt"], cmd = "echo generated > $@")
genrule(name = "gen_big", outs = ["gen_big.bin"], cmd = "head -c {big} /dev/zero > $@; echo end >> $@")
pkg_tar(name = "layer", srcs = ["small.txt", "big.bin", ":gen_small", ":gen_big"])
oci_image(name = "image", tars = [":layer"])
genrule(
    name = "reader",
    srcs = ["small.txt", "big.bin", ":gen_small", ":gen_big"],
    outs = ["reader.txt"],
    cmd = "sha256sum $(SRCS) > $@; stat -c '%a %s %n' $(SRCS) >> $@",
)
""".replace("{big}", str(BIG))


def _workspace(root: Path, cache: Path) -> Workspace:
    ws = Workspace(root, cache)
    ws.write("p/small.txt", "small source\n")
    (root / "p/big.bin").write_bytes(b"\x01" * BIG)
    build = BUILD
    for name, label in LABELS.items():
        for op, script in OPERATIONS.items():
            cmd = script.replace("X", f"$(location {label})")
            build += (f'genrule(name = "{op}_{name}", srcs = ["{label}"], outs = ["{op}_{name}.txt"], '
                      f'cmd = "{cmd} && echo done > $@")\n')
    ws.write("p/BUILD.pyimg", build)
    return ws


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The image digest and the reader's output from an empty cache, no input ever touched."""
    tmp = tmp_path_factory.mktemp("fresh")
    ws = _workspace(tmp / "ws", tmp / "cache")
    r = ws.run("build", "//p:image", "//p:reader")
    assert r.code == 0, r.err
    return {"image": ws.out("p/image.digest").read_bytes(),
            "reader": ws.out("p/reader.txt").read_bytes()}


def _isolation(monkeypatch: pytest.MonkeyPatch, isolation: str, tmp_path: Path) -> None:
    import pyimg.core.sandbox as sandbox
    from pyimg.core.sandbox import SandboxSpec, run_sandboxed

    probe = SandboxSpec(argv=("true",), execroot=tmp_path, env={})
    if isolation != "none" and run_sandboxed(probe, isolation=isolation).exit_code != 0:
        pytest.skip(f"{isolation} does not work here")
    monkeypatch.setattr(sandbox, "probe_isolation", lambda: isolation)


@pytest.mark.parametrize("isolation", ["bwrap", "unshare", "none"])
@pytest.mark.parametrize("op", sorted(OPERATIONS))
def test_a_changed_input_fails_cleanly_and_never_reaches_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh: dict[str, bytes], op: str,
    isolation: str,
) -> None:
    _isolation(monkeypatch, isolation, tmp_path)
    ws = _workspace(tmp_path / "ws", tmp_path / "cache")
    # The inputs enter the store first, as another target built earlier would have put them.
    r = ws.run("build", "//p:image", "//p:reader")
    assert r.code == 0, r.err
    for name, exec_path in INPUTS.items():
        r = ws.run("build", f"//p:{op}_{name}")
        assert r.code == 1, (name, r.out, r.err)
        assert "Traceback" not in r.err
        # The error names the file: pyimg's check (a copied input) or the refused operation's own
        # message (an input mounted read-only).
        assert exec_path in r.err, (name, r.err)
        if exec_path.endswith("small.txt") or isolation == "none":
            assert f"changed its input '{exec_path}'" in r.err, r.err
    # The same digests as from an empty cache, whether served from this cache or rebuilt.
    for flags in ((), ("--disk-cache", str(tmp_path / "empty"))):
        r = ws.run("build", *flags, "//p:image", "//p:reader")
        assert r.code == 0, r.err
        assert ws.out("p/image.digest").read_bytes() == fresh["image"]
        assert ws.out("p/reader.txt").read_bytes() == fresh["reader"]


@pytest.mark.skipif(probe_isolation() == "none", reason="no namespaces here")
def test_chmod_x_of_an_input_does_not_make_a_later_layer_depend_on_build_order(ws: Workspace):
    # The pattern from issue 11: it used to flip the shared blob's mode, so that the pkg_tar built
    # after it packed the script as executable, until the cache was wiped.
    ws.write("p/BUILD.pyimg", """
        genrule(name = "script", outs = ["script.sh"], cmd = "echo 'echo hello' > $@")
        genrule(name = "run", srcs = [":script"], outs = ["run.txt"],
                cmd = "chmod +x $(location :script); ./$(location :script) > $@")
        pkg_tar(name = "layer", srcs = [":script"])
        oci_image(name = "image", tars = [":layer"])
    """)
    fresh = ws.run("build", "--disk-cache", str(ws.root.parent / "fresh"), "//p:image")
    assert fresh.code == 0, fresh.err
    expected = ws.out("p/image.digest").read_bytes()
    r = ws.run("build", "//p:run")
    assert r.code == 1
    assert "p/BUILD.pyimg:3:1: " in r.err
    assert "changed its input 'pyimg-out/p/script.sh' (mode 0444 -> 0555)" in r.err
    r = ws.run("build", "//p:image")
    assert r.code == 0, r.err
    assert ws.out("p/image.digest").read_bytes() == expected


def test_inputs_are_staged_without_sharing_the_stores_inodes_for_small_files(ws: Workspace):
    # A small input is a private copy, a large one the store's inode (behind a read-only mount):
    # what `ls -l`, `cp` and `tar` see is a regular file either way, with the store's mode.
    ws.write("p/small.txt", "small\n")
    (ws.root / "p/big.bin").write_bytes(b"\x02" * BIG)
    ws.write("p/BUILD.pyimg", """
        genrule(name = "look", srcs = ["small.txt", "big.bin"], outs = ["look.txt"],
                cmd = "stat -c '%F %a %h' $(SRCS) > $@; cp -a p copy && find copy -type f | sort >> $@")
    """)
    r = ws.run("build", "//p:look")
    assert r.code == 0, r.err
    lines = ws.out("p/look.txt").read_text().splitlines()
    assert lines[0] == "regular file 444 1"  # small.txt: a copy, one link
    kind, mode, links = lines[1].rsplit(" ", 2)
    assert (kind, mode) == ("regular file", "444")
    assert int(links) >= (2 if probe_isolation() != "none" else 1)
    assert lines[2:] == ["copy/big.bin", "copy/small.txt"]
