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
from pyimg.core.executor import ActionExecutor, BuildContext
from pyimg.core.file_digests import FileDigestCache
from pyimg.errors import SourceLinkError


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


def _linking_executor(tmp_path: Path) -> ActionExecutor:
    """An executor whose one built-in hard-links its input to its output, as oci_layout_import
    does with a layout's blobs when it may."""

    def hardlink(call) -> None:
        (src,) = call.inputs.values()
        (out,) = call.outputs.values()
        os.link(src, out)

    cas = ContentStore(tmp_path / "cache")
    ctx = BuildContext(workspace=tmp_path / "ws", cache_root=tmp_path / "cache",
                       scratch_root=tmp_path / "scratch", format_version="v1",
                       builtins={"hardlink": hardlink}, cancel=threading.Event())
    return ActionExecutor(ctx, cas, ActionCache(tmp_path / "cache", cas), FileDigestCache(None))


def test_an_output_linked_to_a_source_is_copied_into_the_store(tmp_path: Path) -> None:
    """The store makes its blobs read-only: adopting the user's inode would change the user's
    file's mode, and an edit of the file in place would change the blob."""
    (tmp_path / "ws/p").mkdir(parents=True)
    source = tmp_path / "ws/p/blob"
    source.write_bytes(b"layer bytes")
    os.chmod(source, 0o644)
    executor = _linking_executor(tmp_path)
    action = Action(kind=KIND_BUILTIN, builtin="hardlink", inputs=("p/blob",), outputs=("p/o",),
                    owner="//p:o", origin="p/BUILD.pyimg:1:1", mnemonic="Link")
    record = executor.execute(action)
    digest = record.result.files["p/o"].digest
    blob = executor.cas.path(digest, False)
    assert blob.read_bytes() == b"layer bytes"
    st = source.stat()
    assert st.st_ino != blob.stat().st_ino
    assert st.st_mode & 0o777 == 0o644
    assert st.st_nlink == 1  # the scratch output's link went with the scratch directory


def test_the_call_names_the_users_files(tmp_path: Path) -> None:
    seen = {}

    def remember(call) -> None:
        seen["sources"] = call.sources
        seen["may_link"] = [call.may_link(p) for p in ("p/src", "p/gen")]
        for out in call.outputs.values():
            out.write_text("x")

    (tmp_path / "ws/p").mkdir(parents=True)
    (tmp_path / "ws/p/src").write_text("s")
    executor = _linking_executor(tmp_path)
    executor.ctx.builtins["remember"] = remember
    gen = Action(kind=KIND_BUILTIN, builtin="remember", inputs=(), outputs=("p/gen",),
                 owner="//p:gen", origin="p/BUILD.pyimg:1:1", mnemonic="Gen")
    executor.execute(gen)
    use = Action(kind=KIND_BUILTIN, builtin="remember", inputs=("p/src", "p/gen"),
                 outputs=("p/use",), owner="//p:use", origin="p/BUILD.pyimg:2:1", mnemonic="Use")
    executor.execute(use)
    assert seen["sources"] == frozenset({"p/src"})
    assert seen["may_link"] == [False, True]


def test_a_file_inside_a_source_directory_is_the_users() -> None:
    from pyimg.core.builtin import BuiltinCall

    call = BuiltinCall(params={}, inputs={}, input_digests={}, outputs={},
                       sources=frozenset({"p/layout", "q/f"}))
    assert not call.may_link("p/layout/blobs/sha256/ab")
    assert not call.may_link("p/layout")
    assert call.may_link("p/layout2/x") and call.may_link("q/g") and call.may_link("p")
