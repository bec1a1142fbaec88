"""Flow control of the REAPI client: calls retried with bounded backoff under an adaptive limit of
calls in flight, and the small-blob reads of many threads gathered into shared batches.

A server that is busy says so (RESOURCE_EXHAUSTED: BuildGrid serves at most five calls per core
at once and refuses the rest; UNAVAILABLE: a proxy or a restart). `CallGate` answers both by
waiting and trying again, a bounded number of times, and by halving how many calls it lets run
at once; each success raises the limit again, by one per `limit` successes (additive increase,
multiplicative decrease, as TCP does). Only a call that keeps failing reaches remote/cache.py,
which then leaves the cache aside for the build.

`BatchReader` is a group commit: a thread that wants blobs queues them; while fewer than
`max_calls` batches are in flight it sends one itself, with every blob queued by then (its own
and other threads'), up to the server's batch size; otherwise it waits, and its blobs go out in
the next batch, sent by the first thread woken when a slot frees. A waiting thread is woken
only for that, or when its own blobs have come. One lookup alone still costs one call; a
hundred at once cost a few.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

__all__ = ["BatchReader", "CallGate", "PER_BLOB_BYTES", "RETRIED"]

T = TypeVar("T")
# The codes that say "later", not "no": a busy or restarting server.
RETRIED = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)


class CallGate:
    """At most `limit` calls in flight (adapting between 1 and `ceiling`), each tried up to
    `attempts` times while the server answers RETRIED, waiting `backoff` seconds (doubled
    each time, with jitter, at most `max_backoff`) in between."""

    def __init__(self, start: int = 8, ceiling: int = 32, attempts: int = 6,
                 backoff: float = 0.05, max_backoff: float = 1.0,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.limit = float(start)
        self.ceiling = ceiling
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep
        self._in_flight = 0
        self._cond = threading.Condition()
        self.retries = 0  # calls answered RETRIED and tried again
        self.lowest_limit = self.limit

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """`fn(*args, **kwargs)` once a slot is free, again after a busy answer; raises its
        last error."""
        for attempt in range(self.attempts):
            with self._cond:
                while self._in_flight >= int(self.limit):
                    self._cond.wait()
                self._in_flight += 1
            busy = False
            try:
                result = fn(*args, **kwargs)
            except grpc.RpcError as e:
                busy = e.code() in RETRIED
                if not busy or attempt == self.attempts - 1:
                    raise
            finally:
                self._release(busy)
            if not busy:
                return result
            self.retries += 1
            delay = min(self.max_backoff, self.backoff * 2 ** attempt)
            self._sleep(delay * random.uniform(0.5, 1.0))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _release(self, busy: bool) -> None:
        with self._cond:
            self._in_flight -= 1
            if busy:
                self.limit = max(1.0, self.limit / 2)
                self.lowest_limit = min(self.lowest_limit, self.limit)
            else:
                self.limit = min(float(self.ceiling), self.limit + 1 / self.limit)
            self._cond.notify_all()


class _Reader:
    """One thread in `BatchReader.read`: how many of its blobs are still awaited, and the event
    that wakes it (when they have all come, or to carry the next batch)."""

    __slots__ = ("left", "woken")

    def __init__(self, left: int) -> None:
        self.left = left
        self.woken = threading.Event()


@dataclass
class _Want:
    """One blob one thread waits for: its bytes, or the error of the batch that carried it."""

    key: tuple[str, int]
    reader: _Reader
    data: bytes | None = None
    error: BaseException | None = None


@dataclass
class _Batch:
    wants: list[_Want] = field(default_factory=list)
    size: int = 0


# What a blob costs in a batch besides its bytes: its digest and status in the response.
PER_BLOB_BYTES = 128


class BatchReader:
    """Reads small blobs for many threads in few calls. `send(keys)` makes one batched read of
    the (hash, size) keys and returns the bytes it got by key (a missing key: not found);
    `max_bytes()` is the server's batch limit, asked once, when the first batch is made.

    A waiting thread is woken only when its own blobs have come, or to carry the next batch
    when a slot frees: not every waiter on every batch (with sixteen lookup threads, waking all
    of them for each batch cost more CPU than the batched call itself)."""

    def __init__(self, send: Callable[[Sequence[tuple[str, int]]], dict[tuple[str, int], bytes]],
                 max_bytes: Callable[[], int], max_calls: int = 2) -> None:
        self._send = send
        self._max_bytes = max_bytes
        self._limit: int | None = None
        self.max_calls = max_calls
        self._queue: list[_Want] = []
        self._in_flight = 0
        self._lock = threading.Lock()
        # The threads asleep with blobs still awaited, oldest first (a dict: an ordered set).
        self._asleep: dict[_Reader, None] = {}
        self.calls = 0
        self.blobs = 0

    def read(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], bytes]:
        """The bytes of each key, unverified (the caller hashes them); raises the error of a
        batch that failed, or KeyError for a blob the server does not have."""
        unique = list(dict.fromkeys(keys))
        me = _Reader(len(unique))
        mine = [_Want(k, me) for k in unique]
        with self._lock:
            self._queue.extend(mine)
        while True:
            with self._lock:
                if me.left == 0:
                    break
                batch = None
                if self._queue and self._in_flight < self.max_calls:
                    batch = self._take()
                    self._in_flight += 1
                else:
                    # Cleared under the lock that every waker holds: no wake-up is lost.
                    me.woken.clear()
                    self._asleep[me] = None
            if batch is None:
                me.woken.wait()
                continue
            try:
                self._carry(batch)
            finally:
                with self._lock:
                    self._in_flight -= 1
                    self._deliver(batch)
                    if me.left == 0:
                        # This thread leaves: another carries what is queued. (One that
                        # still waits for its own blobs loops and carries them itself.)
                        self._wake_a_carrier()
        out: dict[tuple[str, int], bytes] = {}
        for w in mine:
            if w.error is not None:
                raise w.error
            assert w.data is not None
            out[w.key] = w.data
        return out

    def _deliver(self, batch: _Batch) -> None:
        """Count a carried batch's blobs off their readers; wake each reader whose blobs have
        all come (called holding the lock)."""
        for w in batch.wants:
            reader = w.reader
            reader.left -= 1
            if reader.left == 0 and reader in self._asleep:
                del self._asleep[reader]
                reader.woken.set()

    def _wake_a_carrier(self) -> None:
        """Wake the oldest sleeper to send the next batch, if one is queued and a slot is free
        (called holding the lock)."""
        if self._queue and self._in_flight < self.max_calls and self._asleep:
            reader = next(iter(self._asleep))
            del self._asleep[reader]
            reader.woken.set()

    def _take(self) -> _Batch:
        """The queued wants that fit one batch, oldest first (called holding the lock)."""
        if self._limit is None:
            self._limit = self._max_bytes()
        batch = _Batch()
        rest: list[_Want] = []
        for w in self._queue:
            cost = w.key[1] + PER_BLOB_BYTES
            if batch.wants and batch.size + cost > self._limit:
                rest.append(w)
                continue
            batch.wants.append(w)
            batch.size += cost
        self._queue = rest
        return batch

    def _carry(self, batch: _Batch) -> None:
        keys = list(dict.fromkeys(w.key for w in batch.wants))
        try:
            got = self._send(keys)
            error: BaseException | None = None
        except BaseException as e:  # noqa: BLE001 - handed to every thread waiting on it
            got, error = {}, e
        self.calls += 1
        self.blobs += len(keys)
        for w in batch.wants:
            if error is not None:
                w.error = error
            elif w.key in got:
                w.data = got[w.key]
            else:
                w.error = KeyError(w.key)
