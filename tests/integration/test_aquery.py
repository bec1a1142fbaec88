"""`pyimg aquery`: the actions of targets, with the same keys that `pyimg build` computes."""

from __future__ import annotations

import json

BUILD = """
genrule(
    name = "a",
    srcs = ["a.txt"],
    outs = ["a.out"],
    cmd = "cat $< > $@",
    env = {"TOKEN_NAME": "value-not-shown"},
)
genrule(
    name = "ab",
    srcs = [":a", "b.txt"],
    outs = ["ab.out"],
    cmd = "cat $(SRCS) > $@",
)
pkg_tar(name = "tar", srcs = [":ab"], package_dir = "/app")
"""


def _ws(ws):
    ws.write("p/BUILD.pyimg", BUILD)
    ws.write("p/a.txt", "A\n")
    ws.write("p/b.txt", "B\n")


def _aquery(ws, *args):
    r = ws.run("aquery", "--output", "json", *args)
    assert r.code == 0, r.err
    return json.loads(r.out)["actions"]


def test_json_shape(ws):
    _ws(ws)
    (a,) = _aquery(ws, "//p:a")
    assert set(a) >= {
        "mnemonic",
        "target",
        "origin",
        "kind",
        "inputs",
        "tools",
        "host_tools",
        "outputs",
        "output_dirs",
        "argv",
        "builtin",
        "params",
        "env",
        "secrets",
        "key",
        "cached",
    }
    assert a["target"] == "//p:a" and a["mnemonic"] == "Genrule" and a["kind"] == "run"
    assert a["inputs"] == ["p/a.txt"] and a["outputs"] == ["pyimg-out/p/a.out"]
    assert a["argv"][-1] == "cat p/a.txt > pyimg-out/p/a.out"
    assert a["env"] == ["TOKEN_NAME"]  # names only
    assert "value-not-shown" not in json.dumps(a)
    assert a["key"].startswith("sha256:") and a["cached"] is False  # sources only: key is known
    (ab,) = _aquery(ws, "//p:ab")
    assert ab["key"] is None and ab["key_note"] == "unknown until pyimg-out/p/a.out is built"


def test_keys_equal_the_build_record(ws):
    _ws(ws)
    r = ws.run("build", "//p:tar")
    assert r.code == 0, r.err
    (path,) = ws.cache.glob("output_bases/*/last_build.json")
    record = json.loads(path.read_text())
    rows = _aquery(ws, "deps(//p:tar)")
    assert sorted(r["target"] for r in rows) == ["//p:a", "//p:ab", "//p:tar"]
    for row in rows:
        entry = record[
            f"{row['target']} {row['mnemonic']} {(row['outputs'] + row['output_dirs'])[0]}"
        ]
        assert row["key"] == entry["key"]
        assert row["cached"] is True
    (tar,) = [r for r in rows if r["target"] == "//p:tar"]
    assert tar["kind"] == "builtin" and tar["builtin"] and tar["params"]


def test_text_output_and_expressions(ws):
    _ws(ws)
    r = ws.run("aquery", "kind(genrule, //p:all)")
    assert r.code == 0, r.err
    blocks = r.out.split("\n\n")
    assert blocks[0].splitlines()[0] == "action 'Genrule //p:a'"
    assert "  Environment: [TOKEN_NAME]" in blocks[0]
    assert "  Command Line: /bin/sh -c 'cat p/a.txt > pyimg-out/p/a.out'" in blocks[0]
    assert "  ActionKey: sha256:" in blocks[0]
    assert blocks[1].splitlines()[0] == "action 'Genrule //p:ab'"
    assert "value-not-shown" not in r.out
    r = ws.run("aquery", "//p:a.txt")
    assert r.code == 0 and r.out == "" and "no actions" in r.err
