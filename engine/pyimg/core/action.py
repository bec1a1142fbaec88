"""Actions as frozen values, and the action key: what can change an action's outputs, hashed.

An action reads input files at exec paths (`pkg/src.c`, `pyimg-out/pkg/gen.h`) and writes output
files or directories at exec paths. Its key (docs/architecture.md, "Invariants") is a sha256
over canonical JSON of the kind, argv, declared env, input digests by path, output paths, host
tools' identities (core/tool_identity.py), params, cache-dir variable names and secret HMACs, and
the output-format version. Display-only fields (owner, origin, mnemonic, progress message) are
excluded from equality and from the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyimg.core.digest import Digest, canonical_json

__all__ = [
    "Action",
    "KIND_BUILTIN",
    "KIND_RUN",
    "KIND_WRITE",
    "action_from_json",
    "action_key",
    "action_to_json",
    "key_components",
]

KIND_RUN = "run"
KIND_WRITE = "write"
KIND_BUILTIN = "builtin"
_PATH_FIELDS = ("outputs", "output_dirs", "inputs", "tools")


# Slots: a build of 50,000 targets holds one Action per target and more; without a per-instance
# __dict__ each takes about half the memory.
@dataclass(frozen=True, slots=True)
class Action:
    kind: str  # run | write | builtin
    outputs: tuple[str, ...]  # exec paths of output files
    output_dirs: tuple[str, ...] = ()  # exec paths of output directories
    inputs: tuple[str, ...] = ()  # exec paths of input files or directories
    tools: tuple[str, ...] = ()  # exec paths of tools (also staged; PATH for `run`)
    argv: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    params: Any = None  # JSON: builtin parameters, or {"content": ..., "executable": ...} for write
    builtin: str = ""  # name of the builtin for kind == builtin
    cache_dirs: tuple[tuple[str, str], ...] = ()  # (env var, cache dir name): not in outputs
    secrets: tuple[str, ...] = ()  # secret ids; the key holds their HMAC, never their value
    # The user's opt-in to cache an action with secrets remotely (docs/remote.md, "Secrets"): in
    # no key (it changes where a result is kept, never what it is).
    remote_cache_secrets: bool = False
    host_tools: tuple[str, ...] = ()  # absolute host paths of declared host tools (e.g. /usr/bin/cc)
    # (path, identity mode, data paths) of the host tools declared with more than their path;
    # any other host tool is ("auto", no data): core/tool_identity.py
    host_tool_specs: tuple[tuple[str, str, tuple[str, ...]], ...] = ()
    owner: str = field(default="", compare=False)  # label of the target that declared it
    origin: str = field(default="", compare=False)  # file:line:col of the declaration
    mnemonic: str = field(default="Action", compare=False)
    progress_message: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        # One string per exec path: an action's inputs are its dependencies' outputs, and each
        # was decoded on its own (Starlark's JSON, the persisted analysis).
        for name in _PATH_FIELDS:
            paths = getattr(self, name)
            if type(paths) is tuple:
                object.__setattr__(self, name, tuple(
                    [sys.intern(p) if type(p) is str else p for p in paths]))

    @property
    def all_outputs(self) -> tuple[str, ...]:
        return self.outputs + self.output_dirs

    def describe(self) -> str:
        return f"{self.mnemonic} {self.owner}" if self.owner else self.mnemonic


def key_components(
    action: Action,
    input_digests: Mapping[str, str],
    format_version: str,
    secret_hmacs: Mapping[str, str] | None = None,
    host_tool_digests: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Everything that enters the key, as JSON; `pyimg explain` diffs two of these."""
    return {
        "kind": action.kind,
        "builtin": action.builtin,
        "argv": list(action.argv),
        "env": dict(action.env),
        "inputs": {p: input_digests[p] for p in sorted(set(action.inputs) | set(action.tools))},
        "tools": sorted(action.tools),
        "host_tools": dict(host_tool_digests or {}),
        "outputs": sorted(action.outputs),
        "output_dirs": sorted(action.output_dirs),
        "params": action.params,
        # The variable names only: they shape the command's environment. The directory name and
        # its host path cannot change a correct output (docs/sandbox-secrets-caches.md).
        "cache_dirs": sorted(var for var, _ in action.cache_dirs),
        "secrets": dict(secret_hmacs or {}),
        "format": format_version,
    }


def action_key(components: Mapping[str, Any]) -> Digest:
    return Digest("sha256", hashlib.sha256(canonical_json(components)).hexdigest())


_FIELDS = [f.name for f in dataclasses.fields(Action)]
_TUPLE_FIELDS = {f.name for f in dataclasses.fields(Action) if "tuple" in str(f.type)}


def action_to_json(a: Action) -> dict[str, Any]:
    """Every field, display-only ones included (the persisted analysis and build records)."""
    return {name: getattr(a, name) for name in _FIELDS}  # JSON writes tuples as lists


def _tuples(value: Any) -> Any:
    return tuple(_tuples(x) for x in value) if isinstance(value, list) else value


def action_from_json(d: dict[str, Any]) -> Action:
    fixed = {}
    for k, v in d.items():
        if k in _TUPLE_FIELDS:
            v = _tuples(v)
        fixed[k] = v
    return Action(**fixed)
