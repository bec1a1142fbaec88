"""build/recorded.py: an action line is read only up to its key and result."""

from __future__ import annotations

import json

from pyimg.build.recorded import _key_and_result

RESULT = {"files": {"p/a.out": {"digest": "sha256:" + "a" * 64, "size": 3, "executable": False}},
          "dirs": {}}
KEY = "sha256:" + "b" * 64


def test_the_key_and_result_are_read_without_parsing_the_rest_of_the_line() -> None:
    line = json.dumps({"key": KEY, "result": RESULT}).encode()[:-1] + b', "action": {not json'
    assert _key_and_result(line) == (KEY, RESULT)


def test_a_line_of_another_layout_is_not_served() -> None:
    # The layout of records from before: the action first.
    line = json.dumps({"action": {"argv": ['{"key": "x"']}, "key": KEY, "result": RESULT})
    assert _key_and_result(line.encode()) is None
    assert _key_and_result(json.dumps({"key": KEY, "inputs": {}}).encode()) is None


def test_a_torn_line_is_not_served() -> None:
    line = json.dumps({"key": KEY, "result": RESULT}).encode()
    for cut in (5, 40, len(line) // 2, len(line) - 3):
        assert _key_and_result(line[:cut]) is None
    assert _key_and_result(b'{"key": "' + "é".encode()[:1] + b'", "result": {}}') is None
