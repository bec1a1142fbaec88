"""The action cache on disk: action key -> the digests of the outputs it produced.

Entries live at `<root>/ac/<hex[:2]>/<hex>`: a line holding the sha256 of the body, then the body
(canonical JSON), written atomically. The check covers the exact bytes, so reading an entry never
re-serializes it. An entry is served only if it parses, its check matches, and every blob it names is in
the content store with the right bytes; otherwise it is dropped and the action runs again.
`verify_all` (`pyimg cache verify`) checks every entry the same way, after the store's blobs were
re-hashed, so that no entry is left naming a blob the store dropped.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyimg.core.cas import ContentStore, atomic_write_bytes, remove_tree
from pyimg.core.digest import Digest, canonical_json

__all__ = ["ActionCache", "ActionResult", "FileOutput"]

_KEY_NAME = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class FileOutput:
    digest: Digest
    size: int
    executable: bool

    def to_json(self) -> dict[str, Any]:
        return {"digest": str(self.digest), "size": self.size, "executable": self.executable}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FileOutput:
        return cls(Digest.parse(data["digest"]), int(data["size"]), bool(data["executable"]))


@dataclass(frozen=True)
class ActionResult:
    """Output files by exec path; output directories as {relative path: FileOutput}."""

    files: dict[str, FileOutput]
    dirs: dict[str, dict[str, FileOutput]]

    def to_json(self) -> dict[str, Any]:
        return {
            "files": {p: f.to_json() for p, f in sorted(self.files.items())},
            "dirs": {
                d: {p: f.to_json() for p, f in sorted(tree.items())}
                for d, tree in sorted(self.dirs.items())
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ActionResult:
        return cls(
            {p: FileOutput.from_json(f) for p, f in data["files"].items()},
            {
                d: {p: FileOutput.from_json(f) for p, f in tree.items()}
                for d, tree in data["dirs"].items()
            },
        )

    def all_files(self) -> list[FileOutput]:
        out = list(self.files.values())
        for tree in self.dirs.values():
            out.extend(tree.values())
        return out


class ActionCache:
    def __init__(self, root: Path, cas: ContentStore) -> None:
        self._dir = root / "ac"
        self._cas = cas

    def _path(self, key: Digest) -> Path:
        return self._dir / key.hex[:2] / key.hex

    def entry_path(self, key: Digest) -> Path:
        """Where the entry of `key` is (to make it durable with an fsync of its own)."""
        return self._path(key)

    def get(self, key: Digest) -> ActionResult | None:
        path = self._path(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            result = _parse(raw)
        except (ValueError, KeyError, TypeError, AttributeError):
            self._drop(path)
            return None
        if not all(self._cas.verify(f.digest, f.executable) for f in result.all_files()):
            self._drop(path)
            return None
        return result

    def verify_all(self) -> tuple[int, list[tuple[str, str]]]:
        """Check every entry (its check line, its body, and that every blob it names is in the
        store: the store's own `verify_all` re-hashed them just before) and drop each that fails.
        Returns how many entries there were and (path under the cache root, why) of each dropped.
        Temp files of writers at work are left alone."""
        entries, dropped = 0, []
        for fan in sorted(self._dir.glob("*")) if self._dir.is_dir() else []:
            if fan.name.startswith(".tmp-"):
                continue
            names = sorted(os.listdir(fan)) if fan.is_dir() and not fan.is_symlink() else [""]
            for name in names:
                path = fan / name if name else fan
                if name.startswith(".tmp-"):
                    continue
                entries += 1
                why = _entry_problem(path, fan.name, name, self._cas)
                if why is not None:
                    if path.is_dir() and not path.is_symlink():
                        remove_tree(path)
                    else:
                        self._drop(path)
                    dropped.append((path.relative_to(self._dir.parent).as_posix(), why))
        return entries, dropped

    def put(self, key: Digest, result: ActionResult, sync: bool = True) -> None:
        """Write the entry atomically. Without `sync` it is not fsynced: the caller syncs the
        filesystem later; a crash before that loses it or leaves it torn, and a torn entry fails
        its check line, so it is dropped and the action runs again."""
        body = canonical_json(result.to_json())
        atomic_write_bytes(self._path(key), hashlib.sha256(body).hexdigest().encode() + b"\n" + body,
                           sync=sync)

    @staticmethod
    def _drop(path: Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _parse(raw: bytes) -> ActionResult:
    """An entry's bytes -> its result; ValueError (or a KeyError, TypeError from a body of the
    wrong shape) when the check line does not match the body."""
    check, _, body = raw.partition(b"\n")
    if hashlib.sha256(body).hexdigest().encode() != check:
        raise ValueError("check mismatch")
    return ActionResult.from_json(json.loads(body))


def _entry_problem(path: Path, fan: str, name: str, cas: ContentStore) -> str | None:
    """Why the entry file at `path` (`ac/<fan>/<name>`) cannot be served, or None."""
    if not _KEY_NAME.match(name) or name[:2] != fan or not path.is_file() or path.is_symlink():
        return "not an entry name"
    try:
        result = _parse(path.read_bytes())
    except FileNotFoundError:
        return None  # dropped meanwhile by a build that found it bad
    except (ValueError, KeyError, TypeError, AttributeError):
        return "its bytes do not match its check line, or do not parse"
    missing = [f for f in result.all_files() if not cas.has(f.digest, f.executable)]
    if missing:
        return f"names {len(missing)} blob(s) the store does not hold, e.g. {missing[0].digest}"
    return None
