"""Reuses the analysis of each target whose inputs did not change, when a BUILD file did.

A target's analysis is a function of what its rule implementation is given (the ctx data: its
label, attribute values and its dependencies' providers), where it is declared, and the Starlark
code that runs: its rule's and providers' .bzl files and pyimg's own. An entry is kept under the
hash of the first two, where each dependency stands for the digest of its providers (kept in the
entry that made them, so that a reused target's dependents are keyed without serialising what it
provides: an unchanged target costs a hash of its own attributes); the code is covered by the
digests of every .bzl file that the analyses which made the entries read. When any of those changed, nothing is reused (as Bazel re-analyses
what a changed .bzl file may reach, and editing rules is rarer than editing BUILD files).

The file is a header line (the salt and the code) and one line per entry, `"key":{entry}`: a
build whose code is the same appends the entries it made (O(changed targets) written, not the
whole 10 MB at 10,000 targets); it is rewritten whole when the code changed or entries are
dropped. A torn append does not parse: the file then counts as empty and is written again.

Only the whole-analysis cache (`analysis_cache.py`) is consulted first: this one serves the build
whose BUILD files changed, so that one edited package costs its own targets' analysis (and that of
the targets whose dependencies' providers changed), not every target's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pyimg import __version__
from pyimg.core.action import Action, action_from_json, action_to_json
from pyimg.core.cas import atomic_write_bytes
from pyimg.core.digest import digest_bytes

__all__ = ["TargetCache"]

# 2: ctx.label is a canonical string in the ctx data; 3: the host platform; 4: configurations;
# 5: dependencies by their providers' digest in the key; 6: a header line, an entry per line
_FORMAT = 6


class TargetCache:
    def __init__(self, path: Path, platform: dict[str, Any],
                 read_files: dict[str, str] | None = None, reuse: bool = True) -> None:
        """`read_files`: digests loading has already taken (display name -> digest), which spare
        reading those .bzl files again to validate the entries. Without `reuse`
        (PYIMG_ANALYSIS_REUSE=0), no earlier entry is served; this analysis's are still saved."""
        self.path = path
        self._salt = json.dumps([__version__, _FORMAT, platform], sort_keys=True)
        self._code: dict[str, list[str]] = {}  # .bzl display name -> [path, text digest]
        self._old: dict[str, Any] = {}  # entries of earlier analyses, valid for the same code
        self._used: dict[str, Any] = {}  # entries this analysis looked up or made
        self._header = b""  # the file's first line, when it was read whole and valid
        self.hits = 0
        self.made = 0  # analyses run (entries made) by this analysis
        if reuse:
            self._load(read_files or {})

    def _load(self, read_files: dict[str, str]) -> None:
        try:
            header, _, lines = self.path.read_bytes().partition(b"\n")
            data = json.loads(header)
            if data["salt"] != self._salt:
                return
            code = data["code"]
            for name, (path, digest) in code.items():
                now = read_files.get(name) or digest_bytes(
                    Path(path).read_text(encoding="utf-8").encode()).hex
                if now != digest:
                    return  # a rule or provider may have changed: analyse everything again
            # One parse for all the lines (each ends with a newline, a torn one does not parse).
            entries = json.loads(b"{" + lines.rstrip(b"\n").replace(b"\n", b",") + b"}")
            self._code, self._old, self._header = code, entries, header
        except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError):
            self._code, self._old, self._header = {}, {}, b""

    def key(self, kind: str, origin: str, rule: tuple[str, str], data: str) -> str:
        """The entry key of a target: everything its implementation is given (`data`, the ctx
        data as JSON, dict attributes in their order, each dependency as its label and providers'
        digest) but the code."""
        # NUL-separated: no kind, origin, module or rule name holds one (and cheaper than JSON,
        # once per target of the workspace).
        h = hashlib.sha256("\0".join([self._salt, kind, origin, *rule, data]).encode())
        return h.hexdigest()

    def get(self, key: str) -> tuple[dict[str, Any], list[Action], str, list[Any]] | None:
        """(providers, actions, the providers' digest, the actions as JSON) of an earlier
        analysis of the same target, or None."""
        entry = self._used.get(key) or self._old.get(key)
        if entry is None:
            return None
        try:
            actions = [action_from_json(a) for a in entry["actions"]]
            providers, digest = entry["providers"], entry["digest"]
            if not isinstance(digest, str) or not digest:
                return None
        except (KeyError, TypeError, ValueError):
            return None
        self._used[key] = entry
        self.hits += 1
        return providers, actions, digest, entry["actions"]

    def put(self, key: str, providers: dict[str, Any], actions: list[Action],
            digest: str) -> list[Any]:
        """Keep an analysis; `digest`: its providers' (`TargetResult.providers_digest`).
        Returns the actions as JSON."""
        self.made += 1
        as_json = [action_to_json(a) for a in actions]
        self._used[key] = {"providers": providers, "digest": digest, "actions": as_json}
        return as_json

    def save(self, read_files: dict[str, str], read_paths: dict[str, Path]) -> None:
        """Keep this analysis's entries (and earlier ones, within bounds) under the code they
        were made with: the .bzl files read now, and those the reused entries were made with
        (still the same, or nothing would have been reused)."""
        code = dict(self._code)
        for name, digest in read_files.items():
            if name.endswith(".bzl"):
                if name in code and code[name][1] != digest:
                    # Edited while this build ran: entries made before and after may mix.
                    self.path.unlink(missing_ok=True)
                    return
                code[name] = [str(read_paths[name]), digest]
        # Entries of other builds (other patterns, or before an edit) are kept while they are
        # not more than this build's own: the file stays within twice what one build needs.
        unused = len(self._old.keys() - self._used.keys())
        keep_old = unused <= len(self._used)
        header = json.dumps({"salt": self._salt, "code": code}, separators=(",", ":")).encode()
        if keep_old and header == self._header:
            new = {k: e for k, e in self._used.items() if k not in self._old}
            if new:
                with self.path.open("ab") as f:
                    f.write(_lines(new))
            return
        entries = {**self._old, **self._used} if keep_old else dict(self._used)
        atomic_write_bytes(self.path, header + b"\n" + _lines(entries))


def _lines(entries: dict[str, Any]) -> bytes:
    return b"".join(json.dumps({k: e}, separators=(",", ":"))[1:-1].encode() + b"\n"
                    for k, e in entries.items())
