"""Runs an action graph in parallel: each action once its inputs exist, at most `jobs` at a time.

Workers are daemon threads (actions spend their time in subprocesses or in GIL-releasing hashing
and compression). The first failure cancels the rest unless `keep_going`; Ctrl-C sets the shared
cancel event, which running sandboxes and builtins observe within a fraction of a second.
"""

from __future__ import annotations

import heapq
import queue
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from pyimg.core.action import Action
from pyimg.core.executor import ActionExecutor, ExecutionRecord
from pyimg.errors import InterruptedBuildError, PyimgError, UserInputError

__all__ = ["ActionGraph", "BuildOutcome", "Scheduler"]

# What a worker reports for one action: the action, and its record or the error it raised.
_Finished = tuple[Action, ExecutionRecord | None, BaseException | None]
# Threads that ask the remote cache. A lookup waits on the network and the server, not on this
# machine's cores, so they do not take the `jobs` slots of actions that run here. How many calls
# are in flight is not this number: the client's gate (remote/flow.py) adapts that to what the
# server takes (BuildGrid refuses past 5 per core). More threads than calls make more lookups
# wait at once for their blobs, which then share fewer, larger BatchReadBlobs.
REMOTE_LOOKUPS = 16


class ActionGraph:
    """Actions indexed by the exec paths they produce. Inputs nobody produces are source files."""

    def __init__(self, actions: Iterable[Action]) -> None:
        self.actions: list[Action] = []
        self.producer: dict[str, Action] = {}
        for action in actions:
            self.actions.append(action)
            for out in action.all_outputs:
                other = self.producer.get(out)
                if other is not None and other != action:
                    raise UserInputError(
                        f"output '{out}' is declared by both {other.describe()} "
                        f"({other.origin}) and {action.describe()}",
                        origin=action.origin,
                    )
                self.producer[out] = action

    def deps(self, action: Action) -> list[Action]:
        seen: dict[int, Action] = {}
        for p in action.inputs + action.tools:
            dep = self.producer.get(p)
            if dep is not None:
                seen[id(dep)] = dep
        return list(seen.values())

    def closure(self, outputs: Iterable[str]) -> list[Action]:
        """The actions needed for `outputs`, dependencies first (a stable topological order)."""
        order: list[Action] = []
        state: dict[int, int] = {}  # 1 visiting, 2 done
        stack: list[tuple[Action, bool]] = []
        for out in sorted(set(outputs)):
            a = self.producer.get(out)
            if a is not None:
                stack.append((a, False))
            while stack:
                action, expanded = stack.pop()
                aid = id(action)
                if expanded:
                    state[aid] = 2
                    order.append(action)
                    continue
                if state.get(aid):
                    continue
                state[aid] = 1
                stack.append((action, True))
                for dep in reversed(self.deps(action)):
                    if not state.get(id(dep)):
                        stack.append((dep, False))
        return order


@dataclass
class BuildOutcome:
    records: list[ExecutionRecord] = field(default_factory=list)
    failures: list[PyimgError] = field(default_factory=list)

    @property
    def executed(self) -> int:
        return sum(1 for r in self.records if not r.cached)

    @property
    def cached(self) -> int:
        return sum(1 for r in self.records if r.cached)

    def error(self) -> PyimgError:
        """The failures as one error: the first one's type and origin, every message."""
        first = self.failures[0]
        if len(self.failures) == 1:
            return first
        rest = "\n".join(str(f) for f in self.failures[1:])
        return type(first)(f"{first.message}\n{rest}\n{len(self.failures)} actions failed",
                           origin=first.origin)


