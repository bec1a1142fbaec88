"""An action's REAPI Action/Command and input root: Merkle digests against bytes encoded by hand
(not by the protobuf library), a key that changes with what pyimg keys and with nothing else,
and the same digest for the same workspace at two paths."""

from __future__ import annotations

import hashlib
import threading
from dataclasses import replace
from pathlib import Path

from pyimg.core.action import KIND_BUILTIN, KIND_RUN, Action
from pyimg.core.action_cache import ActionCache, FileOutput
from pyimg.core.cas import ContentStore
from pyimg.core.digest import Digest
from pyimg.core.executor import ActionExecutor, BuildContext
from pyimg.core.file_digests import FileDigestCache
from pyimg.remote.mapping import map_action, merkle_tree, output_tree, tree_files


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _digest_msg(hex_: str, size: int) -> bytes:
    return _field(1, hex_.encode()) + (_varint(2 << 3) + _varint(size) if size else b"")


def _file_node(name: str, hex_: str, size: int, executable: bool) -> bytes:
    body = _field(1, name.encode()) + _field(2, _digest_msg(hex_, size))
    return body + (_varint(4 << 3) + b"\x01" if executable else b"")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file(data: bytes, executable: bool = False) -> FileOutput:
    return FileOutput(Digest("sha256", _sha(data)), len(data), executable)


def test_one_file_root_is_the_hand_encoded_directory():
    root, blobs = merkle_tree({"a.txt": _file(b"hello")})
    expected = _field(1, _file_node("a.txt", _sha(b"hello"), 5, False))
    assert root.hash == _sha(expected) and root.size_bytes == len(expected)
    assert blobs == {root.hash: expected}


def test_nested_tree_sorts_names_and_links_children_by_digest():
    files = {"pkg/tool": _file(b"#!/bin/sh\n", executable=True), "b": _file(b"B"),
             "a": _file(b"")}
    root, blobs = merkle_tree(files)
    pkg = _field(1, _file_node("tool", _sha(b"#!/bin/sh\n"), 10, True))
    expected_root = (_field(1, _file_node("a", _sha(b""), 0, False))
                     + _field(1, _file_node("b", _sha(b"B"), 1, False))
                     + _field(2, _field(1, b"pkg") + _field(2, _digest_msg(_sha(pkg), len(pkg)))))
    assert root.hash == _sha(expected_root)
    assert blobs == {_sha(pkg): pkg, root.hash: expected_root}
    # The order the inputs come in changes nothing.
    assert merkle_tree(dict(reversed(list(files.items()))))[0] == root


def test_an_empty_input_directory_is_part_of_the_tree():
    with_dir, _ = merkle_tree({"a": _file(b"x")}, ["out/empty"])
    without, _ = merkle_tree({"a": _file(b"x")})
    assert with_dir != without


def test_output_tree_round_trips():
    files = {"x/y": _file(b"1"), "z": _file(b"2", executable=True)}
    tree, _ = output_tree(files)
    assert tree_files(tree) == files


_RUN = Action(kind=KIND_RUN, outputs=("p/out",), inputs=("p/in",), argv=("tool", "p/in"),
              env=(("LANG", "C"),), tools=("p/tool",))


def _components(action: Action, host_tools: dict[str, str] | None = None) -> dict:
    return {"host_tools": host_tools or {}}


def test_the_key_changes_with_what_pyimg_keys():
    inputs = {"p/in": _file(b"in"), "p/tool": _file(b"t", executable=True)}
    base = map_action(_RUN, _components(_RUN), inputs, (), "fmt/1").digest
    assert map_action(_RUN, _components(_RUN), inputs, (), "fmt/1").digest == base
    changed = [
        map_action(_RUN, _components(_RUN), inputs, (), "fmt/2"),  # the salt
        map_action(_RUN, _components(_RUN), {**inputs, "p/in": _file(b"IN")}, (), "fmt/1"),
        map_action(_RUN, _components(_RUN), {**inputs, "p/in": _file(b"in", True)}, (), "fmt/1"),
        map_action(replace(_RUN, env=(("LANG", "D"),)), {}, inputs, (), "fmt/1"),
        map_action(replace(_RUN, argv=("tool", "-v")), {}, inputs, (), "fmt/1"),
        map_action(replace(_RUN, outputs=("p/o2",)), {}, inputs, (), "fmt/1"),
        map_action(replace(_RUN, tools=()), {}, inputs, (), "fmt/1"),
        map_action(replace(_RUN, cache_dirs=(("GOCACHE", "go"),)), {}, inputs,
                   (), "fmt/1"),
        map_action(_RUN, {"host_tools": {"/usr/bin/cc": "sha256:" + "0" * 64}}, inputs, (),
                   "fmt/1"),
    ]
    digests = [m.digest.hash for m in changed]
    assert base.hash not in digests and len(set(digests)) == len(digests)
    # Display-only fields are not keyed.
    shown = replace(_RUN, mnemonic="Other", owner="//x:y", origin="f:1:1")
    assert map_action(shown, {}, inputs, (), "fmt/1").digest == base


def test_builtin_params_are_the_command():
    a = Action(kind=KIND_BUILTIN, builtin="pkg_tar", outputs=("p/l.tar",), params={"b": 1, "a": 2})
    mapped = map_action(a, {}, {}, (), "fmt/1")
    assert list(mapped.command.arguments) == ["pyimg-builtin", "pkg_tar", '{"a":2,"b":1}']
    assert mapped.action.salt == b"fmt/1"
    assert set(mapped.blobs) == {mapped.digest.hash, mapped.action.command_digest.hash,
                                 mapped.action.input_root_digest.hash}


def _executor(root: Path) -> ActionExecutor:
    cas = ContentStore(root / "cache")
    ctx = BuildContext(workspace=root / "ws", cache_root=root / "cache",
                       scratch_root=root / "scratch", format_version="fmt/1", builtins={},
                       cancel=threading.Event())
    return ActionExecutor(ctx, cas, ActionCache(root / "cache", cas), FileDigestCache(None))


def test_the_same_workspace_at_two_paths_maps_to_one_action_digest(tmp_path: Path):
    action = Action(kind=KIND_BUILTIN, builtin="copy", inputs=("p/a.txt", "p/bin/x"),
                    outputs=("p/o",))
    mapped = []
    for where in ("one", "two/deeper"):
        root = tmp_path / where
        (root / "ws/p/bin").mkdir(parents=True)
        (root / "ws/p/a.txt").write_text("a")
        (root / "ws/p/bin/x").write_text("#!/bin/sh\n")
        (root / "ws/p/bin/x").chmod(0o755)
        executor = _executor(root)
        key, components, _ = executor.lookup(action)
        request = executor._remote_request(action, key, components)
        assert request.inputs["p/bin/x"].executable
        mapped.append(map_action(action, components, request.inputs, request.input_dirs,
                                 "fmt/1").digest)
    assert mapped[0] == mapped[1]
