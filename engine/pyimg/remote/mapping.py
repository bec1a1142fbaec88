"""A pyimg action as an REAPI `Action` and `Command`, and output trees as REAPI `Tree` messages.

The mapping (docs/remote.md, "What is keyed"):
- `Command.arguments`: a `run` action's argv; a builtin is `["pyimg-builtin", NAME, PARAMS]`
  and a file write `["pyimg-write", PARAMS]`, PARAMS being the canonical JSON of its parameters.
- `Command.environment_variables`: the declared environment, sorted by name.
- `Command.output_paths` (and the older output_files/output_directories): the declared outputs.
- The input root: a Merkle tree of `Directory` messages of every declared input and tool, by
  exec path, with its digest, size and executable bit (an input directory as its files).
- Platform properties: what pyimg keys that REAPI has no field for: the action kind, the tools
  (they make PATH), the host tools with their digests, the cache-dir variable names.
- `Action.salt`: pyimg's output-format version, so that keys stay pyimg's own.

So the REAPI action digest changes exactly when pyimg's action key does, and depends on no
absolute path of the workspace (tests/unit/remote/test_mapping.py). Secret HMACs never enter
it: an action with secrets is not cached remotely (remote/cache.py).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pyimg.core.action import KIND_BUILTIN, KIND_RUN, KIND_WRITE, Action
from pyimg.core.action_cache import FileOutput
from pyimg.core.digest import Digest, canonical_json
from pyimg.remote._proto.build.bazel.remote.execution.v2 import remote_execution_pb2 as re_pb2

__all__ = [
    "BUILTIN_ARGV0",
    "MappedAction",
    "WRITE_ARGV0",
    "map_action",
    "merkle_tree",
    "output_tree",
    "tree_files",
]

BUILTIN_ARGV0 = "pyimg-builtin"
WRITE_ARGV0 = "pyimg-write"


def blob_digest(data: bytes) -> re_pb2.Digest:
    return re_pb2.Digest(hash=hashlib.sha256(data).hexdigest(), size_bytes=len(data))


def file_digest(f: FileOutput) -> re_pb2.Digest:
    return re_pb2.Digest(hash=f.digest.hex, size_bytes=f.size)


@dataclass(frozen=True)
class MappedAction:
    """An action's REAPI messages: `blobs` holds the serialized Action, Command and every
    Directory of the input root by hash (what remote execution uploads besides the inputs)."""

    action: re_pb2.Action
    command: re_pb2.Command
    digest: re_pb2.Digest  # of the serialized Action: the action-cache key
    blobs: dict[str, bytes]


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString(deterministic=True)
    return data


def merkle_tree(
    files: Mapping[str, FileOutput], dirs: Iterable[str] = ()
) -> tuple[re_pb2.Digest, dict[str, bytes]]:
    """The input root of `files` (by exec path) and of the (possibly empty) directories `dirs`:
    its digest, and every serialized Directory message by hash. Entries are sorted by name, as
    REAPI requires; the same inputs give the same bytes whatever order they came in."""
    root: dict[str, Any] = {}
    for d in dirs:
        node = root
        for part in d.split("/"):
            node = node.setdefault(part, {})
    for path, f in files.items():
        *parents, name = path.split("/")
        node = root
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = f
    blobs: dict[str, bytes] = {}

    def build(node: dict[str, Any]) -> re_pb2.Digest:
        message = re_pb2.Directory()
        for name in sorted(node):
            child = node[name]
            if isinstance(child, FileOutput):
                message.files.add(name=name, digest=file_digest(child),
                                  is_executable=child.executable)
            else:
                message.directories.add(name=name, digest=build(child))
        data = _serialize(message)
        digest = blob_digest(data)
        blobs[digest.hash] = data
        return digest

    return build(root), blobs


def _arguments(action: Action) -> list[str]:
    if action.kind == KIND_RUN:
        return list(action.argv)
    params = canonical_json(action.params).decode()
    if action.kind == KIND_BUILTIN:
        return [BUILTIN_ARGV0, action.builtin, params]
    if action.kind == KIND_WRITE:
        return [WRITE_ARGV0, params]
    raise ValueError(f"unknown action kind {action.kind!r}")


def _platform(action: Action, components: Mapping[str, Any]) -> re_pb2.Platform:
    properties = {"pyimg-kind": action.kind}
    if action.tools:
        properties["pyimg-tools"] = json.dumps(sorted(action.tools), separators=(",", ":"))
    if components.get("host_tools"):
        properties["pyimg-host-tools"] = canonical_json(components["host_tools"]).decode()
    if action.cache_dirs:
        properties["pyimg-cache-dirs"] = ",".join(sorted(var for var, _ in action.cache_dirs))
    platform = re_pb2.Platform()
    for name in sorted(properties):
        platform.properties.add(name=name, value=properties[name])
    return platform


def map_action(action: Action, components: Mapping[str, Any], inputs: Mapping[str, FileOutput],
               input_dirs: Iterable[str], format_version: str) -> MappedAction:
    """The REAPI Action and Command of `action`, keyed by the same things as its pyimg key
    (`components`, from core/action.py's key_components) and `inputs` (every input file)."""
    root, blobs = merkle_tree(inputs, input_dirs)
    platform = _platform(action, components)
    command = re_pb2.Command(
        arguments=_arguments(action),
        output_files=sorted(action.outputs),
        output_directories=sorted(action.output_dirs),
        output_paths=sorted(action.all_outputs),
        platform=platform,
    )
    for name, value in sorted(dict(action.env).items()):
        command.environment_variables.add(name=name, value=value)
    command_bytes = _serialize(command)
    command_digest = blob_digest(command_bytes)
    blobs[command_digest.hash] = command_bytes
    message = re_pb2.Action(
        command_digest=command_digest,
        input_root_digest=root,
        salt=format_version.encode(),
        platform=platform,
    )
    action_bytes = _serialize(message)
    digest = blob_digest(action_bytes)
    blobs[digest.hash] = action_bytes
    return MappedAction(message, command, digest, blobs)


def output_tree(files: Mapping[str, FileOutput]) -> tuple[re_pb2.Tree, bytes]:
    """The REAPI Tree of an output directory (its files by relative path), serialized."""
    root_digest, blobs = merkle_tree(files)
    root = re_pb2.Directory.FromString(blobs[root_digest.hash])
    children = [re_pb2.Directory.FromString(blobs[h]) for h in sorted(blobs)
                if h != root_digest.hash]
    tree = re_pb2.Tree(root=root, children=children)
    return tree, _serialize(tree)


def tree_files(tree: re_pb2.Tree) -> dict[str, FileOutput]:
    """The files of an output Tree by relative path. ValueError for what pyimg never makes in
    an output directory (a symlink, a child directory the tree lacks, a name with a slash)."""
    children = {blob_digest(_serialize(d)).hash: d for d in tree.children}
    out: dict[str, FileOutput] = {}

    def walk(directory: re_pb2.Directory, prefix: str, depth: int) -> None:
        if depth > 256 or directory.symlinks:
            raise ValueError("symlinks or a tree too deep")
        for f in directory.files:
            _check_name(f.name)
            out[prefix + f.name] = FileOutput(
                Digest("sha256", f.digest.hash), f.digest.size_bytes, f.is_executable)
        for d in directory.directories:
            _check_name(d.name)
            child = children.get(d.digest.hash)
            if child is None:
                raise ValueError(f"the tree lacks directory {prefix + d.name}")
            walk(child, f"{prefix}{d.name}/", depth + 1)

    walk(tree.root, "", 0)
    return out


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"bad name in a tree: {name!r}")
