"""Bounds on evaluating Starlark: source nesting, steps, memory and native stack, each a clear error.

starlark-pyo3 compiles and evaluates on the native stack of the calling thread and keeps no
bound of its own on memory or time, so a hostile or mistaken BUILD file could crash pyimg
(a stack overflow is a segfault) or take the host down. pyimg therefore:

- scans every file before the parser sees it and refuses expressions nested deeper than
  `MAX_NESTING` levels (brackets, operator chains, indented blocks), at the offending
  file:line:col;
- evaluates on one thread of its own with a large stack (`STACK_BYTES`), so that any file
  within that limit has a wide margin (measured: the 8 MiB default stack overflows at about
  2,000 levels, this one beyond 250,000);
- counts evaluation steps through starlark's cancellation hook (called about once per thousand
  loop iterations) and stops a file after `Limits.max_steps` of them, which also makes Ctrl-C
  work during a long loop;
- caps the address space the process may grow by while Starlark runs (`Limits.memory_mib`,
  Linux `RLIMIT_AS`), so that `l = l + l` repeated fails in the evaluation instead of
  exhausting the host.

docs/concepts.md ("Limits") documents the figures and the flags that raise them.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pyimg.errors import UserInputError

if TYPE_CHECKING:
    import starlark as sl

__all__ = [
    "MAX_NESTING",
    "Limits",
    "StarlarkLimitError",
    "check_nesting",
    "configure",
    "decode_source",
    "run_limited",
    "run_on_starlark_thread",
    "steps_message",
]

T = TypeVar("T")

MAX_NESTING = 1000
STACK_BYTES = 1 << 30  # reserved address space; only the pages a deep evaluation touches are used


@dataclass
class Limits:
    """What one evaluation may use; the CLI's --starlark-* flags set them."""

    memory_mib: int = 4096  # growth of the address space while Starlark runs; 0: no limit
    max_steps: int = 10_000  # thousands of loop iterations per file; 0: no limit


LIMITS = Limits()


def configure(memory_mib: int | None = None, max_steps: int | None = None) -> None:
    """Set the limits of this process's evaluations; None restores a default."""
    LIMITS.memory_mib = Limits.memory_mib if memory_mib is None else memory_mib
    LIMITS.max_steps = Limits.max_steps if max_steps is None else max_steps


class StarlarkLimitError(UserInputError):
    """A file went beyond one of pyimg's limits on Starlark evaluation."""


# -- source checks (before the parser) -----------------------------------------------------------


