"""Staging inputs into an execroot: each directory is made with one mkdir, once per command
(a root-source edit re-runs the actions with the most inputs, each in another package)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from pyimg.core.action_cache import ActionCache
from pyimg.core.cas import ContentStore
from pyimg.core.executor import ActionExecutor, BuildContext, _StagedInputs
from pyimg.core.file_digests import FileDigestCache


def _executor(tmp_path: Path) -> ActionExecutor:
    cas = ContentStore(tmp_path / "cache")
    ctx = BuildContext(workspace=tmp_path / "ws", cache_root=tmp_path / "cache",
                       scratch_root=tmp_path / "scratch", format_version="v1", builtins={},
                       cancel=threading.Event())
    return ActionExecutor(ctx, cas, ActionCache(tmp_path / "cache", cas),
                          FileDigestCache(None))


def test_each_execroot_directory_is_made_once(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    for path in ("a/b/x.txt", "a/b/y.txt", "a/c/z.txt"):
        (tmp_path / "ws" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ws" / path).write_text(path)
    executor = _executor(tmp_path)
    execroot = tmp_path / "execroot"
    execroot.mkdir()
    made: list[str] = []
    real_mkdir = os.mkdir

    def counting_mkdir(path: str | Path, mode: int = 0o777) -> None:
        if str(path).startswith(f"{execroot}/"):
            made.append(os.path.relpath(path, execroot))
        real_mkdir(path, mode)

    monkeypatch.setattr(os, "mkdir", counting_mkdir)
    staged = _StagedInputs(allow_binds=False)
    for path in ("a/b/x.txt", "a/b/y.txt", "a/c/z.txt", "a/b/x.txt"):
        executor._stage_into_execroot(path, execroot, {}, staged)
    assert sorted(made) == ["a", "a/b", "a/c"]
    staged.make_dir(execroot, "a/b")  # an output's directory, made already
    assert len(made) == 3
    for path in ("a/b/x.txt", "a/b/y.txt", "a/c/z.txt"):
        assert (execroot / path).read_text() == path


def test_a_file_where_a_directory_goes_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("a file")
    staged = _StagedInputs(allow_binds=False)
    with pytest.raises(FileExistsError):
        staged.make_dir(tmp_path, "a")
    with pytest.raises(OSError):
        staged.make_dir(tmp_path, "a/b")
    staged.make_dir(tmp_path, "c/d")
    assert (tmp_path / "c/d").is_dir()
