"""The executor reads a source only while it resolves inside the workspace: a symlink re-pointed
outside after analysis checked it is refused before its bytes are hashed or read."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from pyimg.core.action import KIND_BUILTIN, Action
from pyimg.core.action_cache import ActionCache
from pyimg.core.cas import ContentStore
from pyimg.core.errors import SourceLinkError
from pyimg.core.executor import ActionExecutor, BuildContext
from pyimg.core.file_digests import FileDigestCache


def _executor(tmp_path: Path) -> ActionExecutor:
    cas = ContentStore(tmp_path / "cache")
    ctx = BuildContext(workspace=tmp_path / "ws", cache_root=tmp_path / "cache",
                       scratch_root=tmp_path / "scratch", format_version="v1", builtins={},
                       cancel=threading.Event())
    digests = FileDigestCache(None)
    return ActionExecutor(ctx, cas, ActionCache(tmp_path / "cache", cas), digests)


def test_a_source_linking_outside_is_refused_at_the_declaring_target(tmp_path: Path) -> None:
    (tmp_path / "ws/p").mkdir(parents=True)
    (tmp_path / "secret").write_text("token")
    (tmp_path / "ws/p/ok.txt").write_text("ok")
    os.symlink("ok.txt", tmp_path / "ws/p/c.txt")
    executor = _executor(tmp_path)
    action = Action(kind=KIND_BUILTIN, builtin="copy", inputs=("p/c.txt",), outputs=("p/o",),
                    owner="//p:layer", origin="p/BUILD.pyimg:3:1", mnemonic="PkgTar")
    executor.lookup(action)  # inside: read through the link
    os.unlink(tmp_path / "ws/p/c.txt")
    os.symlink(tmp_path / "secret", tmp_path / "ws/p/c.txt")
    later = _executor(tmp_path)
    with pytest.raises(SourceLinkError) as e:
        later.lookup(action)
    assert str(e.value) == (
        f"p/BUILD.pyimg:3:1: PkgTar //p:layer: source file 'p/c.txt': 'p/c.txt' is a symlink to "
        f"'{tmp_path / 'secret'}', outside the workspace: sources must stay inside the workspace "
        "(copy the file in instead)")
    assert later.digests.hashed == 0  # the secret was never read
