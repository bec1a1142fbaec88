"""Build secrets: readable in the sandbox only, never in a cache, an output, a log or an error."""

from __future__ import annotations

import base64
import json
import os
import signal
import stat
import tempfile
import time
import uuid
from pathlib import Path

import pytest
from pyimg.core.secrets import leak_patterns
from workspace_helpers import Workspace

# Bytes whose base64 holds '+' and '/', so the URL-safe forms differ from the standard ones.
_BINARY = bytes([0xFB, 0xEF, 0xBE, 0xFF, 0xFF, 0xFF])


def _secret(tmp_path: Path) -> tuple[bytes, Path]:
    value = b"tok-" + uuid.uuid4().hex.encode() + _BINARY + uuid.uuid4().hex.encode()
    path = tmp_path / "npm_token"
    path.write_bytes(value)
    return value, path


def _files_under(*roots: Path) -> list[Path]:
    found = []
    for root in roots:
        for dirpath, _, filenames in os.walk(root):
            found.extend(Path(dirpath, f) for f in filenames)
    return found


def _holders(needles: tuple[bytes, ...], *roots: Path) -> list[str]:
    """Files under `roots` that contain any needle (a secret in any form)."""
    hits = []
    for path in _files_under(*roots):
        try:
            data = path.read_bytes()
        except OSError:
            continue
        if any(n in data for n in needles):
            hits.append(str(path))
    return hits


def _secret_dirs() -> set[Path]:
    dirs = set()
    for parent in (Path("/dev/shm"), Path(tempfile.gettempdir())):
        if parent.is_dir():
            dirs.update(parent.glob("pyimg-secrets-*"))
    return dirs


USES_SECRET = """
    genrule(
        name = "uses",
        outs = ["uses.txt"],
        secrets = ["npm_token"],
        cmd = "wc -c < $$PYIMG_SECRET_npm_token > $@; echo $$PYIMG_SECRET_npm_token >> $@; "
              + "test -r $$PYIMG_SECRET_npm_token && ! test -w $$PYIMG_SECRET_npm_token; "
              + "echo progress line on stdout",
    )
"""


def test_secret_is_readable_in_the_sandbox_and_found_nowhere_after(
    ws: Workspace, tmp_path: Path
) -> None:
    value, path = _secret(tmp_path)
    ws.write("p/BUILD.pyimg", USES_SECRET)
    before = _secret_dirs()
    r = ws.run("build", "--verbose", "--secret", f"id=npm_token,src={path}", "//p:uses")
    assert r.code == 0, r.err
    assert ws.out("p/uses.txt").read_text() == f"{len(value)}\n/pyimg/secrets/npm_token\n"
    needles = leak_patterns(value)
    assert _holders(needles, ws.cache, ws.root / "pyimg-out") == []
    assert not any(n.decode("latin-1") in r.out + r.err for n in needles)
    assert _secret_dirs() <= before  # the private file and its directory are gone
    # The key holds an HMAC under a per-user key (mode 0600), so a changed secret re-runs it.
    key = ws.cache / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and key.stat().st_size == 32
    [record] = [json.loads(p.read_text()) for p in ws.cache.glob("output_bases/*/last_build.json")]
    [entry] = record.values()
    assert entry["components"]["secrets"]["npm_token"].startswith("hmac-sha256:")
    assert (
        ws.run("build", "--secret", f"id=npm_token,src={path}", "//p:uses").err.count(
            "1 cache hits"
        )
        == 1
    )
    path.write_bytes(value + b"-rotated")
    r = ws.run("build", "--secret", f"id=npm_token,src={path}", "//p:uses")
    assert r.code == 0 and "1 actions run" in r.err, r.err


