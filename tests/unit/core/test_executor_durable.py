"""Batched durable writes: within a scheduler's run, blobs are written without an fsync each and
an action-cache entry is written only after one sync of the store covered its blobs; Ctrl-C drops
the entries not committed yet, a failed sync fails the build."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from pyimg.core import cas as cas_module
from pyimg.core import executor as executor_module
from pyimg.core.action import KIND_WRITE, Action
from pyimg.core.action_cache import ActionCache, ActionResult
from pyimg.core.cas import ContentStore
from pyimg.core.digest import Digest
from pyimg.core.executor import ActionExecutor, BuildContext
from pyimg.core.file_digests import FileDigestCache
from pyimg.errors import DiskFullError, InterruptedBuildError


class _Recorded:
    """The store's and the action cache's durable steps, in the order they happened."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.cas = ContentStore(tmp_path / "cache")
        self.cache = ActionCache(tmp_path / "cache", self.cas)
        ctx = BuildContext(workspace=tmp_path / "ws", cache_root=tmp_path / "cache",
                           scratch_root=tmp_path / "scratch", format_version="v1", builtins={},
                           cancel=threading.Event())
        self.executor = ActionExecutor(ctx, self.cas, self.cache, FileDigestCache(None))
        real_fsync, real_sync, real_put = cas_module.os.fsync, self.cas.sync, self.cache.put
        real_put_bytes = self.cas.put_bytes

        def fsync(fd: int) -> None:
            self._event("fsync", os.readlink(f"/proc/self/fd/{fd}"))
            real_fsync(fd)

        def sync() -> None:
            real_sync()
            self._event("sync", "")

        def put_bytes(data: bytes, executable: bool = False) -> Digest:
            digest = real_put_bytes(data, executable)
            self._event("blob", str(digest))
            return digest

        def put(key: Digest, result: ActionResult, sync: bool = True) -> None:
            self._event("entry", str(key))
            real_put(key, result, sync)

        monkeypatch.setattr(cas_module.os, "fsync", fsync)
        monkeypatch.setattr(self.cas, "sync", sync)
        monkeypatch.setattr(self.cas, "put_bytes", put_bytes)
        monkeypatch.setattr(self.cache, "put", put)

    def _event(self, kind: str, what: str) -> None:
        with self.lock:
            self.events.append((kind, what))


def _write(name: str) -> Action:
    return Action(kind=KIND_WRITE, params={"content": f"{name}\n"}, outputs=(f"p/{name}",),
                  mnemonic="Write")


def test_an_entry_is_written_only_after_a_sync_covered_its_blobs(tmp_path, monkeypatch):
    monkeypatch.setattr(executor_module, "_BATCH_ENTRIES", 3)
    # Every batch syncs the filesystem, also one the timer cut short at a single entry.
    monkeypatch.setattr(executor_module, "_FSYNC_FILES_UP_TO", 0)
    r = _Recorded(tmp_path, monkeypatch)
    with r.executor.batched_durable_writes():
        records = [r.executor.execute(_write(f"f{i}")) for i in range(7)]
    assert all(r.cache.get(rec.key) is not None for rec in records)
    events = r.events
    assert not [e for e in events if e[0] == "fsync"]  # no fsync per blob or per entry
    for rec in records:
        blob = events.index(("blob", str(rec.result.files[rec.action.outputs[0]].digest)))
        entry = events.index(("entry", str(rec.key)))
        assert ("sync", "") in events[blob:entry], events
    assert events[-1] == ("sync", "")  # the last entries are durable when the block ends
    assert events.count(("sync", "")) < len(records)  # one per batch, not one per action


def test_a_small_batch_fsyncs_its_blobs_before_its_entries_and_never_syncs_the_filesystem(
        tmp_path, monkeypatch):
    # A one-action rebuild: syncfs would wait for every other program's dirty data.
    r = _Recorded(tmp_path, monkeypatch)
    with r.executor.batched_durable_writes():
        record = r.executor.execute(_write("leaf"))
    assert r.cache.get(record.key) is not None
    blob = str(r.cas.path(record.result.files[record.action.outputs[0]].digest))
    entry = str(r.cache.entry_path(record.key))
    events = r.events
    assert ("sync", "") not in events
    at = events.index(("entry", str(record.key)))
    synced_before = {what for kind, what in events[:at] if kind == "fsync"}
    assert {blob, os.path.dirname(blob), os.path.dirname(os.path.dirname(blob))} <= synced_before
    synced_after = {what for kind, what in events[at:] if kind == "fsync"}
    assert {entry, os.path.dirname(entry), os.path.dirname(os.path.dirname(entry))} <= synced_after


def test_without_a_batch_every_blob_and_entry_is_fsynced(tmp_path, monkeypatch):
    r = _Recorded(tmp_path, monkeypatch)
    r.executor.execute(_write("alone"))
    assert [kind for kind, _ in r.events] == ["fsync", "blob", "entry", "fsync"]


def test_ctrl_c_drops_the_entries_not_committed_yet(tmp_path, monkeypatch):
    monkeypatch.setattr(executor_module, "_BATCH_SECONDS", 600.0)
    r = _Recorded(tmp_path, monkeypatch)
    with pytest.raises(InterruptedBuildError), r.executor.batched_durable_writes():
        record = r.executor.execute(_write("lost"))
        raise InterruptedBuildError("interrupted")
    assert r.cache.get(record.key) is None  # the action runs again next time
    assert [kind for kind, _ in r.events] == ["blob"]


@pytest.mark.parametrize("fsync_files_up_to", [0, 16])  # syncfs, or an fsync per file
def test_a_failed_sync_fails_the_run_and_writes_no_entry(tmp_path, monkeypatch, fsync_files_up_to):
    monkeypatch.setattr(executor_module, "_FSYNC_FILES_UP_TO", fsync_files_up_to)
    r = _Recorded(tmp_path, monkeypatch)

    def full(*path: Path) -> None:
        raise DiskFullError("no space left on the cache")

    monkeypatch.setattr(r.cas, "sync", full)
    monkeypatch.setattr(executor_module, "fsync_path", full)
    with pytest.raises(DiskFullError), r.executor.batched_durable_writes():
        record = r.executor.execute(_write("unsynced"))
    assert r.cache.get(record.key) is None
