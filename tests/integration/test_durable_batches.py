"""A build killed with SIGKILL while action-cache entries are committed in batches (one sync per
batch, core/executor.py `_DurableBatch`): the entries committed before the kill are served, the
cache holds nothing corrupt, and the next build is correct."""

from __future__ import annotations

import os
import time

FAST = 20


def _build_file(slow_cmd: str) -> str:
    rules = [f'genrule(name = "f{i}", outs = ["f{i}.txt"], cmd = "echo {i} > $@")'
             for i in range(FAST)]
    srcs = ", ".join(f'":f{i}"' for i in range(FAST))
    rules.append(f'genrule(name = "slow", srcs = [{srcs}], outs = ["slow.txt"], '
                 f'cmd = "{slow_cmd}")')
    return "\n".join(rules) + "\n"


def _entries(ws) -> int:
    ac = ws.cache / "ac"
    return sum(len([n for n in os.listdir(ac / fan) if not n.startswith(".")])
               for fan in os.listdir(ac)) if ac.is_dir() else 0


def _ran(result) -> int:
    line = [ln for ln in result.err.splitlines() if ln.startswith("Build completed")][-1]
    return int(line.split(": ")[1].split(" actions run")[0])


def test_a_kill_keeps_the_committed_batches_and_the_cache_sound(ws):
    ws.write("p/BUILD.pyimg", _build_file("sleep 30; cat $(SRCS) > $@"))
    proc = ws.spawn("build", "//p:slow")
    try:
        # The fast actions' entries are committed by the batch's timer while the slow one runs.
        deadline = time.monotonic() + 60
        while _entries(ws) < FAST:
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline, "the fast actions' entries were never committed"
            time.sleep(0.05)
    finally:
        proc.kill()
        proc.communicate()
    r = ws.run("cache", "verify", "--disk-cache", str(ws.cache))
    assert (r.code, r.out) == (0, ""), r.err
    assert "nothing corrupt" in r.err

    ws.write("p/BUILD.pyimg", _build_file("cat $(SRCS) > $@"))
    r = ws.run("build", "//p:slow")
    assert r.code == 0, r.err
    assert _ran(r) == 1  # only the killed action: the 20 committed entries were served
    assert ws.out("p/slow.txt").read_text() == "".join(f"{i}\n" for i in range(FAST))
