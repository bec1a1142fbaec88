#!/usr/bin/env python3
"""Where a build's per-action time goes (docs/benchmarks.md, "Per-action cost at scale"): runs
`pyimg` with the arguments given, timing the executor's steps on its worker threads (wall and
thread CPU, summed over all actions), and prints the table on stderr at the end.

    cd <workspace> && <repo>/.venv/bin/python <repo>/tools/bench/action_phases.py build //... --jobs 2

It wraps private functions of core/executor.py and core/sandbox.py by name: a step renamed there
drops out of the table (it is a measuring aid, not part of the test suite).
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from pyimg.core import action_cache, cas
from pyimg.core import executor as ex
from pyimg.core import sandbox as sb

_TOTALS: collections.defaultdict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0, 0.0])
_LOCK = threading.Lock()


def _wrap(owner: Any, name: str, label: str) -> None:
    fn: Callable[..., Any] | None = getattr(owner, name, None)
    if fn is None:
        return

    def timed(*args: Any, **kwargs: Any) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
            with _LOCK:
                entry = _TOTALS[label]
                entry[0] += 1
                entry[1] += wall
                entry[2] += cpu

    setattr(owner, name, timed)


def main() -> int:
    for owner, name, label in (
        (ex.ActionExecutor, "execute", "execute (all of one action)"),
        (ex.ActionExecutor, "_stage_into_execroot", "stage one input"),
        (ex.ActionExecutor, "_ingest", "ingest outputs"),
        (ex.ActionExecutor, "_check_inputs_unchanged", "check inputs unchanged"),
        (ex.ActionExecutor, "_sanitized_etc", "find the copy of /etc"),
        (getattr(ex, "_ScratchSlots", None), "give_back", "empty the scratch slot"),
        (ex, "remove_tree", "remove a scratch tree"),
        (sb, "run_sandboxed", "run_sandboxed"),
        (sb, "_run", "  spawn, command, wait"),
        (sb, "_plan", "  plan the mounts"),
        (action_cache.ActionCache, "put", "action-cache entry written"),
        (cas, "_fsync_file", "fsync of an output blob"),
        (cas.os, "fsync", "os.fsync (any)"),
        (cas, "sync_filesystem", "syncfs (one per batch)"),
    ):
        if owner is not None:
            _wrap(owner, name, label)
    from pyimg.cli.main import main as pyimg_main

    try:
        return pyimg_main(sys.argv[1:])
    finally:
        print(f"{'step':34} {'calls':>7} {'wall s':>8} {'CPU s':>7} {'wall ms/call':>12}",
              file=sys.stderr)
        for label, (n, wall, cpu) in sorted(_TOTALS.items(), key=lambda kv: -kv[1][1]):
            print(f"{label:34} {int(n):7d} {wall:8.2f} {cpu:7.2f} {1000 * wall / max(n, 1):12.2f}",
                  file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
