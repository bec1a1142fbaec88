"""The progress display: a plain log off a terminal; on one, a live view of what runs now."""

from __future__ import annotations

import io
import re
import time

from pyimg.build import progress as progress_module
from pyimg.build.progress import Progress
from pyimg.core.action import KIND_BUILTIN, Action
from pyimg.core.action_cache import ActionResult
from pyimg.core.digest import digest_bytes
from pyimg.core.executor import ExecutionRecord


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _action(name: str) -> Action:
    return Action(kind=KIND_BUILTIN, builtin="fake", outputs=(name,), progress_message=f"Making {name}")


def _record(action: Action, cached: bool = False) -> ExecutionRecord:
    return ExecutionRecord(action, digest_bytes(b"k"), {}, cached, ActionResult({}, {}), 0.25)


def _last_view(out: str) -> str:
    """The last frame drawn: what follows the last clear-to-end-of-screen."""
    return out.rsplit("\x1b[J", 1)[-1]


def test_plain_log_off_a_terminal() -> None:
    out = io.StringIO()
    p = Progress(out, total=2)
    a, b = _action("a"), _action("b")
    p.started(a)
    p.ended(a)
    p.finished(_record(a))
    p.finished(_record(b, cached=True))
    p.close()
    assert out.getvalue() == "[1/2] Making a (0.25s)\n"


def test_a_terminal_shows_only_the_actions_that_run() -> None:
    out = Terminal()
    p = Progress(out, total=3, color="no")
    a, b, c = _action("a"), _action("b"), _action("c")
    p.started(a)
    p.started(b)
    p.ended(a)
    p.finished(_record(a))
    p.started(c)
    p._draw(force=True)  # as the ticker would
    view = _last_view(out.getvalue())
    assert view.startswith("[1/3] 1 run, 0 cached")
    assert re.findall(r"Making (\w)", view) == ["b", "c"]
    p.ended(b)  # b failed: it ends without a result, and leaves the view
    p.ended(c)
    p.finished(_record(c))
    p._draw(force=True)
    assert re.findall(r"Making (\w)", _last_view(out.getvalue())) == []
    p.close()


def test_the_terminal_view_ticks_while_an_action_runs(monkeypatch) -> None:
    monkeypatch.setattr(progress_module, "_TICK_SECONDS", 0.02)
    out = Terminal()
    p = Progress(out, total=1, color="no")
    p.started(_action("slow"))
    frames = out.getvalue().count("Making slow")
    time.sleep(0.3)  # nothing starts or ends meanwhile
    assert out.getvalue().count("Making slow") > frames
    p.close()
    after = out.getvalue()
    time.sleep(0.1)
    assert out.getvalue() == after  # closed: no more frames
    assert after.endswith("\r\x1b[J")  # and the view is cleared
