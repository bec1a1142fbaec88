"""The incremental build's record lines: parsed one by one, written back with only the replaced
ones serialized again; and the report as a full build prints it."""

from __future__ import annotations

import json
import random

import pytest
from pyimg.cli.incremental import ActionLines, render_report


def _lines(n: int) -> tuple[bytes, list[int], list[dict]]:
    data = [{"i": i, "pad": "x" * (i % 7)} for i in range(n)]
    encoded = [json.dumps(d).encode() for d in data]
    offsets = [0]
    for line in encoded:
        offsets.append(offsets[-1] + len(line) + 1)
    return b"HEADER\n" + b"".join(e + b"\n" for e in encoded), offsets, data


@pytest.mark.parametrize("seed", range(10))
def test_replace_and_dump_round_trip(seed):
    rng = random.Random(seed)
    raw, offsets, data = _lines(rng.randrange(1, 30))
    lines = ActionLines(raw, len(b"HEADER\n"), offsets)
    assert len(lines) == len(data)
    expected = list(data)
    for i in rng.sample(range(len(data)), rng.randrange(len(data) + 1)):
        expected[i] = {"i": i, "new": "y" * rng.randrange(20)}
        lines.replace(i, expected[i])
    block, new_offsets = lines.dump()
    again = ActionLines(block, 0, new_offsets)
    assert [again[i] for i in range(len(again))] == expected
    assert block == b"".join(json.dumps(d).encode() + b"\n" for d in expected)


def test_lines_are_parsed_when_asked_for():
    raw, offsets, data = _lines(3)
    broken = raw.replace(b'{"i": 2', b'{"i": !')  # never asked for: never parsed
    lines = ActionLines(broken, len(b"HEADER\n"), offsets)
    assert lines[0] == data[0] and lines[1] == data[1]
    with pytest.raises(ValueError):
        lines[2]


def test_render_report_reads_the_digests(tmp_path):
    (tmp_path / "pyimg-out/p").mkdir(parents=True)
    (tmp_path / "pyimg-out/p/image.digest").write_text("sha256:abc\n")
    lines = [["//p:image", "pyimg-out/p/image.digest", "pyimg-out/p/image"], ["//p:f pyimg-out/f"]]
    assert render_report(tmp_path, lines) == (
        "//p:image sha256:abc pyimg-out/p/image\n//p:f pyimg-out/f\n")