def decode_source(data: bytes, display: str) -> str:
    """`data` as UTF-8, or an error at the file:line:col of the first byte that is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        good = data[: e.start].decode("utf-8")
        line = good.count("\n") + 1
        col = len(good) - (good.rfind("\n") + 1) + 1
        raise UserInputError(
            f"the file is not valid UTF-8 (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "BUILD, .bzl and MODULE.pyimg files must be UTF-8",
            origin=f"{display}:{line}:{col}",
        ) from None


# Tokens that can add a level to the syntax tree, and those that end a sibling (`,` `;`, a
# newline outside brackets). Identifiers and numbers are skipped by the regex engine: they add
# nothing. Every `.` counts (attribute chains; a float's dot only makes the estimate larger).
_TOKEN = re.compile(
    r"""(?P<str>[rRbB]{0,2}(?:'''|\"\"\"|'|"))"""
    r"|(?P<comment>\#[^\n]*)"
    r"|(?P<open>[(\[{])"
    r"|(?P<close>[)\]}])"
    r"|(?P<sep>[,;])"
    r"|(?P<nl>\\\r?\n|\r?\n[ \t\f]*)"
    r"|(?P<op>\*\*|//|<<|>>|[-+*/%&|^~<>.]|\b(?:and|or|not|in|if|else|lambda|for)\b)"
)
_WORD_BEFORE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
_KEYWORDS = frozenset(
    "and or not in if else lambda for return elif while def load pass break continue".split()
)


def check_nesting(text: str, display: str, limit: int = MAX_NESTING) -> None:
    """Refuse `text` when its syntax tree could be deeper than `limit`, at the file:line:col
    where the bound is first passed. The bound is an upper one: each open bracket, each
    operator since the last `,` at its bracket level, each call or index, and each indented
    block adds one. Strings and comments are skipped as Starlark's tokenizer skips them."""
    if _nesting_bound(text) > limit:  # most files are far below: no scan needed
        _scan_nesting(text, display, limit)


def _scan_nesting(text: str, display: str, limit: int) -> None:
    levels = [0]  # operators in the current segment, per open bracket (index 0: the statement)
    total = 0  # sum(levels) + open brackets
    indents = [0]
    pos = 0
    search = _TOKEN.search
    while True:
        m = search(text, pos)
        if m is None:
            return
        kind = m.lastgroup
        pos = m.end()
        if kind == "op":
            levels[-1] += 1
            total += 1
        elif kind == "open":
            if _is_postfix(text, m.start()):
                levels[-1] += 1  # a call or an index applies to what precedes it
                total += 1
            levels.append(0)
            total += 1
        elif kind == "close":
            if len(levels) > 1:
                total -= levels.pop() + 1
            continue
        elif kind == "sep":
            total -= levels[-1]
            levels[-1] = 0
            continue
        elif kind == "nl":
            if len(levels) == 1 and not m.group(0).startswith("\\"):
                total -= levels[0]
                levels[0] = 0
                if text[pos : pos + 1] not in ("", "\r", "\n", "#"):  # a line of code
                    width = len(m.group(0).lstrip("\r\n").expandtabs(8))
                    while width < indents[-1]:
                        indents.pop()
                    if width > indents[-1]:
                        indents.append(width)
        elif kind == "str":
            quote = m.group(0).lstrip("rRbB")
            pos = _string_end(text, m.end() - len(quote))
            continue
        else:  # a comment
            continue
        if total + len(indents) - 1 > limit:
            line = text.count("\n", 0, m.start()) + 1
            col = m.start() - text.rfind("\n", 0, m.start())
            raise StarlarkLimitError(
                f"expression nested too deeply: more than {limit} levels of brackets, "
                "operators and blocks, which is pyimg's limit (split it, for example into "
                "named intermediate values; see the Limits section of docs/concepts.md)",
                origin=f"{display}:{line}:{col}",
            )


def _nesting_bound(text: str) -> int:
    """A cheap upper bound of what `check_nesting` can count anywhere in `text` (C-speed substring
    counts, strings and comments included): every bracket twice (itself, and a call or index),
    every operator character and keyword (as a substring), and one indented block per line."""
    return (
        2 * sum(map(text.count, "([{"))
        + sum(map(text.count, "-+*/%&|^~<>."))
        + sum(map(text.count, _LEVEL_WORDS))
        + text.count("\n")
        + 1
    )


_LEVEL_WORDS = ("and", "or", "not", "in", "if", "else", "lambda", "for")


def _is_postfix(text: str, start: int) -> bool:
    """Whether the bracket at `start` follows an operand (`f(`, `x[`, `)(`) rather than an
    operator or a keyword (`= [`, `in [`, `return (`)."""
    before = text[max(0, start - 64) : start].rstrip(" \t")
    if not before:
        return False
    last = before[-1]
    if last in ")]}\"'":
        return True
    if not (last.isalnum() or last == "_"):
        return False
    word = _WORD_BEFORE.search(before)
    return not (word is not None and word.group(0) in _KEYWORDS)


# The rest of a string literal after its opening quote: up to the closing quote, or to the end
# of the line (of the file for triple quotes) when it is unterminated: the parser reports that.
_STRING_BODY = {
    "'": re.compile(r"(?:[^'\\\n]|\\.)*(?:'|(?=\n)|$)", re.S),
    '"': re.compile(r'(?:[^"\\\n]|\\.)*(?:"|(?=\n)|$)', re.S),
    "'''": re.compile(r"(?:[^'\\]|\\.|'(?!''))*(?:'''|$)", re.S),
    '"""': re.compile(r'(?:[^"\\]|\\.|"(?!""))*(?:"""|$)', re.S),
}


def _string_end(text: str, i: int) -> int:
    """The index just after the string literal whose quote starts at `i` (at the end of the line
    or file for an unterminated one: the parser reports it)."""
    quote = text[i : i + 3] if text[i : i + 3] in ('"""', "'''") else text[i]
    m = _STRING_BODY[quote].match(text, i + len(quote))
    return m.end() if m is not None else len(text)  # None: a lone backslash ends the file


# -- evaluation (steps, memory, stack) ---------------------------------------------------------


class _Budget:
    """The cancellation hook of one evaluation: counts steps, and stops on Ctrl-C."""

    def __init__(self, max_steps: int, cancel: threading.Event) -> None:
        self.max_steps = max_steps
        self.steps = 0
        self.cancel = cancel

    def __call__(self) -> bool:
        self.steps += 1
        return self.cancel.is_set() or (0 < self.max_steps < self.steps)

    @property
    def exhausted(self) -> bool:
        return 0 < self.max_steps < self.steps


class _Evaluator:
    """One thread with a large stack on which all Starlark runs, one evaluation at a time
    (loading is sequential); an evaluation that loads another file runs it inline.

    Handing work to the thread costs two thread switches, and on a loaded machine each one
    waits for the GIL (up to the 5 ms switch interval) and for a core: measured, most of the
    loading time at 10,000 targets. A command therefore runs its whole loading and analysis
    on the thread (`run_on_starlark_thread`), and each evaluation is then a plain call."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._work: Callable[[], None] | None = None
        self._ready = threading.Condition(self._lock)
        self.cancel = threading.Event()
        # Evaluations under way on the thread, and whether it runs handed-over work at all;
        # with `cancel`, read and written under `_guard`, so that Ctrl-C knows whether the
        # thread is inside starlark (stopped by the budget hook), in Python code of the work
        # (interrupted by an exception sent to it) or idle (nothing to stop).
        self._guard = threading.Lock()
        self.depth = 0
        self._working = False

    def on_thread(self) -> bool:
        return threading.current_thread() is self._thread

    @contextmanager
    def evaluating(self) -> Iterator[None]:
        """Mark an evaluation under way on the thread; refuse to start one after Ctrl-C."""
        with self._guard:
            if self.cancel.is_set():
                raise KeyboardInterrupt
            self.depth += 1
        try:
            yield
        finally:
            with self._guard:
                self.depth -= 1

    def run(self, fn: Callable[[], T]) -> T:
        outcome: list[Any] = []
        done = threading.Event()

        def work() -> None:
            try:
                try:
                    with self._guard:
                        if self.cancel.is_set():
                            raise KeyboardInterrupt
                        self._working = True
                    value = fn()
                finally:
                    with self._guard:
                        self._working = False
                        if self.cancel.is_set():
                            # An exception sent as `fn` ended, not raised yet: it must not
                            # land in the bookkeeping below (a `done` never set hangs Ctrl-C).
                            _send_exception(threading.get_ident(), None)
                outcome.append((True, value))
            except BaseException as e:  # re-raised on the calling thread
                outcome.append((False, e))
            finally:
                done.set()

        with self._lock:
            self.cancel.clear()
            self._work = work
            self._ready.notify()
        try:
            # In slices: a SIGINT wakes this thread, but while the Starlark thread runs Python
            # code the handler then waited 0.3 to 1 s for the GIL; a timed wait takes it back
            # within the switch interval.
            while not done.wait(0.05):
                pass
        except KeyboardInterrupt:
            # Inside starlark, the budget hook stops the evaluation at its next check; in Python
            # code between evaluations, an exception sent to the thread stops it. Wait for that
            # (its `finally` blocks run there): a thread still inside starlark when the
            # interpreter exits aborts the process.
            self._interrupt()
            try:
                done.wait()
            except KeyboardInterrupt:
                os._exit(130)  # a second Ctrl-C: the user wants out now
            raise
        ok, value = outcome[0]
        if not ok:
            raise value
        return value

    def _interrupt(self) -> None:
        with self._guard:
            self.cancel.set()
            if self._working and self.depth == 0 and self._thread is not None \
                    and self._thread.ident is not None:
                _send_exception(self._thread.ident, KeyboardInterrupt)

    def start(self) -> None:
        """Start the thread (before any cap on the address space: its stack is reserved now)."""
        if self._thread is not None:
            return
        previous = threading.stack_size()
        threading.stack_size(STACK_BYTES)
        try:
            self._thread = threading.Thread(target=self._loop, name="starlark", daemon=True)
            self._thread.start()
        finally:
            threading.stack_size(previous)

    def _loop(self) -> None:
        while True:
            try:
                with self._lock:
                    while self._work is None:
                        self._ready.wait()
                    work, self._work = self._work, None
                work()
            except KeyboardInterrupt:  # sent by Ctrl-C just as the work ended: nothing to stop
                pass


def _send_exception(thread_id: int, exception: type[BaseException] | None) -> None:
    """Raise `exception` in the thread at its next Python instruction (None: withdraw one sent
    and not raised yet). Python code between evaluations runs on the Starlark thread, which
    no signal reaches."""
    import ctypes

    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exception) if exception else None)


_EVALUATOR = _Evaluator()


def run_limited(evaluate: Callable[[sl.EvalOptions], T], display: str) -> T:
    """Call `evaluate(options)` (a starlark `EvalOptions` carrying the step budget) within the
    limits: on the large-stack thread, with the address space capped while it runs. Running out
    of memory raises StarlarkLimitError naming `display`; running out of steps makes starlark
    fail with "Evaluation cancelled" at the loop's file:line:col, which `render_error` words
    with `STEPS_MESSAGE`."""
    import starlark as sl

    budget = _Budget(LIMITS.max_steps, _EVALUATOR.cancel)
    options = sl.EvalOptions(check_cancelled=budget)

    def limited() -> T:
        try:
            return evaluate(options)
        except MemoryError:
            raise _out_of_memory(display) from None
        except BaseException as e:
            # A Rust panic (an allocation that failed under the cap) arrives as
            # pyo3_runtime.PanicException, a BaseException that cannot be imported by name.
            if type(e).__name__ == "PanicException":
                raise _out_of_memory(display) from None
            raise

    if _EVALUATOR.on_thread():
        if _EVALUATOR.depth:  # a file loaded by one being evaluated: its limits already hold
            return limited()
        with _EVALUATOR.evaluating(), _panic_report_dropped(), _address_space_cap():
            return limited()
    _EVALUATOR.start()
    with _panic_report_dropped(), _address_space_cap():
        return _EVALUATOR.run(lambda: _evaluating(limited))


def _evaluating(fn: Callable[[], T]) -> T:
    with _EVALUATOR.evaluating():
        return fn()


def run_on_starlark_thread(fn: Callable[[], T]) -> T:
    """`fn()` run on the large-stack thread, where every evaluation it makes is a plain call
    instead of a hand-over between threads (a command's loading and analysis); its result or
    exception is the caller's. Ctrl-C stops it: the evaluation under way at its next step
    check, or the Python code between evaluations at once."""
    if _EVALUATOR.on_thread():
        return fn()
    _EVALUATOR.start()
    return _EVALUATOR.run(fn)


# What Rust's default panic hook writes to stderr (with a backtrace under RUST_BACKTRACE=1).
_PANIC_REPORT = re.compile(rb"\n?thread '[^'\n]*'(?: \(\d+\))? panicked at .*", re.S)
_CAPTURE: list[Any] = []  # one temporary file, reused by every evaluation


@contextmanager
def _panic_report_dropped() -> Iterator[None]:
    """Run the block with file descriptor 2 sent to a temporary file, then pass what was
    written on to the real stderr, less the report of a Rust panic: running out of memory
    under the cap panics in starlark, and pyimg reports it as one message of its own."""
    try:
        if not _CAPTURE:
            import tempfile

            _CAPTURE.append(tempfile.TemporaryFile())
        capture = _CAPTURE[0]
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable stderr: nothing to keep clean
        yield
        return
    os.dup2(capture.fileno(), 2)
    try:
        yield
    finally:
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)
        os.close(saved)
        size = os.lseek(capture.fileno(), 0, os.SEEK_CUR)
        if size:
            data = os.pread(capture.fileno(), size, 0)
            os.ftruncate(capture.fileno(), 0)
            os.lseek(capture.fileno(), 0, os.SEEK_SET)
            data = _PANIC_REPORT.sub(b"", data)
            if data:
                os.write(2, data)


def _out_of_memory(display: str) -> StarlarkLimitError:
    return StarlarkLimitError(
        f"evaluating this file needed more than {LIMITS.memory_mib} MiB of memory, pyimg's "
        "limit (raise it with --starlark-memory-mib=N, or 0 for none)",
        origin=display,
    )


def steps_message() -> str:
    return (
        f"evaluation stopped after about {LIMITS.max_steps * 1000:,} loop iterations, pyimg's "
        "limit: a loop that never ends? (raise it with --starlark-max-steps=N thousands, "
        "or 0 for none)"
    )


_STATM: list[tuple[int, int]] = []  # (pid, descriptor of its /proc/self/statm), kept open


def _address_space_size() -> int:
    """The process's address space in bytes, from /proc/self/statm. The file stays open (it is
    read before every evaluation: 1.3 us instead of 9 for an open and a read); a forked child
    opens its own, as the descriptor shows the process that opened it."""
    pid = os.getpid()
    if not _STATM or _STATM[0][0] != pid:
        _STATM[:] = [(pid, os.open("/proc/self/statm", os.O_RDONLY | os.O_CLOEXEC))]
    return int(os.pread(_STATM[0][1], 256, 0).split()[0]) * os.sysconf("SC_PAGE_SIZE")


@contextmanager
def _address_space_cap() -> Iterator[None]:
    """Cap the process's address space at its current size plus the memory limit while the
    block runs (Linux; elsewhere, or when the limit is 0, no cap)."""
    if LIMITS.memory_mib <= 0:
        yield
        return
    try:
        import resource

        current = _address_space_size()
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    except (OSError, ImportError, ValueError):
        yield
        return
    cap = current + LIMITS.memory_mib * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    if soft != resource.RLIM_INFINITY and soft <= cap:
        yield  # the user's own limit is already lower
        return
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
