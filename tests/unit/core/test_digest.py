import io

import pytest
from pyimg.core.digest import Digest, canonical_json, digest_bytes, digest_stream

EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_parse_round_trip():
    d = Digest.parse(f"sha256:{EMPTY}")
    assert str(d) == f"sha256:{EMPTY}"
    assert d == digest_bytes(b"")


@pytest.mark.parametrize("bad", ["", "sha256", "md5:" + "0" * 32, "sha256:" + "A" * 64, "sha256:abc"])
def test_parse_rejects(bad):
    with pytest.raises(ValueError):
        Digest.parse(bad)


def test_stream_size():
    d, size = digest_stream(io.BytesIO(b"x" * 3_000_000))
    assert size == 3_000_000 and d == digest_bytes(b"x" * 3_000_000)


def test_canonical_json_is_sorted_and_compact():
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": "é"}]}) == '{"a":[1,{"c":"é","d":2}],"b":1}'.encode()
