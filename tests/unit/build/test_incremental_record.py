"""The incremental build's action lines: parsed one by one, replaced by appending; and the
report as a full build prints it."""

from __future__ import annotations

import json
import random

import pytest
from pyimg.build.incremental import ActionLines, render_report


def _data(n: int) -> list[dict]:
    return [{"i": i, "pad": "x" * (i % 7)} for i in range(n)]


@pytest.mark.parametrize("seed", range(10))
def test_replaced_lines_read_back(tmp_path, seed):
    rng = random.Random(seed)
    path = tmp_path / "r.actions"
    expected = _data(rng.randrange(1, 30))
    token, spans = ActionLines.write(path, [json.dumps(d).encode() for d in expected])
    for _ in range(4):  # builds one after the other, appending (or writing anew)
        lines = ActionLines(path, token, spans)
        assert len(lines) == len(expected)
        for i in rng.sample(range(len(expected)), rng.randrange(len(expected) + 1)):
            expected[i] = {"i": i, "new": "y" * rng.randrange(200)}
            lines.replace(i, expected[i])
        token, spans = lines.save()
        again = ActionLines(path, token, spans)
        assert [again[i] for i in range(len(again))] == expected


def test_appends_until_the_file_is_mostly_replaced_lines(tmp_path):
    path = tmp_path / "r.actions"
    token, spans = ActionLines.write(path, [json.dumps(d).encode() for d in _data(100)])
    size = path.stat().st_size
    lines = ActionLines(path, token, spans)
    lines.replace(3, {"i": 3})
    assert lines.save()[0] == token and path.stat().st_size > size  # appended
    for round_ in range(400):
        lines = ActionLines(path, token, spans)
        lines.replace(round_ % 100, {"i": round_ % 100, "pad": "z" * 500})
        new_token, spans = lines.save()
        if new_token != token:
            break
    assert new_token != token  # written anew, under a new token
    live = sum(end - start + 1 for start, end in zip(spans[::2], spans[1::2], strict=True))
    assert path.stat().st_size == len(new_token) + 1 + live  # no replaced line left in it


def test_lines_containing_a_text_are_the_live_ones(tmp_path):
    """`containing` finds lines by their bytes: a line replaced since (its old text still in the
    file, or its new one in memory) counts by what it says now."""
    path = tmp_path / "r.actions"
    data = [{"i": i, "origin": f"p/BUILD:{i % 3}:1"} for i in range(9)]
    token, spans = ActionLines.write(path, [json.dumps(d).encode() for d in data])
    lines = ActionLines(path, token, spans)
    lines.replace(3, {"i": 3, "origin": "p/BUILD:7:1"})
    token, spans = lines.save()  # appended: line 3's old text stays in the file
    lines = ActionLines(path, token, spans)
    lines.replace(6, {"i": 6, "origin": "p/BUILD:7:1"})  # in memory only
    assert lines.containing(b'"origin": "p/BUILD:0:') == [0]
    assert lines.containing(b'"origin": "p/BUILD:7:') == [3, 6]
    assert lines.containing(b'"origin": "p/BUILD:1:') == [1, 4, 7]
    assert lines.containing(b"nowhere") == []


def test_an_index_never_reads_another_records_lines(tmp_path):
    path = tmp_path / "r.actions"
    token, spans = ActionLines.write(path, [b'{"i": 0}'])
    ActionLines.write(path, [b'{"i": 1}'])  # a full build since, whose index was then lost
    with pytest.raises(ValueError):
        ActionLines(path, token, spans)


def test_lines_are_parsed_when_asked_for(tmp_path):
    path = tmp_path / "r.actions"
    token, spans = ActionLines.write(path, [b'{"i": 0}', b'{"i": !broken}'])
    lines = ActionLines(path, token, spans)
    assert lines[0] == {"i": 0}
    with pytest.raises(ValueError):
        lines[1]


def test_render_report_reads_the_digests(tmp_path):
    (tmp_path / "pyimg-out/p").mkdir(parents=True)
    (tmp_path / "pyimg-out/p/image.digest").write_text("sha256:abc\n")
    lines = [["//p:image", "pyimg-out/p/image.digest", "pyimg-out/p/image"], ["//p:f pyimg-out/f"]]
    assert render_report(tmp_path, lines) == (
        "//p:image sha256:abc pyimg-out/p/image\n//p:f pyimg-out/f\n")


def test_writing_the_lines_does_not_hold_the_file_in_memory(tmp_path):
    # At the end of a build of 10,000 actions the lines are 12 MB, written beside everything else
    # the build holds (docs/benchmarks.md, "Scale"): joined first, they were in memory twice more.
    import tracemalloc

    lines = [json.dumps({"i": i, "pad": "x" * 500}).encode() for i in range(4000)]
    size = sum(len(x) + 1 for x in lines)
    tracemalloc.start()
    try:
        ActionLines.write(tmp_path / "r.actions", lines)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < size / 2
    token, spans = ActionLines.write(tmp_path / "again.actions", lines)
    again = ActionLines(tmp_path / "again.actions", token, spans)
    assert [again[i] for i in (0, 3999)] == [json.loads(lines[0]), json.loads(lines[3999])]


def test_paths_under_a_goal_by_bisection():
    from pyimg.build.incremental import _under

    paths = sorted(["/w/out", "/w/out-x", "/w/out.txt", "/w/out/a", "/w/out/b/c", "/w/outer/d",
                    "/w/o", "/w/p/out"])
    assert _under(paths, "/w/out") == ["/w/out", "/w/out/a", "/w/out/b/c"]
    assert _under(paths, "/w/out/b") == ["/w/out/b/c"]
    assert _under(paths, "/w/outer") == ["/w/outer/d"]
    assert _under(paths, "/w/none") == []
    assert _under(paths, "/w/out.txt") == ["/w/out.txt"]
