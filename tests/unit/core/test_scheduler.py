"""The scheduler: dependency order, at most `jobs` running, cache hits served without a worker,
failures (stop or keep going) and the callbacks a progress display relies on."""

from __future__ import annotations

import contextlib
import threading
import time
from types import SimpleNamespace
from typing import Any

from pyimg.core.action import KIND_BUILTIN, Action
from pyimg.core.action_cache import ActionResult
from pyimg.core.digest import digest_bytes
from pyimg.core.executor import ExecutionRecord
from pyimg.core.scheduler import ActionGraph, Scheduler
from pyimg.errors import ActionFailedError, InterruptedBuildError


def _action(output: str, *inputs: str) -> Action:
    return Action(kind=KIND_BUILTIN, builtin="fake", inputs=inputs, outputs=(output,),
                  mnemonic="Fake", progress_message=f"making {output}")


class FakeExecutor:
    """Runs an action by sleeping; records the order and how many ran at once."""

    def __init__(self, hits: set[str] = frozenset(), fail: set[str] = frozenset(),  # type: ignore[assignment]
                 seconds: float = 0.03) -> None:
        self.ctx = SimpleNamespace(cancel=threading.Event(), remote=None)
        self.hits, self.fail, self.seconds = hits, fail, seconds
        self.lock = threading.Lock()
        self.order: list[str] = []
        self.now = 0
        self.most = 0

    def batched_durable_writes(self) -> contextlib.nullcontext[None]:
        return contextlib.nullcontext()

    def _record(self, action: Action, cached: bool) -> ExecutionRecord:
        key = digest_bytes(action.outputs[0].encode())
        return ExecutionRecord(action, key, {}, cached, ActionResult({}, {}))

    def lookup(self, action: Action) -> tuple[Any, dict[str, Any], ExecutionRecord | None]:
        hit = self._record(action, True) if action.outputs[0] in self.hits else None
        return digest_bytes(action.outputs[0].encode()), {}, hit

    def execute(self, action: Action, looked_up: Any, remote_missed: Any = None) -> ExecutionRecord:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            deadline = time.monotonic() + self.seconds
            while time.monotonic() < deadline:
                if self.ctx.cancel.is_set():
                    raise InterruptedBuildError("cancelled")
                time.sleep(0.005)
            if action.outputs[0] in self.fail:
                raise ActionFailedError(f"{action.outputs[0]} failed")
            with self.lock:
                self.order.append(action.outputs[0])
            return self._record(action, False)
        finally:
            with self.lock:
                self.now -= 1


