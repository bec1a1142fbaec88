"""Build progress: a live status line on a terminal, a plain log otherwise, and a summary."""

from __future__ import annotations

import threading
import time
from typing import TextIO

from pyimg.core.action import Action
from pyimg.core.executor import ExecutionRecord

__all__ = ["Progress"]

_TICK_SECONDS = 0.5  # how often a terminal's display is redrawn while actions run


class Progress:
    def __init__(self, out: TextIO, total: int, verbose: bool = False, color: str = "auto",
                 hits: int = 0) -> None:
        """`hits`: actions already known to be cache hits (an incremental build's others)."""
        self.out = out
        self.total = total
        self.verbose = verbose
        self.tty = hasattr(out, "isatty") and out.isatty()
        self.color = color == "yes" or (color == "auto" and self.tty)
        self.done = hits
        self.hits = hits
        self.ran = 0
        self.running: dict[int, tuple[Action, float]] = {}
        self._lock = threading.Lock()
        self._last_draw = 0.0
        self._drawn = False
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def started(self, action: Action) -> None:
        """An action began to run (called from the worker that runs it)."""
        with self._lock:
            self.running[id(action)] = (action, time.monotonic())
            if not self.tty and self.verbose:
                self._line(f"[{self.done}/{self.total}] {action.progress_message}")
            self._draw()
            if self.tty and self._ticker is None:
                # The running actions' times go on while nothing starts or ends (a long layer).
                self._ticker = threading.Thread(target=self._tick, daemon=True)
                self._ticker.start()

    def ended(self, action: Action) -> None:
        """An action stopped running (called from its worker), with a result or without one."""
        with self._lock:
            self.running.pop(id(action), None)

    def finished(self, record: ExecutionRecord) -> None:
        with self._lock:
            self.running.pop(id(record.action), None)
            self.done += 1
            if record.cached:
                self.hits += 1
            else:
                self.ran += 1
                if not self.tty:
                    self._line(
                        f"[{self.done}/{self.total}] {record.action.progress_message} "
                        f"({record.seconds:.2f}s)"
                    )
            self._draw()

    def _line(self, text: str) -> None:
        self._clear()
        print(text, file=self.out, flush=True)

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self.out.write("\r\x1b[J")
            self._drawn = False

    def _draw(self, force: bool = False) -> None:
        if not self.tty:
            return
        now = time.monotonic()
        if not force and now - self._last_draw < 0.05:
            return
        self._last_draw = now
        self._clear()
        head = f"[{self.done}/{self.total}] {self.ran} run, {self.hits} cached"
        lines = [self._bold(head)]
        for action, t0 in sorted(self.running.values(), key=lambda x: x[1])[:6]:
            lines.append(f"    {action.progress_message}; {now - t0:.1f}s")
        self.out.write("\n".join(lines))
        if len(lines) > 1:
            self.out.write(f"\x1b[{len(lines) - 1}A\r")
        self.out.flush()
        self._drawn = True

    def _bold(self, s: str) -> str:
        return f"\x1b[1m{s}\x1b[0m" if self.color else s

    def _tick(self) -> None:
        while not self._stop.wait(_TICK_SECONDS):
            with self._lock:
                if self.running and not self._stop.is_set():
                    self._draw(force=True)

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            self._clear()
            if self.tty:
                self.out.flush()


def summary(ran: int, hits: int, seconds: float) -> str:
    return f"Build completed: {ran} actions run, {hits} cache hits, {seconds:.2f}s"

