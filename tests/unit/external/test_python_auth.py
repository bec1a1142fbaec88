"""IndexAuth: pip's order of credentials (URL, netrc, keyring with the URL's user name) and
URLs made safe to record."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from pyimg.external.python_auth import IndexAuth, without_userinfo


def test_without_userinfo() -> None:
    assert without_userinfo("https://u:p@h:8443/simple/x/") == "https://h:8443/simple/x/"
    assert without_userinfo("https://h/simple") == "https://h/simple"


def _keyring(answers: dict[tuple[str, str], str], calls: list[list[str]]):  # noqa: ANN202
    def run(argv: list[str], env: Mapping[str, str]) -> str | None:
        calls.append(argv[1:])
        return answers.get((argv[2], argv[3]))
    return run


@pytest.fixture
def path_with_keyring(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    (tmp_path / "keyring").write_text("#!/bin/sh\nexit 1\n")
    (tmp_path / "keyring").chmod(0o755)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    return {"PATH": str(tmp_path)}


def test_keyring_asked_for_the_index_then_the_host(path_with_keyring: dict[str, str]) -> None:
    calls: list[list[str]] = []
    auth = IndexAuth(["https://bob@idx.example/simple"], path_with_keyring,
                     _keyring({("idx.example", "bob"): "pw\n"}, calls))
    assert auth.credentials("https://idx.example/files/a.whl") == ("bob", "pw")
    assert auth.credentials("https://idx.example/simple/a/") == ("bob", "pw")
    assert calls == [["get", "https://idx.example/simple", "bob"], ["get", "idx.example", "bob"]]
    assert auth.headers("https://other.example/x") == {}


def test_url_password_and_netrc_come_first(path_with_keyring: dict[str, str], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[list[str]] = []
    run = _keyring({("idx.example", "bob"): "from-keyring"}, calls)
    assert IndexAuth(["https://bob:inurl@idx.example/simple"], path_with_keyring,
                     run).credentials("https://idx.example/f.whl") == ("bob", "inurl")
    netrc = tmp_path / "netrc"
    netrc.write_text("machine idx.example login bob password from-netrc\n")
    monkeypatch.setenv("NETRC", str(netrc))
    assert IndexAuth(["https://bob@idx.example/simple"], path_with_keyring,
                     run).credentials("https://idx.example/f.whl") == ("bob", "from-netrc")
    assert calls == []


def test_no_user_name_no_keyring(path_with_keyring: dict[str, str]) -> None:
    calls: list[list[str]] = []
    auth = IndexAuth(["https://idx.example/simple"], path_with_keyring, _keyring({}, calls))
    assert auth.credentials("https://idx.example/simple/a/") is None and calls == []
