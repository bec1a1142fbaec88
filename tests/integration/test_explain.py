"""`pyimg explain`: after a rebuild it names the key component that made each action run."""

from __future__ import annotations

CHAIN = """
genrule(
    name = "a",
    srcs = ["a.txt"],
    outs = ["a.out"],
    cmd = "cat $< > $@",
)
genrule(
    name = "b",
    srcs = ["b.txt"],
    outs = ["b.out"],
    cmd = "cat $< > $@",
    env = {"GREETING": "hello"},
)
genrule(
    name = "ab",
    srcs = [":a", ":b"],
    outs = ["ab.out"],
    cmd = "cat $(SRCS) > $@",
)
"""


def _chain(ws, build=CHAIN):
    ws.write("p/BUILD.pyimg", build)
    ws.write("p/a.txt", "A\n")
    ws.write("p/b.txt", "B\n")
    r = ws.run("build", "//p:ab")
    assert r.code == 0, r.err


def _explain(ws, *args):
    r = ws.run("explain", *args)
    assert r.code == 0, r.err
    return r.out


def _record(ws, name="last"):
    from pyimg.build.build_record import load_build_records

    (output_base,) = ws.cache.glob("output_bases/*")
    last, previous = load_build_records(output_base)
    return last if name == "last" else previous


def _digest(ws, rel):
    from pyimg.core.digest import digest_bytes

    return str(digest_bytes((ws.root / rel).read_bytes()))


def test_input_file_change_names_the_input_and_its_digests(ws):
    _chain(ws)
    old = _digest(ws, "p/a.txt")
    ws.write("p/a.txt", "A2\n")
    assert ws.run("build", "//p:ab").code == 0
    out = _explain(ws, "//p:a")
    assert "//p:a Genrule pyimg-out/p/a.out: ran (p/BUILD.pyimg:2:1)" in out
    assert f"  input p/a.txt: {old} -> {_digest(ws, 'p/a.txt')}" in out
    assert out.splitlines()[-1] == "//p:a: 1 actions, 1 ran, 0 cache hits"


def test_dependency_output_change_is_traced_to_its_producer(ws):
    _chain(ws)
    ws.write("p/a.txt", "A2\n")
    assert ws.run("build", "//p:ab").code == 0
    out = _explain(ws, "//p:ab")
    ab = "//p:ab Genrule pyimg-out/p/ab.out"
    old = _record(ws, "previous")[ab]["components"]["inputs"]["pyimg-out/p/a.out"]
    new = _record(ws)[ab]["components"]["inputs"]["pyimg-out/p/a.out"]
    assert new == _digest(ws, "p/a.txt") != old  # a.out is a copy of a.txt
    lines = out.splitlines()
    # dependencies first: the root cause (a.txt) comes before what it caused
    assert lines.index("//p:a Genrule pyimg-out/p/a.out: ran (p/BUILD.pyimg:2:1)") < lines.index(
        "//p:ab Genrule pyimg-out/p/ab.out: ran (p/BUILD.pyimg:15:1)"
    )
    assert f"  input pyimg-out/p/a.out (output of //p:a Genrule): {old} -> {new}" in lines
    assert not any(line.startswith("//p:b ") for line in lines)  # a hit: only with --all
    assert lines[-1] == "//p:ab: 3 actions, 2 ran, 1 cache hits"
    full = _explain(ws, "//p:ab", "--all")
    assert "//p:b Genrule pyimg-out/p/b.out: local cache hit" in full
    own = _explain(ws, "//p:ab", "--no-deps")
    assert own.splitlines()[-1] == "//p:ab: 1 actions, 1 ran, 0 cache hits"


def test_genrule_cmd_change_names_the_argv_element(ws):
    _chain(ws)
    ws.write(
        "p/BUILD.pyimg",
        CHAIN.replace('cmd = "cat $(SRCS) > $@"', 'cmd = "cat $(SRCS) | sort > $@"'),
    )
    assert ws.run("build", "//p:ab").code == 0
    out = _explain(ws, "//p:ab")
    assert (
        "  argv[2]: 'cat pyimg-out/p/a.out pyimg-out/p/b.out > pyimg-out/p/ab.out' -> "
        "'cat pyimg-out/p/a.out pyimg-out/p/b.out | sort > pyimg-out/p/ab.out'"
    ) in out
    assert "input" not in out


def test_env_change_names_the_variable_not_its_value(ws):
    _chain(ws)
    ws.write("p/BUILD.pyimg", CHAIN.replace('"hello"', '"bonjour"'))
    assert ws.run("build", "//p:ab").code == 0
    out = _explain(ws, "//p:b")
    assert "  env GREETING: value changed" in out
    assert "hello" not in out and "bonjour" not in out
    ws.write(
        "p/BUILD.pyimg", CHAIN.replace('{"GREETING": "hello"}', '{"GREETING": "hello", "X": "1"}')
    )
    assert ws.run("build", "//p:ab").code == 0
    out = _explain(ws, "//p:b")
    assert "  env GREETING: value changed" in out and "  env X: added" in out


def test_new_action_and_unchanged_key(ws):
    _chain(ws)
    out = _explain(ws, "//p:ab")
    assert out.count("new action") == 3
    # a no-op build: everything hits, nothing to explain unless --all
    assert ws.run("build", "//p:ab").code == 0
    assert _explain(ws, "//p:ab").splitlines() == ["//p:ab: 3 actions, 0 ran, 3 cache hits"]
    # same key but the result is gone from the action cache: says so instead of inventing a cause
    for entry in ws.cache.glob("ac/*/*"):
        entry.unlink()
    # Another command line: the no-op fast path (outputs intact) would not even look.
    assert ws.run("build", "--jobs", "1", "//p:ab").code == 0
    assert _explain(ws, "//p:a").count("key unchanged since the previous build") == 1


def test_previous_record_keeps_actions_the_last_build_did_not_need(ws):
    _chain(ws)
    ws.write("p/a.txt", "A2\n")
    assert ws.run("build", "//p:b").code == 0  # a build without //p:a in it
    assert ws.run("build", "//p:a").code == 0
    out = _explain(ws, "//p:a")
    assert "input p/a.txt:" in out and "new action" not in out
    assert "//p:a Genrule pyimg-out/p/a.out" in _record(ws, "previous")


def test_explain_errors(ws):
    r = ws.run("explain", "//p:ab")
    assert r.code == 2 and "run `pyimg build` first" in r.err
    _chain(ws)
    r = ws.run("explain", "//p:abc")
    assert r.code == 2 and "ran no action of //p:abc (did you mean //p:ab?)" in r.err


def test_diff_components_of_params_tools_and_format():
    from pyimg.build.explain import diff_components

    old = {
        "format": "v1",
        "params": {"a": 1, "b": {"c": 2}},
        "tools": ["t1"],
        "host_tools": {"/bin/sh": "sha256:1"},
        "secrets": {"tok": "hmac1"},
    }
    new = {
        "format": "v2",
        "params": {"a": 1, "b": {"c": 3}, "d": "x"},
        "tools": ["t2"],
        "host_tools": {"/bin/sh": "sha256:2"},
        "secrets": {"tok": "hmac2"},
    }
    assert diff_components(old, new) == [
        "output-format version: v1 -> v2",
        "params.b.c: 2 -> 3",
        "params.d: added x",
        "tools: ['t1'] -> ['t2']",
        "host tool /bin/sh: sha256:1 -> sha256:2",
        "secret tok: value changed",
    ]
