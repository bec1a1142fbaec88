"""remote/flow.py: the call gate retries busy answers with bounded backoff and adapts its limit;
the batch reader gathers the reads of waiting threads into one call, within the size limit."""

from __future__ import annotations

import threading

import grpc
import pytest
from pyimg.remote import flow
from pyimg.remote.flow import PER_BLOB_BYTES, BatchReader, CallGate


class _Error(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def _failing(times: int, code: grpc.StatusCode):
    calls = []

    def fn(value: str) -> str:
        calls.append(value)
        if len(calls) <= times:
            raise _Error(code)
        return value

    return fn, calls


@pytest.mark.parametrize("code", [grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  grpc.StatusCode.UNAVAILABLE])
def test_a_busy_answer_is_retried_with_growing_bounded_waits(code):
    waits: list[float] = []
    gate = CallGate(start=8, attempts=6, backoff=0.1, max_backoff=0.3, sleep=waits.append)
    fn, calls = _failing(4, code)
    assert gate.call(fn, "x") == "x"
    assert calls == ["x"] * 5 and gate.retries == 4
    assert len(waits) == 4 and all(0.0 < w <= 0.3 for w in waits)
    assert waits[3] > 0.1  # doubled, then capped
    assert gate.lowest_limit == 1.0  # 8, halved four times, never below one


def test_the_limit_halves_on_a_busy_answer_and_grows_back_one_per_limit_successes():
    gate = CallGate(start=8, ceiling=9, sleep=lambda s: None)
    fn, _ = _failing(1, grpc.StatusCode.RESOURCE_EXHAUSTED)
    gate.call(fn, "x")
    assert gate.lowest_limit == 4.0
    for _ in range(40):
        gate.call(lambda: None)
    assert gate.limit == 9.0  # back up, and no further than the ceiling


def test_a_server_that_stays_busy_fails_after_the_last_attempt():
    waits: list[float] = []
    gate = CallGate(attempts=3, sleep=waits.append)
    fn, calls = _failing(10, grpc.StatusCode.UNAVAILABLE)
    with pytest.raises(grpc.RpcError):
        gate.call(fn, "x")
    assert len(calls) == 3 and len(waits) == 2


def test_other_errors_are_not_retried():
    gate = CallGate(sleep=lambda s: pytest.fail("waited"))
    fn, calls = _failing(1, grpc.StatusCode.PERMISSION_DENIED)
    with pytest.raises(grpc.RpcError):
        gate.call(fn, "x")
    assert calls == ["x"] and gate.limit >= 8.0  # an answer, if a "no": not a busy server


def test_no_more_calls_than_the_limit_run_at_once():
    gate = CallGate(start=2, ceiling=2)
    running, most = [0], [0]
    lock = threading.Lock()
    release = threading.Event()

    def fn() -> None:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        release.wait(5)
        with lock:
            running[0] -= 1

    threads = [threading.Thread(target=gate.call, args=(fn,)) for _ in range(5)]
    for t in threads:
        t.start()
    release.set()
    for t in threads:
        t.join(10)
    assert most[0] == 2


def _key(n: int, size: int = 10) -> tuple[str, int]:
    return (f"{n:064x}", size)


def test_reads_queued_while_a_batch_is_in_flight_share_the_next_one():
    sent: list[list[tuple[str, int]]] = []
    first_in_flight = threading.Event()
    release = threading.Event()

    def send(keys):
        sent.append(list(keys))
        if len(sent) == 1:
            first_in_flight.set()
            release.wait(5)
        return {k: k[0].encode() for k in keys}

    reader = BatchReader(send, lambda: 1 << 20, max_calls=1)
    results: dict[int, dict] = {}

    def read(n: int) -> None:
        results[n] = reader.read([_key(n), _key(100 + n)])

    first = threading.Thread(target=read, args=(0,))
    first.start()
    assert first_in_flight.wait(5)
    others = [threading.Thread(target=read, args=(n,)) for n in range(1, 6)]
    for t in others:
        t.start()
    # Every other thread has queued its blobs before the first call returns.
    while len(reader._queue) < 10:
        threading.Event().wait(0.01)
    release.set()
    for t in [first, *others]:
        t.join(10)
    assert len(sent) == 2 and reader.calls == 2
    assert sorted(sent[1]) == sorted(k for n in range(1, 6) for k in (_key(n), _key(100 + n)))
    for n in range(6):
        assert results[n] == {_key(n): _key(n)[0].encode(), _key(100 + n): _key(100 + n)[0].encode()}


def test_a_batch_never_exceeds_the_servers_limit():
    sent: list[list[tuple[str, int]]] = []

    def send(keys):
        sent.append(list(keys))
        return {k: b"x" * k[1] for k in keys}

    limit = 3 * (1000 + PER_BLOB_BYTES)
    reader = BatchReader(send, lambda: limit)
    got = reader.read([_key(n, 1000) for n in range(7)])
    assert len(got) == 7
    assert [len(b) for b in sent] == [3, 3, 1]


def test_a_missing_blob_fails_only_its_reader_and_a_failed_call_every_reader_in_it():
    reader = BatchReader(lambda keys: {k: b"" for k in keys if k != _key(1)}, lambda: 1 << 20)
    assert reader.read([_key(2)]) == {_key(2): b""}
    with pytest.raises(KeyError):
        reader.read([_key(1), _key(2)])

    def down(keys):
        raise _Error(grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(grpc.RpcError):
        BatchReader(down, lambda: 1 << 20).read([_key(3)])


def test_a_waiting_reader_is_woken_for_its_own_blobs_or_to_carry_not_for_every_batch(monkeypatch):
    # Twelve threads queue one blob each behind a call in flight; batches of one blob each go
    # out one at a time. Waking every sleeper after every batch (as a condition's notify_all
    # did) costs about 12 * 11 / 2 wake-ups; a reader is woken once for its blob and at most
    # once per batch to carry one.
    wakeups = []

    class CountingCondition(threading.Condition):
        def wait(self, timeout=None):
            wakeups.append(1)
            return super().wait(timeout)

    class CountingEvent(threading.Event):
        def wait(self, timeout=None):
            wakeups.append(1)
            return super().wait(timeout)

    counting = type("threading", (), {"Lock": threading.Lock, "Condition": CountingCondition,
                                      "Event": CountingEvent})
    monkeypatch.setattr(flow, "threading", counting)
    release = threading.Event()
    sent: list[list[tuple[str, int]]] = []

    def send(keys):
        sent.append(list(keys))
        if len(sent) == 1:
            release.wait(5)
        return {k: b"x" for k in keys}

    reader = BatchReader(send, lambda: 1 + PER_BLOB_BYTES, max_calls=1)
    readers = 12
    results: dict[int, dict] = {}
    threads = [threading.Thread(target=lambda n=n: results.__setitem__(n, reader.read([_key(n, 1)])))
               for n in range(readers)]
    for t in threads:
        t.start()
    while len(reader._queue) < readers - 1:  # one blob is in flight, the others queued
        threading.Event().wait(0.01)
    release.set()
    for t in threads:
        t.join(10)
    assert len(results) == readers and len(sent) == readers
    assert all(results[n] == {_key(n, 1): b"x"} for n in range(readers))
    assert len(wakeups) <= 2 * readers


def test_many_threads_with_overlapping_reads_all_get_their_bytes():
    # No wake-up is lost: every thread returns, with its own blobs, whatever the interleaving.
    def send(keys):
        threading.Event().wait(0.001)
        return {k: k[0].encode() for k in keys}

    reader = BatchReader(send, lambda: 3 * (10 + PER_BLOB_BYTES), max_calls=2)
    results: dict[int, dict] = {}

    def read(n: int) -> None:
        keys = [_key(k) for k in range(n % 7, n % 7 + 1 + n % 4)]
        results[n] = reader.read(keys)

    threads = [threading.Thread(target=read, args=(n,)) for n in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads)
    for n in range(40):
        assert results[n] == {_key(k): _key(k)[0].encode()
                              for k in range(n % 7, n % 7 + 1 + n % 4)}
