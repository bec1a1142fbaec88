"""Tests for pyimg.core.secrets: flag parsing, the keyed hash, private files, leak detection."""

from __future__ import annotations

import base64
import os
import stat
import threading
from pathlib import Path

import pytest
from pyimg.core import secrets as secrets_mod
from pyimg.core.secrets import (
    SecretSource,
    SecretStore,
    leak_patterns,
    parse_secret_flag,
    redact,
    scan_files,
)
from pyimg.errors import UsageError

VALUE = b"s3cr3t-\xfb\xef\xbe\xff-value"


def test_parse_secret_flag() -> None:
    assert parse_secret_flag("id=a_1,src=/x/y") == SecretSource("a_1", src="/x/y")
    assert parse_secret_flag("id=tok,env=NPM_TOKEN") == SecretSource("tok", env="NPM_TOKEN")
    assert parse_secret_flag("id=t,src=~/f").src == os.path.expanduser("~/f")
    for bad in (
        "",
        "id=t",
        "id=t,src=/a,env=B",
        "id=t,src=",
        "id=1t,src=/a",
        "id=a-b,src=/a",
        "id=t,src=/a,src=/b",
        "id=t,type=file",
    ):
        with pytest.raises(UsageError):
            parse_secret_flag(bad)


def test_values_come_from_files_or_env_and_later_flags_win(tmp_path: Path) -> None:
    f = tmp_path / "v"
    f.write_bytes(VALUE)
    store = SecretStore(
        [SecretSource("a", env="X"), SecretSource("a", src=str(f))],
        tmp_path,
        environ={"X": "from-env"},
    )
    assert store.ids() == {"a"}
    assert store.private_file("a").read_bytes() == VALUE
    store.close()
    with pytest.raises(UsageError, match="not set"):
        SecretStore([SecretSource("a", env="NOPE")], tmp_path, environ={})
    with pytest.raises(UsageError, match="cannot read"):
        SecretStore([SecretSource("a", src=str(tmp_path / "missing"))], tmp_path)


def test_hmac_is_keyed_per_user_and_hides_the_value(tmp_path: Path) -> None:
    env = {"A": "one", "B": "two"}
    store = SecretStore(
        [SecretSource("a", env="A"), SecretSource("b", env="B")], tmp_path, environ=env
    )
    h = store.keyed_hash("a")
    assert h.startswith("hmac-sha256:") and len(h) == len("hmac-sha256:") + 64
    assert h == store.keyed_hash("a") != store.keyed_hash("b")
    assert "one" not in h and "one" not in repr(store)
    key = tmp_path / "secret.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    # The same key is reused by the next build; a different cache root has another key.
    again = SecretStore([SecretSource("a", env="A")], tmp_path, environ=env)
    assert again.keyed_hash("a") == h
    other = SecretStore([SecretSource("a", env="A")], tmp_path / "other", environ=env)
    assert other.keyed_hash("a") != h
    with pytest.raises(UsageError, match="'zzz' was not given"):
        store.keyed_hash("zzz")


def test_concurrent_builds_agree_on_one_key(tmp_path: Path) -> None:
    keys: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: keys.append(secrets_mod.load_or_create_key(tmp_path)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(keys)) == 1 and len(keys[0]) == 32
    assert [p.name for p in tmp_path.iterdir()] == ["secret.key"]  # no temp file left


def test_files_are_private_outside_the_cache_root_and_removed(tmp_path: Path) -> None:
    cache_root = tmp_path / "cache"
    cache_root.mkdir()
    # Even when asked to put them in the cache root, the store refuses and goes elsewhere.
    store = SecretStore(
        [SecretSource("tok", env="T")], cache_root, environ={"T": "v"}, private_parent=cache_root
    )
    one, two = store.private_file("tok"), store.private_file("tok")
    assert one != two
    for f in (one, two):
        assert cache_root not in f.parents
        assert stat.S_IMODE(f.stat().st_mode) == 0o400
        assert stat.S_IMODE(f.parent.parent.stat().st_mode) == 0o700
    store.release(one)
    assert not one.exists() and two.exists()
    private = two.parent.parent
    store.close()
    assert not private.exists()


@pytest.mark.parametrize("prefix_len", range(6))
def test_base64_at_any_alignment_is_found(prefix_len: int) -> None:
    patterns = leak_patterns(VALUE)
    for enc in (base64.b64encode, base64.urlsafe_b64encode):
        stream = enc(os.urandom(prefix_len) + VALUE + b"tail")
        assert any(p in stream for p in patterns)
    assert any(p in VALUE.hex().upper().encode() for p in patterns)


def test_trailing_newline_of_a_secret_file_does_not_hide_a_leak() -> None:
    patterns = leak_patterns(b"token-abcdef\n")
    assert any(p in base64.b64encode(b"token-abcdef") for p in patterns)
    assert b"token-abcdef" in patterns


def test_scan_finds_a_secret_across_chunk_boundaries_and_line_wraps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(secrets_mod, "_CHUNK", 64)
    patterns = {"tok": leak_patterns(VALUE)}
    clean = tmp_path / "clean"
    clean.write_bytes(os.urandom(1000).replace(b"s3", b"xx"))
    for offset in range(50, 70):
        f = tmp_path / f"f{offset}"
        f.write_bytes(b"x" * offset + VALUE + b"y" * 100)
        leak = scan_files([("clean", clean), (f.name, f)], patterns)
        assert leak is not None and (leak.secret_id, leak.path) == ("tok", f.name)
    wrapped = tmp_path / "wrapped"
    b64 = base64.b64encode(b"pad" + VALUE)
    wrapped.write_bytes(b"\n".join(b64[i : i + 8] for i in range(0, len(b64), 8)))
    assert scan_files([("w", wrapped)], patterns) is not None
    assert scan_files([("clean", clean)], patterns) is None


def test_redact() -> None:
    patterns = {"tok": leak_patterns(VALUE)}
    text = b"a " + VALUE + b" b " + base64.b64encode(VALUE) + b" c " + VALUE.hex().encode()
    out = redact(text, patterns)
    assert out.count(b"[secret tok]") == 3 and out.startswith(b"a [secret tok] b [secret tok]")
    # At most the last, partial base64 group (padding) of an encoding remains: a few bits.
    assert len(out) <= len(b"a [secret tok] b [secret tok]xxxx c [secret tok]")
    wrapped = b"x\n" + b"\n".join(VALUE.hex().encode()[i : i + 10] for i in range(0, 40, 10))
    assert b"withheld" in redact(wrapped + VALUE.hex().encode()[40:], patterns)