class Display:
    """What a progress display sees: the actions between on_start and on_end."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.lock = threading.Lock()
        self.running: set[str] = set()
        self.most = 0
        self.started: list[str] = []
        self.done: list[tuple[str, bool]] = []

    def start(self, action: Action) -> None:
        with self.lock:
            self.running.add(action.outputs[0])
            self.started.append(action.outputs[0])
            self.most = max(self.most, len(self.running))

    def end(self, action: Action) -> None:
        with self.lock:
            self.running.discard(action.outputs[0])

    def finished(self, record: ExecutionRecord) -> None:
        self.done.append((record.action.outputs[0], record.cached))


def _run(actions: list[Action], executor: FakeExecutor, jobs: int, keep_going: bool = False,
         goals: list[str] | None = None) -> tuple[Any, Display]:
    display = Display(jobs)
    scheduler = Scheduler(executor, jobs, keep_going, display.start, display.finished,  # type: ignore[arg-type]
                          display.end)
    outcome = scheduler.run(ActionGraph(actions), goals or [a.outputs[0] for a in actions])
    return outcome, display


def test_dependencies_run_first_and_a_display_sees_only_what_runs() -> None:
    # a chain c <- b <- a beside eight independent actions, two jobs
    actions = [_action("a"), _action("b", "a"), _action("c", "b"),
               *(_action(f"x{i}") for i in range(8))]
    executor = FakeExecutor()
    outcome, display = _run(actions, executor, jobs=2)
    assert outcome.failures == []
    order = executor.order
    assert order.index("a") < order.index("b") < order.index("c")
    assert len(order) == 11 and outcome.executed == 11
    # Every ready action is queued at once, yet only the two that run are ever on display.
    assert executor.most == 2
    assert display.most == 2
    assert display.running == set()


def test_cache_hits_are_served_without_a_worker() -> None:
    actions = [_action("a"), _action("b", "a"), _action("c", "b")]
    executor = FakeExecutor(hits={"a", "b"})
    outcome, display = _run(actions, executor, jobs=2)
    assert executor.order == ["c"]
    assert display.started == ["c"]  # a hit never "starts"
    assert sorted(display.done) == [("a", True), ("b", True), ("c", False)]
    assert (outcome.executed, outcome.cached) == (1, 2)


def test_a_failure_cancels_the_rest_and_leaves_nothing_on_display() -> None:
    actions = [_action("bad"), *(_action(f"x{i}") for i in range(6)), _action("after", "bad")]
    executor = FakeExecutor(fail={"bad"}, seconds=0.05)
    outcome, display = _run(actions, executor, jobs=2)
    assert [str(f) for f in outcome.failures] == ["bad failed"]
    assert "after" not in executor.order
    assert len(executor.order) < 6  # the cancel event stopped the others
    assert display.running == set()


def test_keep_going_runs_everything_that_does_not_need_the_failure() -> None:
    actions = [_action("bad"), *(_action(f"x{i}") for i in range(4)), _action("after", "bad")]
    executor = FakeExecutor(fail={"bad"})
    outcome, display = _run(actions, executor, jobs=2, keep_going=True)
    assert [str(f) for f in outcome.failures] == ["bad failed"]
    assert sorted(executor.order) == ["x0", "x1", "x2", "x3"]
    assert display.running == set()


def test_only_what_the_goals_need_runs() -> None:
    actions = [_action("a"), _action("b", "a"), _action("unrelated")]
    executor = FakeExecutor()
    outcome, _ = _run(actions, executor, jobs=1, goals=["b"])
    assert executor.order == ["a", "b"]


def test_with_one_job_independent_actions_start_in_the_graphs_order() -> None:
    actions = [_action(f"x{i}") for i in (3, 0, 4, 1, 2)]
    executor = FakeExecutor(seconds=0.01)
    _, display = _run(actions, executor, jobs=1)
    assert display.started == [f"x{i}" for i in range(5)]  # goals sorted, a stable heap


class RemoteExecutor(FakeExecutor):
    """A fake with a remote cache: `remote_hits` are served by it; every lookup waits at a
    barrier of `together` parties, so that they pass only when that many are in flight."""

    def __init__(self, remote_hits: set[str], together: int) -> None:
        super().__init__()
        self.ctx.remote = object()
        self.remote_hits = remote_hits
        self.barrier = threading.Barrier(together, timeout=60)
        self.asked: list[str] = []
        self.missed: dict[str, Any] = {}

    def looks_up_remotely(self, action: Action) -> bool:
        return True

    def remote_lookup(self, action: Action, key: Any, components: Any) -> tuple[Any, Any]:
        self.barrier.wait()
        with self.lock:
            self.asked.append(action.outputs[0])
        if action.outputs[0] in self.remote_hits:
            return self._record(action, True), None
        return None, f"request of {action.outputs[0]}"

    def execute(self, action: Action, looked_up: Any, remote_missed: Any = None) -> ExecutionRecord:
        with self.lock:
            self.missed[action.outputs[0]] = remote_missed
        return super().execute(action, looked_up, remote_missed)


def test_remote_lookups_run_side_by_side_outside_the_job_slots() -> None:
    # Four independent actions and one job: the four lookups meet at the barrier only if the
    # scheduler has them in flight together, which the one worker could not.
    graph = ActionGraph([_action(f"o{i}") for i in range(4)])
    executor = RemoteExecutor(remote_hits={"o0", "o1", "o2"}, together=4)
    display = Display(jobs=1)
    outcome = Scheduler(executor, jobs=1, on_start=display.start,  # type: ignore[arg-type]
                        on_end=display.end).run(graph, [f"o{i}" for i in range(4)])
    assert sorted(executor.asked) == ["o0", "o1", "o2", "o3"]
    assert sorted(r.action.outputs[0] for r in outcome.records) == ["o0", "o1", "o2", "o3"]
    # A remote hit takes no worker; the miss runs once, told that the remote already missed.
    assert executor.order == ["o3"]
    assert executor.missed == {"o3": "request of o3"}
    assert display.started == ["o3"]
