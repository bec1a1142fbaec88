"""No bad input crashes pyimg: each exits 1 or 2 with one clear message, never a segfault, a Python
traceback or an exhausted host (docs/concepts.md, "Limits").

Inputs that crashed the interpreter run in a child process, so that a regression fails the test
instead of killing pytest; the child also gets an address-space cap, so that a regression of the
memory limit cannot take the machine down.
"""

from __future__ import annotations

import json
import resource
import signal
import time
from pathlib import Path

from workspace_helpers import Workspace

SAFETY_NET = 3 << 30  # address space of a child: well above what pyimg needs, far below the host


def _cap() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (SAFETY_NET, SAFETY_NET))


def _child(ws: Workspace, *args: str, timeout: float = 300):
    proc = ws.spawn(*args, preexec_fn=_cap)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out.decode(), err.decode()


def _clean_failure(ws: Workspace, *args: str, code: int = 2) -> str:
    rc, _, err = _child(ws, "build", *args)
    assert rc == code, (rc, err[-2000:])
    assert "Traceback" not in err and "panicked" not in err, err[-2000:]
    assert err.startswith("ERROR: ") and err.count("ERROR: ") == 1, err[-2000:]
    return err


# -- Starlark that overflowed the parser's native stack -------------------------------------------


def test_operator_chain_of_5000_terms(ws):
    ws.write("p/BUILD.pyimg", "x = " + "+".join(["1"] * 5000) + "\n")
    err = _clean_failure(ws, "//p:all")
    assert err.startswith("ERROR: p/BUILD.pyimg:1:2006: expression nested too deeply")


def test_list_nested_3000_deep_in_build_bzl_and_module(ws):
    deep = "[" * 3000 + "]" * 3000
    ws.write("p/BUILD.pyimg", f"\nx = {deep}\n")
    assert _clean_failure(ws, "//p:all").startswith("ERROR: p/BUILD.pyimg:2:1005: expression nested")
    ws.write("p/defs.bzl", f"X = {deep}\n")
    ws.write("p/BUILD.pyimg", 'load(":defs.bzl", "X")\n')
    assert _clean_failure(ws, "//p:all").startswith("ERROR: p/defs.bzl:1:1005: expression nested")
    ws.write("p/BUILD.pyimg", "")
    ws.write("MODULE.pyimg", f"x = {deep}\n")
    assert _clean_failure(ws, "//p:all").startswith("ERROR: MODULE.pyimg:1:1005: expression nested")


def test_nesting_within_the_limit_still_builds(ws):
    ws.write("p/BUILD.pyimg", f"""
x = {"[" * 900 + "]" * 900}
y = {"+".join(['"a"'] * 900)}
s = "{"[" * 5000}"  # brackets in strings and comments do not count: {"(" * 5000}
genrule(name = "g", outs = ["g.txt"], cmd = "echo %d > $@" % len(y))
""")
    rc, _, err = _child(ws, "build", "//p:g")
    assert rc == 0, err
    assert ws.out("p/g.txt").read_text() == "900\n"


# -- Starlark evaluation ----------------------------------------------------------------------


def test_invalid_utf8_points_at_the_first_bad_byte(ws):
    ws.root.joinpath("p").mkdir()
    ws.root.joinpath("p/BUILD.pyimg").write_bytes(b'x = 1\ny = "caf\xe9"\n')
    err = _clean_failure(ws, "//p:all")
    assert err.startswith("ERROR: p/BUILD.pyimg:2:9: the file is not valid UTF-8 (byte 0xe9")
    ws.root.joinpath("p/defs.bzl").write_bytes(b"# \xff\n")
    ws.write("p/BUILD.pyimg", 'load(":defs.bzl", "X")\n')
    assert _clean_failure(ws, "//p:all").startswith("ERROR: p/defs.bzl:1:3: the file is not valid UTF-8")
    ws.write("p/BUILD.pyimg", "")
    ws.root.joinpath("MODULE.pyimg").write_bytes(b"# \xc3\xbc\n\n  \x80")
    assert _clean_failure(ws, "//p:all").startswith("ERROR: MODULE.pyimg:3:3: the file is not valid UTF-8")


def test_recursion_is_a_short_clean_error(ws):
    ws.write("p/BUILD.pyimg", "def f(n):\n    return f(n + 1)\n\nf(0)\n")
    err = _clean_failure(ws, "//p:all")
    assert err.startswith("ERROR: p/BUILD.pyimg:2:12: Starlark call stack overflow")
    assert "(f) [" in err and " times]" in err  # the repeated frame is folded
    assert len(err.splitlines()) < 30


