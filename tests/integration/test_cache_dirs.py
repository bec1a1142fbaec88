"""Cache directories: persistent, shared safely, in no key and no output
(docs/sandbox-secrets-caches.md, "Cache directories")."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

from workspace_helpers import Workspace

# An "expensive" step (sleep) that runs only when the cache dir is cold; it counts its runs.
EXPENSIVE = (
    "if [ ! -f $$CC/artifact ]; then sleep 1.5; echo compiled > $$CC/artifact; "
    "echo ran >> $$CC/expensive_runs; fi; cat $$CC/artifact > $@"
)


def _cache_dir(ws: Workspace, name: str) -> Path:
    return ws.cache / "cache_dirs" / name


def _last_build(ws: Workspace) -> dict:
    [path] = ws.cache.glob("output_bases/*/last_build.json")
    return json.loads(path.read_text())


def _genrule(ws: Workspace, rev: str, name: str = "gocache") -> None:
    ws.write(
        "p/BUILD.pyimg",
        f"""
        genrule(
            name = "warm",
            outs = ["warm.txt"],
            env = {{"REV": "{rev}"}},
            cache_dirs = {{"CC": "{name}"}},
            cmd = "{EXPENSIVE}",
        )
    """,
    )


def test_warm_cache_dir_speeds_up_a_changed_action_with_identical_output(ws: Workspace) -> None:
    _genrule(ws, "1")
    start = time.monotonic()
    r = ws.run("build", "//p:warm")
    cold = time.monotonic() - start
    assert r.code == 0, r.err
    first = ws.out("p/warm.txt").read_bytes()

    _genrule(ws, "2")  # a different key: the action runs again, with the warm cache dir
    start = time.monotonic()
    r = ws.run("build", "//p:warm")
    warm = time.monotonic() - start
    assert r.code == 0, r.err
    assert "1 actions run, 0 cache hits" in r.err
    assert ws.out("p/warm.txt").read_bytes() == first == b"compiled\n"
    # The marker is the proof; the timing only confirms it, loosely.
    assert (_cache_dir(ws, "gocache") / "expensive_runs").read_text() == "ran\n"
    assert warm < cold - 0.75


def test_cache_dir_is_in_no_key_and_no_output(ws: Workspace) -> None:
    ws.write(
        "p/BUILD.pyimg",
        """
        genrule(name = "where", outs = ["where.txt"], cache_dirs = {"CC": "one"},
                cmd = "echo $$CC > $@")
    """,
    )
    assert ws.run("build", "//p:where").code == 0
    assert ws.out("p/where.txt").read_text() == "/pyimg/cache/CC\n"  # a fixed path, not the host's
    record = json.dumps(_last_build(ws))
    assert str(ws.cache) not in record and '"one"' not in record
    [entry] = _last_build(ws).values()
    assert entry["components"]["cache_dirs"] == ["CC"]  # the variable shapes the env: in the key
    # The directory's name is not in the key: renaming it reuses the cached result.
    ws.write(
        "p/BUILD.pyimg",
        """
        genrule(name = "where", outs = ["where.txt"], cache_dirs = {"CC": "two"},
                cmd = "echo $$CC > $@")
    """,
    )
    r = ws.run("build", "//p:where")
    assert r.code == 0 and "0 actions run, 1 cache hits" in r.err, r.err


def test_concurrent_actions_never_share_a_cache_dir_at_once(ws: Workspace) -> None:
    # A read-modify-write with a pause: without mutual exclusion, increments get lost.
    rules = "\n".join(
        f"""genrule(name = "n{i}", outs = ["n{i}.txt"], cache_dirs = {{"C": "shared"}},
                cmd = "echo start >> $$C/log; n=$$(cat $$C/n 2>/dev/null || echo 0); sleep 0.3; "
                      + "echo $$((n+1)) > $$C/n; echo end >> $$C/log; echo {i} > $@")"""
        for i in range(4)
    )
    ws.write(
        "p/BUILD.pyimg", rules + '\nfilegroup(name = "all", srcs = [":n0", ":n1", ":n2", ":n3"])\n'
    )
    r = ws.run("build", "--jobs", "4", "//p:all")
    assert r.code == 0, r.err
    shared = _cache_dir(ws, "shared")
    assert (shared / "n").read_text() == "4\n"
    assert (shared / "log").read_text() == "start\nend\n" * 4


def test_clean_cache_dirs_removes_only_them_and_expunge_removes_everything(ws: Workspace) -> None:
    ws.write(
        "p/BUILD.pyimg",
        """
        genrule(name = "ro", outs = ["ro.txt"], cache_dirs = {"C": "modcache"},
                cmd = "mkdir -p $$C/mod && echo x > $$C/mod/f && chmod -R a-w $$C/mod; echo ok > $@")
    """,
    )
    assert ws.run("build", "//p:ro").code == 0
    assert (_cache_dir(ws, "modcache") / "mod" / "f").exists()
    assert ws.run("clean", "--cache-dirs").code == 0
    assert not (ws.cache / "cache_dirs").exists()  # read-only trees (Go's module cache) go too
    assert ws.out("p/ro.txt").exists() and (ws.cache / "cas").exists()
    assert ws.run("build", "//p:ro").code == 0  # cached; the cache dir is not an output
    assert not (ws.cache / "cache_dirs").exists()
    ws.write(
        "p/BUILD.pyimg",
        """
        genrule(name = "ro", outs = ["ro.txt"], cache_dirs = {"C": "modcache"},
                cmd = "mkdir -p $$C/mod && echo x > $$C/mod/f && chmod -R a-w $$C/mod; echo ok2 > $@")
    """,
    )
    assert ws.run("build", "//p:ro").code == 0
    assert stat.S_ISDIR((_cache_dir(ws, "modcache") / "mod").stat().st_mode)
    assert ws.run("clean", "--expunge").code == 0
    assert not ws.cache.exists() or not any(ws.cache.iterdir())


def test_bad_cache_dir_name_is_a_user_error(ws: Workspace) -> None:
    ws.write(
        "p/BUILD.pyimg",
        """
        genrule(name = "bad", outs = ["bad.txt"], cache_dirs = {"C": "../escape"}, cmd = "true > $@")
    """,
    )
    r = ws.run("build", "//p:bad")
    assert r.code == 2
    assert "p/BUILD.pyimg:" in r.err and "'../escape'" in r.err
    assert not (ws.cache / "escape").exists()
