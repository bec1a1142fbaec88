"""How many actions run at once: one more than the cores by default, --jobs when given; and
never more built-in actions (which compute in this process) than the cores."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from pyimg.build import request
from pyimg.build.request import ExecutionOptions
from pyimg.core.action import KIND_BUILTIN, Action
from pyimg.core.action_cache import ActionCache
from pyimg.core.cas import ContentStore
from pyimg.core.executor import ActionExecutor, BuildContext
from pyimg.core.file_digests import FileDigestCache
from pyimg.core.scheduler import ActionGraph, Scheduler


def test_one_more_action_than_cores_by_default_and_jobs_when_given(monkeypatch):
    monkeypatch.setattr(request, "cores", lambda: 4)
    assert (ExecutionOptions().workers(), ExecutionOptions().parallelism()) == (5, 4)
    assert (ExecutionOptions(jobs=3).workers(), ExecutionOptions(jobs=3).parallelism()) == (3, 3)


def test_cores_are_those_the_process_may_run_on(monkeypatch):
    monkeypatch.setattr(request.os, "sched_getaffinity", lambda pid: {0, 5}, raising=False)
    assert request.cores() == 2  # a cpuset of 2 on a bigger machine


def test_no_more_builtins_at_once_than_the_cores(tmp_path: Path):
    running, peak, lock = [0], [0], threading.Lock()

    def slow_builtin(call) -> None:
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        for path in call.outputs.values():
            path.write_text("made")

    cas = ContentStore(tmp_path / "cache")
    ctx = BuildContext(workspace=tmp_path / "ws", cache_root=tmp_path / "cache",
                       scratch_root=tmp_path / "scratch", format_version="v1",
                       builtins={"slow": slow_builtin}, jobs=2, cancel=threading.Event())
    executor = ActionExecutor(ctx, cas, ActionCache(tmp_path / "cache", cas), FileDigestCache(None))
    actions = [Action(KIND_BUILTIN, (f"pyimg-out/o{i}",), builtin="slow", params={"i": i})
               for i in range(8)]
    outcome = Scheduler(executor, jobs=5).run(ActionGraph(actions), [a.outputs[0] for a in actions])
    assert not outcome.failures and len(outcome.records) == 8
    assert peak[0] == 2
