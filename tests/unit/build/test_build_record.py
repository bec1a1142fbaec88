"""The explain record and its journal: whatever mix of full saves, incremental updates and no-op
marks, the records read back are those that rewriting both files every time would leave."""

from __future__ import annotations

import json
import random
import tracemalloc

import pytest
from pyimg.build.build_record import (
    JOURNAL,
    LAST,
    PREVIOUS,
    load_build_records,
    mark_all_cached,
    record_base,
    save_build_record,
    update_build_record,
)
from pyimg.core.digest import canonical_json


class Reference:
    """The records as full rewrites leave them (the behaviour before the journal)."""

    def __init__(self) -> None:
        self.last: dict = {}
        self.previous: dict = {}

    def save(self, data: dict) -> None:
        if data == self.last:
            return
        self.previous.update(self.last)
        self.last = data

    def update(self, changed: dict) -> None:
        self.save({**{k: {**v, "cached": True} for k, v in self.last.items()}, **changed})


def _entry(rng: random.Random) -> dict:
    return {"key": f"sha256:{rng.randrange(4)}", "cached": rng.random() < 0.5, "origin": "x:1",
            "components": {"inputs": {"a": str(rng.randrange(3))}}}


@pytest.mark.parametrize("seed", range(20))
def test_journal_reads_back_as_full_rewrites(tmp_path, seed):
    rng = random.Random(seed)
    ref = Reference()
    base = None
    for _ in range(30):
        op = rng.random()
        if op < 0.3 or not ref.last:
            ids = rng.sample(["a", "b", "c", "d", "e"], rng.randrange(1, 5))
            data = {i: _entry(rng) for i in ids}
            if rng.random() < 0.3 and ref.last:
                data = dict(ref.last)  # a build that recorded the same again
            save_build_record(tmp_path, data)
            ref.save(data)
            base = record_base(tmp_path)
        elif op < 0.8:
            ids = sorted(ref.last)
            changed = {i: _entry(rng) for i in rng.sample(ids, rng.randrange(min(3, len(ids) + 1)))}
            for i, e in changed.items():  # re-keyed: an incremental build's changes
                e["key"] = ref.last[i]["key"] + "'"
            assert update_build_record(tmp_path, base, changed)
            ref.update(changed)
        else:
            mark_all_cached(tmp_path)
            ref.update({})
        assert load_build_records(tmp_path) == (ref.last, ref.previous)


def test_update_needs_the_record_it_started_from(tmp_path):
    save_build_record(tmp_path, {"a": {"key": "1", "cached": False}})
    base = record_base(tmp_path)
    save_build_record(tmp_path, {"b": {"key": "2", "cached": False}})  # another build since
    before = (tmp_path / JOURNAL).read_bytes()
    assert not update_build_record(tmp_path, base, {"a": {"key": "3", "cached": False}})
    assert (tmp_path / JOURNAL).read_bytes() == before
    assert not update_build_record(tmp_path, "nothing", {})


def test_a_journal_left_by_an_interrupted_save_is_ignored(tmp_path):
    save_build_record(tmp_path, {"a": {"key": "1", "cached": False}})
    update_build_record(tmp_path, record_base(tmp_path), {"a": {"key": "2", "cached": False}})
    (tmp_path / LAST).write_text(json.dumps({"b": {"key": "9", "cached": False}}))
    last, _ = load_build_records(tmp_path)
    assert last == {"b": {"key": "9", "cached": False}}


def test_no_op_marks_without_reading_the_record_when_journaled(tmp_path):
    save_build_record(tmp_path, {"a": {"key": "1", "cached": False}})
    (tmp_path / LAST).chmod(0o000)  # not read: the journal says everything it needs
    try:
        mark_all_cached(tmp_path)
    finally:
        (tmp_path / LAST).chmod(0o644)
    assert load_build_records(tmp_path)[0] == {"a": {"key": "1", "cached": True}}


def test_output_base_from_before_the_journal(tmp_path):
    (tmp_path / LAST).write_text(json.dumps({"a": {"key": "1", "cached": False}}))
    assert record_base(tmp_path) is None
    mark_all_cached(tmp_path)
    assert load_build_records(tmp_path) == (
        {"a": {"key": "1", "cached": True}}, {"a": {"key": "1", "cached": False}})