FOREVER = """
def forever():
    for i in range(2000000000):
        for j in range(2000000000):
            pass

forever()
"""  # a loop that never ends, at line 4


def test_a_loop_that_never_ends_stops_at_the_step_limit(ws):
    ws.write("p/BUILD.pyimg", FOREVER)
    err = _clean_failure(ws, "--starlark-max-steps=200", "//p:all")
    assert err.startswith("ERROR: p/BUILD.pyimg:4:9: evaluation stopped after about 200,000 loop")
    assert "--starlark-max-steps" in err


def test_the_step_limit_applies_to_rule_implementations(ws):
    ws.write("p/defs.bzl", """
def _impl(ctx):
    for i in range(2000000000):
        pass
    return []

r = rule(implementation = _impl, attrs = {})
""")
    ws.write("p/BUILD.pyimg", 'load(":defs.bzl", "r")\nr(name = "x")\n')
    err = _clean_failure(ws, "--starlark-max-steps=200", "//p:x")
    assert err.startswith("ERROR: p/BUILD.pyimg:2:1: r //p:x: evaluation stopped after about")
    assert "p/defs.bzl:3:5" in err  # where in the rule


def test_doubling_a_list_forty_times_hits_the_memory_limit(ws):
    ws.write("p/BUILD.pyimg", "l = [1]\n" + "l = l + l\n" * 40)
    err = _clean_failure(ws, "--starlark-memory-mib=256", "//p:all")
    assert err.startswith("ERROR: p/BUILD.pyimg: evaluating this file needed more than 256 MiB")


def test_ctrl_c_stops_a_loop_that_never_ends(ws):
    ws.write("p/BUILD.pyimg", FOREVER)
    proc = ws.spawn("build", "--starlark-max-steps=0", "//p:all", preexec_fn=_cap)
    stat = Path(f"/proc/{proc.pid}/stat")
    # Wait until the child is busy in the loop (it has used CPU time), then interrupt it.
    while proc.poll() is None and int(stat.read_text().rsplit(")", 1)[1].split()[11]) < 100:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err.decode() and "Interrupted." in err.decode()


# -- JSON we did not write ------------------------------------------------------------------------


def _deep_json(depth: int) -> bytes:
    return b'{"schemaVersion": 2, "manifests": [], "x": ' + b"[" * depth + b"]" * depth + b"}"


def test_index_json_nested_100000_deep(ws):
    ws.write("base/layout/oci-layout", '{"imageLayoutVersion": "1.0.0"}')
    (ws.root / "base/layout/index.json").write_bytes(_deep_json(100_000))
    ws.write("base/BUILD.pyimg", f'oci_layout(name = "b", path = "layout", digest = "sha256:{"ab" * 32}")\n')
    err = _clean_failure(ws, "//base:b")
    assert "base/layout/index.json: not valid JSON: JSON nested more than 100 levels deep" in err


def test_manifest_nested_100000_deep(ws):
    import hashlib

    blob = _deep_json(100_000).replace(b'"manifests": []', b'"config": {}, "layers": []')
    digest = hashlib.sha256(blob).hexdigest()
    ws.write("base/layout/oci-layout", '{"imageLayoutVersion": "1.0.0"}')
    ws.write(f"base/layout/blobs/sha256/{digest}", "")
    (ws.root / f"base/layout/blobs/sha256/{digest}").write_bytes(blob)
    ws.write("base/layout/index.json", json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": f"sha256:{digest}", "size": len(blob)}]}))
    ws.write("base/BUILD.pyimg", f'oci_layout(name = "b", path = "layout", digest = "sha256:{digest}")\n')
    err = _clean_failure(ws, "//base:b")
    assert digest in err and "nested more than 100 levels deep" in err


def test_lock_file_nested_100000_deep(ws):
    (ws.root / "pyimg.lock").write_bytes(_deep_json(100_000))
    ws.write("MODULE.pyimg", f'http_file(name = "f", urls = ["file:///nope"], sha256 = "{"ab" * 32}")\n')
    ws.write("p/BUILD.pyimg", 'filegroup(name = "g", srcs = ["@f//file"])\n')
    err = _clean_failure(ws, "//p:g")
    assert "pyimg.lock is not valid JSON (JSON nested more than 100 levels deep)" in err
