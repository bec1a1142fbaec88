"""The explain record and its journal: whatever mix of full saves, incremental updates and no-op
marks, the records read back are those that rewriting both files every time would leave."""

from __future__ import annotations

import json
import random

import pytest
from pyimg.build.build_record import (
    JOURNAL,
    LAST,
    load_build_records,
    mark_all_cached,
    record_base,
    save_build_record,
    update_build_record,
)


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