def test_secret_from_env_and_from_pyimgrc(
    ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = "env-" + uuid.uuid4().hex
    monkeypatch.setenv("MY_NPM_TOKEN", value)
    ws.write(".pyimgrc", "build --secret id=npm_token,env=MY_NPM_TOKEN\n")
    ws.write("p/BUILD.pyimg", USES_SECRET.replace("echo progress", "env > env.txt; echo progress"))
    r = ws.run("build", "//p:uses")
    assert r.code == 0, r.err
    assert ws.out("p/uses.txt").read_text().startswith(f"{len(value)}\n")
    assert _holders(leak_patterns(value.encode()), ws.cache, ws.root / "pyimg-out") == []


def test_missing_secret_is_exit_2_naming_action_and_id_before_anything_runs(ws: Workspace) -> None:
    ws.write(
        "p/BUILD.pyimg",
        """
        genrule(name = "first", outs = ["first.txt"], cache_dirs = {"M": "marker"},
                cmd = "touch $$M/ran; echo > $@")
        genrule(name = "needs", srcs = [":first"], outs = ["needs.txt"], secrets = ["npm_token"],
                cmd = "cat $$PYIMG_SECRET_npm_token > /dev/null; echo > $@")
    """,
    )
    r = ws.run("build", "//p:needs")
    assert r.code == 2
    assert "p/BUILD.pyimg:4" in r.err and "//p:needs" in r.err and "'npm_token'" in r.err
    assert not (ws.cache / "cache_dirs" / "marker" / "ran").exists()  # nothing ran


def test_bad_secret_flags_are_usage_errors(ws: Workspace, tmp_path: Path) -> None:
    ws.write("p/BUILD.pyimg", USES_SECRET)
    for flag in (
        "id=npm_token",
        "id=npm-token,src=/x",
        "npm_token",
        "id=npm_token,src=/x,env=Y",
        f"id=npm_token,src={tmp_path}/missing",
        "id=npm_token,env=PYIMG_SURELY_UNSET_VAR",
    ):
        r = ws.run("build", "--secret", flag, "//p:uses")
        assert r.code == 2, (flag, r.err)
        assert "--secret" in r.err


@pytest.mark.parametrize(
    "encode",
    [
        "cat $$S",
        "printf 'prefix:'; cat $$S; printf ':suffix'",
        "base64 -w0 < $$S",
        "printf x | cat - $$S | base64 -w0",
        "printf xy | cat - $$S | base64 | tr '+/' '-_'",
        "base64 < $$S",
        "od -An -tx1 -v < $$S | tr -d ' \\n'",
        "od -An -tx1 -v < $$S | tr -d ' \\n' | tr a-f A-F",
    ],
    ids=[
        "raw",
        "raw-embedded",
        "base64",
        "base64-offset1",
        "base64url-offset2",
        "base64-wrapped",
        "hex",
        "HEX",
    ],
)
def test_output_holding_the_secret_fails_and_reaches_no_cache(
    ws: Workspace, tmp_path: Path, encode: str
) -> None:
    value, path = _secret(tmp_path)
    ws.write(
        "p/BUILD.pyimg",
        f"""
        genrule(name = "leaky", outs = ["leak.txt"], secrets = ["npm_token"],
                cmd = "S=$$PYIMG_SECRET_npm_token; ({encode}) > $@")
    """,
    )
    r = ws.run("build", "--secret", f"id=npm_token,src={path}", "//p:leaky")
    assert r.code == 1, r.err
    assert "//p:leaky" in r.err and "'pyimg-out/p/leak.txt'" in r.err and "'npm_token'" in r.err
    assert not ws.out("p/leak.txt").exists()
    assert _holders(leak_patterns(value), ws.cache, ws.root) == []
    assert not list(ws.cache.glob("ac/**/*.json")) or all(
        "leak.txt" not in p.read_text() for p in ws.cache.glob("ac/**/*") if p.is_file()
    )


def test_output_directory_file_holding_the_secret_fails(ws: Workspace, tmp_path: Path) -> None:
    value, path = _secret(tmp_path)
    ws.write(
        "p/defs.bzl",
        """
        def _impl(ctx):
            d = ctx.actions.declare_directory(ctx.label.name)
            ctx.actions.run_shell(outputs = [d], command = "mkdir -p %s/sub && base64 $PYIMG_SECRET_tok > %s/sub/f" % (d.path, d.path), secrets = ["tok"])
            return [DefaultInfo(files = [d])]
        tree = rule(implementation = _impl)
    """,
    )
    ws.write(
        "p/BUILD.pyimg",
        """
        load(":defs.bzl", "tree")
        tree(name = "t")
    """,
    )
    r = ws.run("build", "--secret", f"id=tok,src={path}", "//p:t")
    if "declare_directory" in r.err:
        pytest.skip("output directories are not available from Starlark here")
    assert r.code == 1, r.err
    assert "'pyimg-out/p/t/sub/f'" in r.err and "'tok'" in r.err
    assert _holders(leak_patterns(value), ws.cache, ws.root) == []


def test_failure_output_is_redacted(ws: Workspace, tmp_path: Path) -> None:
    value, path = _secret(tmp_path)
    ws.write(
        "p/BUILD.pyimg",
        """
        genrule(name = "noisy", outs = ["n.txt"], secrets = ["npm_token"],
                cmd = "echo token is; cat $$PYIMG_SECRET_npm_token; echo; "
                      + "base64 -w0 $$PYIMG_SECRET_npm_token; echo; exit 3")
        genrule(name = "wrapped", outs = ["w.txt"], secrets = ["npm_token"],
                cmd = "echo token is; base64 -w 20 $$PYIMG_SECRET_npm_token; exit 3")
    """,
    )
    r = ws.run("build", "--secret", f"id=npm_token,src={path}", "//p:noisy")
    assert r.code == 1
    assert "token is" in r.err and "[secret npm_token]" in r.err
    for needle in leak_patterns(value):
        assert needle.decode("latin-1") not in r.err
    assert base64.b64encode(value).decode() not in r.err
    r = ws.run("build", "--secret", f"id=npm_token,src={path}", "//p:wrapped")
    assert r.code == 1
    assert "output withheld" in r.err and "secret npm_token" in r.err
    assert base64.b64encode(value).decode()[:20] not in r.err


def test_ctrl_c_during_an_action_leaves_no_secret_file(ws: Workspace, tmp_path: Path) -> None:
    value, path = _secret(tmp_path)
    ws.write(
        "p/BUILD.pyimg",
        """
        genrule(name = "slow", outs = ["slow.txt"], secrets = ["npm_token"],
                cmd = "cat $$PYIMG_SECRET_npm_token > /dev/null; sleep 60; echo > $@")
    """,
    )
    before = _secret_dirs()
    proc = ws.spawn("build", "--secret", f"id=npm_token,src={path}", "//p:slow")
    try:
        deadline = time.monotonic() + 30
        mine: list[Path] = []
        while not mine and time.monotonic() < deadline and proc.poll() is None:
            mine = [f for d in _secret_dirs() - before for f in d.glob("*/npm_token")]
            time.sleep(0.05)
        assert mine, "the secret file never appeared"
        time.sleep(0.3)  # let the action start in its sandbox
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert not any(f.exists() for f in mine)
    # This build's secret directories are gone (other builds on the machine may have their own).
    assert not any(f.parents[1].exists() for f in mine)
    assert _holders(leak_patterns(value), ws.cache, ws.root) == []
