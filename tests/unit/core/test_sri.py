"""SRI pins: parsing, the strongest of a list, and the index from a pin to a stored sha256."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from pyimg.core.sri import Sri, SriIndex, parse_sri, strongest_sri


def _sri(algorithm: str, data: bytes) -> str:
    return f"{algorithm}-" + base64.b64encode(hashlib.new(algorithm, data).digest()).decode()


def test_parse_round_trip() -> None:
    text = _sri("sha512", b"x")
    sri = parse_sri(text)
    assert sri == Sri("sha512", hashlib.sha512(b"x").hexdigest())
    assert str(sri) == text


@pytest.mark.parametrize("text", ["sha1-" + base64.b64encode(b"0" * 20).decode(), "sha512",
                                  "sha512-AAAA", "sha256-%%%"])
def test_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_sri(text)


def test_strongest_of_a_list_and_sha1_alone() -> None:
    sha1 = "sha1-" + base64.b64encode(hashlib.sha1(b"x").digest()).decode()
    assert strongest_sri(f"{sha1} {_sri('sha256', b'x')} {_sri('sha512', b'x')}").algorithm == "sha512"
    with pytest.raises(ValueError, match="sha1 is too weak"):
        strongest_sri(sha1)


def test_index(tmp_path: Path) -> None:
    index = SriIndex(tmp_path)
    sri = parse_sri(_sri("sha512", b"x"))
    assert index.get(sri) is None
    index.record(sri, hashlib.sha256(b"x").hexdigest())
    assert index.get(sri) == hashlib.sha256(b"x").hexdigest()
    # A sha256 pin is its own store key: nothing is recorded.
    pin256 = parse_sri(_sri("sha256", b"y"))
    index.record(pin256, "0" * 64)
    assert index.get(pin256) == hashlib.sha256(b"y").hexdigest()
    # A damaged index entry is ignored (the blob is then fetched and checked again).
    (tmp_path / "sri" / "sha512" / sri.hex).write_text("not a digest")
    assert index.get(sri) is None
