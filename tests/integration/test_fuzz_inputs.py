"""Fuzzing: random mutations of BUILD files, MODULE.pyimg, index.json and manifests never give an
exit code other than 0, 1 or 2, nor a traceback (nor a crash of the interpreter running the test).

Deterministic: a fixed seed and a fixed number of cases, a few dozen in the fast suite and more
under the slow marker. Plain `random` is enough: the mutations are what matters, and a failing
case prints the file that made it fail.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from pathlib import Path

import pytest
from workspace_helpers import Workspace

BUILD = """\
load("//p:defs.bzl", "double")

SRCS = glob(["*.txt"], exclude = ["x*.txt"])

genrule(
    name = "gen",
    srcs = SRCS,
    outs = ["gen.out"],
    cmd = "cat $(SRCS) > $@ && echo %s >> $@" % " ".join([str(i) for i in range(3)]),
)

pkg_tar(name = "t", srcs = [":gen"] + SRCS, package_dir = "/app", modes = {"app/gen.out": "0755"})

oci_image(
    name = "img",
    base = "//base:b",
    tars = [":t"],
    env = {"A": "1", "B": double("x")},
    entrypoint = ["/app/gen.out"],
    labels = {"k": "v"} if len(SRCS) > 0 else {},
)
"""

DEFS = """\
def double(s):
    out = []
    for c in s.elems():
        out.append(c + c)
    return "".join(out)
"""

MODULE = """\
http_file(
    name = "tool",
    urls = ["file:///nonexistent/tool.sh"],
    sha256 = "%s",
)
""" % ("ab" * 32)

# Fragments that have broken parsers before: brackets, operators, keywords, quotes, bytes that
# are not UTF-8, deep nesting, huge numbers and JSON shapes.
TOKENS = [
    "(", ")", "[", "]", "{", "}", ":", ",", "=", "+", "*", "**", ".", "\\", "\n", "\t", " ",
    '"', "'", '"""', "#", "lambda", "def", "for", "if", "else", "not", "in", "and", "load(",
    "None", "True", "1" * 40, "-1", "0x", "\x00", "é", "[" * 1200, "(" * 1200,
    "+1" * 1500, '{"a":' * 300, "]" * 50, "null", "true", "1e999999", '"\\ud800"',
]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(12)
        at = rng.randrange(len(out) + 1)
        if op < 3 and out:  # replace a byte with printable ASCII
            out[min(at, len(out) - 1)] = rng.choice(b" \n()[]{}:,=+-*.\"'#\\abcxyz019_")
        elif op < 7:  # insert a token
            out[at:at] = rng.choice(TOKENS).encode("utf-8", "surrogatepass")
        elif op < 9:  # delete a span
            del out[at : at + rng.randint(1, 16)]
        elif op < 11:  # duplicate a span
            end = min(len(out), at + rng.randint(1, 64))
            out[at:at] = out[at:end]
        else:  # a byte that is not valid UTF-8 on its own
            out[at:at] = bytes([rng.randrange(0x80, 0x100)])
    return bytes(out)


@pytest.fixture(scope="module")
def seed_layout(tmp_path_factory) -> Path:
    """An OCI layout built by pyimg, to mutate the index.json and manifest of."""
    root = tmp_path_factory.mktemp("seed")
    ws = Workspace(root / "ws", root / "cache")
    ws.write("src/f.txt", "base\n")
    ws.write("src/BUILD.pyimg", 'pkg_tar(name = "t", srcs = ["f.txt"])\noci_image(name = "i", tars = [":t"])\n')
    assert ws.run("build", "//src:i").code == 0
    return ws.out("src/i")


def _workspace(tmp_path: Path, layout: Path, case: int) -> Workspace:
    ws = Workspace(tmp_path / f"ws{case}", tmp_path / "cache")
    ws.write("p/BUILD.pyimg", BUILD)
    ws.write("p/defs.bzl", DEFS)
    ws.write("p/a.txt", "a\n")
    ws.write("MODULE.pyimg", MODULE)
    shutil.copytree(layout, ws.root / "base/layout")
    index = json.loads((ws.root / "base/layout/index.json").read_text())
    digest = index["manifests"][0]["digest"]
    _pin(ws, digest)
    return ws


def _pin(ws: Workspace, digest: str) -> None:
    ws.write("base/BUILD.pyimg", f'oci_layout(name = "b", path = "layout", digest = "{digest}", '
                                 'visibility = ["//visibility:public"])\n')


def _swap_manifest(ws: Workspace, data: bytes) -> None:
    """Put `data` in as the layout's manifest, pinned by its own digest (so that parsing, not
    the digest check, meets it)."""
    layout = ws.root / "base/layout"
    hexdigest = hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / hexdigest).write_bytes(data)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"][0].update(digest=f"sha256:{hexdigest}", size=len(data))
    (layout / "index.json").write_text(json.dumps(index))
    _pin(ws, f"sha256:{hexdigest}")


def _fuzz(tmp_path: Path, layout: Path, cases: int, seed: int) -> None:
    rng = random.Random(seed)
    for case in range(cases):
        ws = _workspace(tmp_path, layout, case)
        target = ["p/BUILD.pyimg", "p/defs.bzl", "MODULE.pyimg", "index.json", "manifest"][case % 5]
        if target == "index.json":
            path = ws.root / "base/layout/index.json"
            path.write_bytes(_mutate(rng, path.read_bytes()))
        elif target == "manifest":
            index = json.loads((ws.root / "base/layout/index.json").read_text())
            blob = ws.root / "base/layout/blobs/sha256" / index["manifests"][0]["digest"][7:]
            _swap_manifest(ws, _mutate(rng, blob.read_bytes()))
        else:
            path = ws.root / target
            path.write_bytes(_mutate(rng, path.read_bytes()))
        r = ws.run("build", "--offline", "//p:img")
        shown = (ws.root / target).read_bytes()[:3000] if target not in ("index.json", "manifest") else b""
        assert r.code in (0, 1, 2), (case, target, r.code, r.err[-3000:], shown)
        assert "Traceback" not in r.err, (case, target, r.err[-3000:], shown)
        shutil.rmtree(ws.root)


def test_fuzz_quick(tmp_path, seed_layout):
    _fuzz(tmp_path, seed_layout, cases=30, seed=11)


@pytest.mark.slow
def test_fuzz_long(tmp_path, seed_layout):
    _fuzz(tmp_path, seed_layout, cases=400, seed=12)
