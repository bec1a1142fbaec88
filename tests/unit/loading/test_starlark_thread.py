"""A command's loading on the Starlark thread (limits.run_on_starlark_thread): no hand-over per
evaluation, the step budget still holds, and Ctrl-C stops Python code between evaluations."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import starlark as sl
from pyimg.loading import limits
from pyimg.loading._eval import evaluate


def _evaluate(source: str) -> object:
    return evaluate("f.bzl", source, sl.Module())


def test_evaluations_in_a_session_are_plain_calls_on_the_thread(monkeypatch):
    handovers = []
    real_run = limits._Evaluator.run

    def counting_run(self, fn):
        handovers.append(fn)
        return real_run(self, fn)

    monkeypatch.setattr(limits._Evaluator, "run", counting_run)

    def many() -> list[object]:
        assert threading.current_thread().name == "starlark"
        return [_evaluate(f"{i} + 1") for i in range(50)]

    assert limits.run_on_starlark_thread(many) == [i + 1 for i in range(50)]
    assert len(handovers) == 1  # the session itself; without it, one per evaluation
    assert _evaluate("2 * 3") == 6  # outside a session: still on the thread, handed over
    assert len(handovers) == 2


def test_the_step_budget_holds_in_a_session():
    limits.configure(max_steps=5)
    try:
        with pytest.raises(sl.StarlarkError, match="cancelled"):
            limits.run_on_starlark_thread(
                lambda: _evaluate("def f():\n    for i in range(100000000):\n        pass\nf()\n"))
        assert limits.run_on_starlark_thread(lambda: _evaluate("1 + 1")) == 2
    finally:
        limits.configure()


def test_ctrl_c_stops_python_code_between_evaluations():
    started = threading.Event()
    finished = []

    def slow_python() -> None:
        _evaluate("1")
        started.set()
        try:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:  # Python work with no evaluation in it
                time.sleep(0.001)
        finally:
            finished.append("cleanup ran on the thread")

    def press_ctrl_c() -> None:
        started.wait()
        os.kill(os.getpid(), signal.SIGINT)  # a real signal: it wakes the waiting main thread

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    with pytest.raises(KeyboardInterrupt):
        limits.run_on_starlark_thread(slow_python)
    presser.join()
    assert finished == ["cleanup ran on the thread"]
    assert limits.run_on_starlark_thread(lambda: _evaluate("40 + 2")) == 42  # usable again


@pytest.mark.parametrize("delay", [0.0, 0.002, 0.01])
def test_ctrl_c_at_any_moment_of_a_session_stops_it_and_leaves_the_thread_usable(delay):
    """Evaluations and Python code alternate, as in an analysis; Ctrl-C lands in either."""
    started = threading.Event()

    def analysis_like() -> None:
        started.set()
        while True:
            _evaluate("[i * i for i in range(200)]")
            sum(i * i for i in range(2000))  # Python work between evaluations

    main = threading.main_thread().ident
    assert main is not None

    def press_ctrl_c() -> None:
        started.wait()
        time.sleep(delay)
        # To the main thread, where a terminal's SIGINT lands (the kernel prefers it).
        signal.pthread_kill(main, signal.SIGINT)

    for _ in range(3):
        started.clear()
        presser = threading.Thread(target=press_ctrl_c)
        presser.start()
        with pytest.raises(KeyboardInterrupt):
            limits.run_on_starlark_thread(analysis_like)
        presser.join()
        assert limits.run_on_starlark_thread(lambda: _evaluate("40 + 2")) == 42
        assert _evaluate("1 + 1") == 2  # a hand-over from this thread works too
