"""Incremental re-keying: candidates downstream of changed sources, change pruning, keys equal
to a full build's."""

from __future__ import annotations

import threading
from pathlib import Path

from pyimg.core.action import KIND_BUILTIN, Action
from pyimg.core.action_cache import ActionCache
from pyimg.core.cas import ContentStore
from pyimg.core.digest import digest_bytes
from pyimg.core.executor import ActionExecutor, BuildContext
from pyimg.core.file_digests import FileDigestCache
from pyimg.core.incremental import IncrementalExecutor, RecordedAction, downstream
from pyimg.core.scheduler import ActionGraph, Scheduler


def test_downstream_follows_readers_and_sorts():
    readers = {0: [2], 1: [2, 3], 2: [4], 3: [], 4: [], 5: [0]}
    assert downstream([1], readers.__getitem__) == [1, 2, 3, 4]
    assert downstream([5, 3], readers.__getitem__) == [0, 2, 3, 4, 5]
    assert downstream([], readers.__getitem__) == []


def _copy(call):
    (src,) = call.inputs.values()
    (out,) = call.outputs.values()
    out.write_bytes(src.read_bytes())


def _count_lines(call):
    (src,) = call.inputs.values()
    (out,) = call.outputs.values()
    out.write_text(str(len(src.read_bytes().splitlines())))


def _join(call):
    (out,) = call.outputs.values()
    out.write_bytes(b"".join(call.inputs[p].read_bytes() for p in sorted(call.inputs)))


def _action(builtin, inputs, output):
    return Action(kind=KIND_BUILTIN, builtin=builtin, inputs=tuple(inputs),
                  outputs=(output,), mnemonic=builtin)


# src.txt -> copy -> lines (line count) -> join(lines, other.txt)
ACTIONS = [
    _action("copy", ["src.txt"], "out/copy"),
    _action("lines", ["out/copy"], "out/lines"),
    _action("join", ["out/lines", "other.txt"], "out/join"),
]


class World:
    def __init__(self, tmp: Path) -> None:
        self.ws = tmp / "ws"
        self.ws.mkdir()
        self.cas = ContentStore(tmp / "cache")
        self.cache = ActionCache(tmp / "cache", self.cas)
        self.digests = FileDigestCache(None)
        self.tmp = tmp

    def ctx(self) -> BuildContext:
        return BuildContext(
            workspace=self.ws, cache_root=self.tmp / "cache", scratch_root=self.tmp / "scratch",
            format_version="v1", builtins={"copy": _copy, "lines": _count_lines, "join": _join},
            cancel=threading.Event())

    def write(self, name: str, text: str) -> None:
        (self.ws / name).write_text(text)

    def full(self):
        """A full build: every action keyed from the files on disk."""
        executor = ActionExecutor(self.ctx(), self.cas, self.cache, FileDigestCache(None))
        outcome = Scheduler(executor, 2).run(ActionGraph(ACTIONS), ["out/join"])
        assert not outcome.failures
        return {r.action.outputs[0]: r for r in outcome.records}


def _recorded(records):
    return {
        out: RecordedAction(r.action, r.key, r.components["inputs"], {}, r.result)
        for out, r in records.items()
    }


def _incremental(world, recorded, changed, candidates):
    ctx = world.ctx()
    digests = FileDigestCache(None)
    cand = [recorded[o] for o in candidates]
    outside = [r for o, r in recorded.items() if o not in candidates]
    sources = {p: d for r in recorded.values() for p, d in r.inputs.items() if "/" not in p}
    executor = IncrementalExecutor(ctx, world.cas, world.cache, digests, cand, outside,
                                   {**sources, **changed})
    outcome = Scheduler(executor, 2).run(ActionGraph(r.action for r in cand),
                                         [o for r in cand for o in r.action.outputs])
    assert not outcome.failures
    return executor, {r.action.outputs[0]: r for r in outcome.records}


def test_keys_equal_a_full_build_and_pruning_stops_at_unchanged_outputs(tmp_path):
    world = World(tmp_path)
    world.write("src.txt", "a\n")
    world.write("other.txt", "o\n")
    recorded = _recorded(world.full())
    world.write("src.txt", "b\n")  # one line still: `lines` comes out the same
    full = world.full()
    new_src = full["out/copy"].components["inputs"]["src.txt"]
    executor, records = _incremental(
        world, recorded, {"src.txt": new_src}, ["out/copy", "out/lines", "out/join"])
    assert records["out/copy"].key == full["out/copy"].key
    assert records["out/lines"].key == full["out/lines"].key
    assert executor.pruned == {"out/join"}  # its input digests came out as recorded
    assert records["out/join"].key == recorded["out/join"].key == full["out/join"].key
    assert records["out/join"].cached and records["out/join"].components == {}


def test_a_changed_output_rekeys_its_readers(tmp_path):
    world = World(tmp_path)
    world.write("src.txt", "a\n")
    world.write("other.txt", "o\n")
    recorded = _recorded(world.full())
    world.write("src.txt", "a\nb\n")
    full = world.full()  # fills the action cache: the incremental build hits
    executor, records = _incremental(
        world, recorded, {"src.txt": full["out/copy"].components["inputs"]["src.txt"]},
        ["out/copy", "out/lines", "out/join"])
    assert executor.pruned == set()
    for out in ("out/copy", "out/lines", "out/join"):
        assert records[out].key == full[out].key and records[out].cached
        assert records[out].components == full[out].components
        assert records[out].result == full[out].result


def test_runs_a_miss_with_recorded_producers(tmp_path):
    """`join` runs again for a change of other.txt alone: `lines` is not a candidate, its
    output is staged from the record."""
    world = World(tmp_path)
    world.write("src.txt", "a\n")
    world.write("other.txt", "o\n")
    recorded = _recorded(world.full())
    world.write("other.txt", "p\n")
    executor, records = _incremental(
        world, recorded, {"other.txt": str(digest_bytes(b"p\n"))}, ["out/join"])
    assert not records["out/join"].cached
    blob = records["out/join"].result.files["out/join"].digest
    assert world.cas.read_bytes(blob) == b"p\n1"  # other.txt, then out/lines
