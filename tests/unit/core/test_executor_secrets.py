"""The executor knows secrets only through the SecretProvider protocol: any provider serves."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable
from pathlib import Path

import pytest
from pyimg.core.action import KIND_RUN, Action
from pyimg.core.action_cache import ActionCache
from pyimg.core.cas import ContentStore
from pyimg.core.executor import ActionExecutor, BuildContext
from pyimg.core.file_digests import FileDigestCache
from pyimg.core.secrets import SecretLeak, SecretProvider
from pyimg.errors import UserInputError


class OneSecret:
    """A provider that is not the --secret store: it keys by name only."""

    def ids(self) -> frozenset[str]:
        return frozenset({"tok"})

    def keyed_hash(self, sid: str) -> str:
        return f"fake:{sid}"

    def private_file(self, sid: str) -> Path:
        raise AssertionError("not asked for a key")

    def release(self, path: Path) -> None:
        raise AssertionError("not asked for a key")

    def redact(self, sids: Collection[str], text: bytes) -> bytes:
        return text

    def find_leak(self, sids: Collection[str],
                  files: Iterable[tuple[str, Path]]) -> SecretLeak | None:
        return None

    def close(self) -> None:
        pass


def _executor(tmp_path: Path, secrets: SecretProvider | None) -> ActionExecutor:
    cas = ContentStore(tmp_path / "cache")
    ctx = BuildContext(workspace=tmp_path, cache_root=tmp_path / "cache",
                       scratch_root=tmp_path / "scratch", format_version="v1", builtins={},
                       cancel=threading.Event(), secrets=secrets)
    return ActionExecutor(ctx, cas, ActionCache(tmp_path / "cache", cas), FileDigestCache(None))


ACTION = Action(kind=KIND_RUN, argv=("true",), outputs=("out",), secrets=("tok",),
                mnemonic="Run", progress_message="running")


def test_the_key_holds_the_providers_keyed_hash(tmp_path: Path) -> None:
    components = _executor(tmp_path, OneSecret()).components(ACTION)
    assert components["secrets"] == {"tok": "fake:tok"}


def test_an_action_with_secrets_needs_a_provider(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="needs secrets but none were given"):
        _executor(tmp_path, None).components(ACTION)