def test_invalid_files_are_reported(tmp_path):
    (tmp_path / LAST).write_text("{broken")
    with pytest.raises(ValueError, match=LAST):
        load_build_records(tmp_path)


@pytest.mark.parametrize("seed", range(5))
def test_full_saves_write_the_canonical_json_of_both_records(tmp_path, seed):
    # The previous record is merged entry by entry as text: the bytes are what writing the
    # merged objects would give.
    rng = random.Random(seed)
    ref = Reference()
    for _ in range(8):
        data = {i: _entry(rng) for i in rng.sample(["a", "b", "c", "d", "e", "\u00e9"], 3)}
        save_build_record(tmp_path, data)
        ref.save(data)
        assert (tmp_path / LAST).read_bytes() == canonical_json(ref.last)
        if ref.previous:
            assert (tmp_path / PREVIOUS).read_bytes() == canonical_json(ref.previous)


def _action_entry(i: int, build: int) -> dict:
    return {"cached": False, "key": f"sha256:{build}{i:063d}", "origin": f"p{i}/BUILD.pyimg:1:1",
            "components": {"argv": ["/bin/sh", "-c", f"cat p{i}/t.txt > pyimg-out/p{i}/t.out"],
                           "inputs": {f"p{i}/t{k}.txt": f"sha256:{i:064d}" for k in range(6)},
                           "outputs": [f"pyimg-out/p{i}/t.out"], "env": {}, "tools": []}}


def test_a_save_never_holds_the_older_records_as_objects(tmp_path):
    # At 10,000 actions the last record is 10 MB of JSON but 80 MiB of objects once parsed, and
    # a build saved it with everything else it holds still in memory (docs/benchmarks.md, "Scale"). Parsed whole,
    # the two older records took this save's peak to over 10 times the file's size.
    n = 3000
    save_build_record(tmp_path, {f"a{i}": _action_entry(i, 1) for i in range(n)})
    save_build_record(tmp_path, {f"a{i}": _action_entry(i, 2) for i in range(n)})
    data = {f"a{i}": _action_entry(i, 3) for i in range(n)}
    size = (tmp_path / LAST).stat().st_size
    tracemalloc.start()
    try:
        save_build_record(tmp_path, data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 * size
    last, previous = load_build_records(tmp_path)
    assert last == data
    assert previous == {f"a{i}": _action_entry(i, 2) for i in range(n)}


def _hit(entry: dict) -> dict:
    return {**{k: v for k, v in entry.items() if k not in ("served", "ran")}, "cached": True}


@pytest.mark.parametrize("seed", range(6))
def test_full_saves_of_a_few_changes_are_journaled_and_read_back_as_rewrites(tmp_path, seed):
    # A BUILD edit that changes a target: the full build's record is the last one with a few
    # entries changed and the rest local hits; it must read back as the rewrite would.
    rng = random.Random(seed)
    ref = Reference()
    n = 300
    ids = [f"a{i}" for i in range(n)]
    journaled = 0
    for step in range(12):
        if step == 0 or rng.random() < 0.15:
            data = {i: _action_entry(int(i[1:]), step) for i in rng.sample(ids, n - rng.randrange(2))}
        else:
            data = {k: _hit(v) for k, v in ref.last.items()}
            for k in rng.sample(sorted(data), rng.choice([0, 1, 3, n // 2])):
                data[k] = rng.choice([
                    {**data[k], "key": data[k]["key"] + "'", "cached": False},  # it ran
                    {**data[k], "origin": "moved/BUILD.pyimg:9:1"},  # a line moved
                    {**data[k], "served": "remote"},
                ])
        before = (tmp_path / LAST).read_bytes() if step else b""
        save_build_record(tmp_path, data)
        ref.save(data)
        journaled += (tmp_path / LAST).read_bytes() == before
        assert load_build_records(tmp_path) == (ref.last, ref.previous)
        if rng.random() < 0.3:
            mark_all_cached(tmp_path)
            ref.save({k: _hit(v) for k, v in ref.last.items()})
            assert load_build_records(tmp_path) == (ref.last, ref.previous)
    assert journaled  # some saves wrote the journal only