class Scheduler:
    def __init__(
        self,
        executor: ActionExecutor,
        jobs: int,
        keep_going: bool = False,
        on_start: Callable[[Action], None] | None = None,
        on_done: Callable[[ExecutionRecord], None] | None = None,
        on_end: Callable[[Action], None] | None = None,
        schedule_seed: str | None = None,
    ) -> None:
        """`on_start` and `on_end` are called on the worker thread that runs an action, as it
        begins and as it ends (also in failure; never for a cache hit); `on_done` on the caller's
        thread for each action with a result.

        `schedule_seed` (for `pyimg audit`, through PYIMG_SCHEDULE_SEED) permutes the order in
        which ready actions start, deterministically per seed, so that an audit run can prove
        that outputs do not depend on the order independent actions run in (docs/audit.md)."""
        self.executor = executor
        self.jobs = max(1, jobs)
        self.keep_going = keep_going
        self.on_start = on_start or (lambda a: None)
        self.on_done = on_done or (lambda r: None)
        self.on_end = on_end or (lambda a: None)
        self.schedule_seed = schedule_seed

    def run(self, graph: ActionGraph, outputs: Iterable[str]) -> BuildOutcome:
        """Run what `outputs` need. Raises InterruptedBuildError on Ctrl-C (after cleanup)."""
        cancel = self.executor.ctx.cancel
        needed = graph.closure(outputs)
        position = {id(a): i for i, a in enumerate(needed)}
        index = dict(position)  # the start order among ready actions
        seed = self.schedule_seed
        if seed:
            order = list(range(len(needed)))
            random.Random(seed).shuffle(order)
            index = {id(a): order[i] for i, a in enumerate(needed)}
        waiting_on: dict[int, int] = {}
        dependents: dict[int, list[Action]] = {id(a): [] for a in needed}
        for a in needed:
            deps = [d for d in graph.deps(a) if id(d) in index]
            waiting_on[id(a)] = len(deps)
            for d in deps:
                dependents[id(d)].append(a)
        # A heap by topological index: a stable order, so --jobs changes timing, not outputs.
        ready: list[tuple[int, int]] = [(index[id(a)], i) for i, a in enumerate(needed)
                                        if waiting_on[id(a)] == 0]
        heapq.heapify(ready)
        done_q: queue.Queue[_Finished] = queue.Queue()
        outcome = BuildOutcome()

        work_q: queue.Queue[tuple[Action, tuple[Any, Any], Any] | None] = queue.Queue()
        lookup_q: queue.Queue[tuple[Action, Any, Any] | None] = queue.Queue()

        def remote_lookup() -> None:
            """A local miss asked of the remote cache: a hit is done here, a miss goes on to a
            worker (with the request, so that it is not asked twice)."""
            while True:
                item = lookup_q.get()
                if item is None:
                    return
                action, key, components = item
                try:
                    record, request = self.executor.remote_lookup(action, key, components)
                except BaseException as e:  # noqa: BLE001 - reported through the queue
                    done_q.put((action, None, e))
                    continue
                if record is not None:
                    done_q.put((action, record, None))
                else:
                    work_q.put((action, (key, components), request))

        def worker() -> None:
            while True:
                item = work_q.get()
                if item is None:
                    return
                action, looked_up, remote_missed = item
                result: _Finished
                try:
                    if not cancel.is_set():
                        # Here, not when queued: the queue holds every ready action, and a
                        # display of running actions must show only the `jobs` that run.
                        self.on_start(action)
                    result = (action, self.executor.execute(action, looked_up, remote_missed),
                              None)
                except BaseException as e:  # noqa: BLE001 - reported through the queue
                    result = (action, None, e)
                try:
                    self.on_end(action)
                finally:
                    done_q.put(result)

        def complete(action: Action, record: ExecutionRecord) -> None:
            outcome.records.append(record)
            self.on_done(record)
            for dep in dependents[id(action)]:
                waiting_on[id(dep)] -= 1
                if waiting_on[id(dep)] == 0:
                    heapq.heappush(ready, (index[id(dep)], position[id(dep)]))

        threads = [threading.Thread(target=worker, daemon=True) for _ in range(self.jobs)]
        lookers = [threading.Thread(target=remote_lookup, daemon=True)
                   for _ in range(REMOTE_LOOKUPS if self.executor.ctx.remote is not None else 0)]
        for t in lookers:
            t.start()
        for t in threads:
            t.start()
        running = 0
        stopped = False
        try:
            while ready or running:
                while ready and not stopped:
                    action = needed[heapq.heappop(ready)[1]]
                    try:
                        key, components, hit = self.executor.lookup(action)
                    except PyimgError as e:
                        outcome.failures.append(e)
                        if not self.keep_going:
                            stopped = True
                            cancel.set()
                        continue
                    if hit is not None:
                        complete(action, hit)  # served here: no worker round trip
                        continue
                    if lookers and not cancel.is_set() and \
                            self.executor.looks_up_remotely(action):
                        lookup_q.put((action, key, components))
                    else:
                        work_q.put((action, (key, components), None))
                    running += 1
                if not running:
                    break
                try:
                    action, record, error = done_q.get(timeout=0.1)
                except queue.Empty:
                    continue
                running -= 1
                if error is not None:
                    if isinstance(error, InterruptedBuildError) and cancel.is_set():
                        continue
                    if not isinstance(error, PyimgError):
                        raise error
                    outcome.failures.append(error)
                    if not self.keep_going:
                        stopped = True
                        cancel.set()
                    continue
                assert record is not None
                complete(action, record)
        except KeyboardInterrupt:
            cancel.set()
            self._drain(done_q, running, timeout=2.0)
            raise InterruptedBuildError("interrupted") from None
        finally:
            for _ in threads:
                work_q.put(None)
            for _ in lookers:
                lookup_q.put(None)
        return outcome

    @staticmethod
    def _drain(done_q: queue.Queue[_Finished], running: int, timeout: float) -> None:
        """Wait (bounded) for running actions to observe the cancel event and clean up."""
        import time

        deadline = time.monotonic() + timeout
        while running > 0 and time.monotonic() < deadline:
            try:
                done_q.get(timeout=max(0.0, deadline - time.monotonic()))
                running -= 1
            except queue.Empty:
                break
