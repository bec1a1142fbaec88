"""The action cache on disk: action key -> the digests of the outputs it produced.

Entries live at `<root>/ac/<hex[:2]>/<hex>`: a line holding the sha256 of the body, then the body
(canonical JSON), written atomically. The check covers the exact bytes, so reading an entry never
re-serializes it. An entry is served only if it parses, its check matches, and every blob it names is in
the content store with the right bytes; otherwise it is dropped and the action runs again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyimg.core.cas import ContentStore, atomic_write_bytes
from pyimg.core.digest import Digest, canonical_json

__all__ = ["ActionCache", "ActionResult", "FileOutput"]


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

    def get(self, key: Digest) -> ActionResult | None:
        path = self._path(key)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            check, _, body = raw.partition(b"\n")
            if hashlib.sha256(body).hexdigest().encode() != check:
                raise ValueError("check mismatch")
            result = ActionResult.from_json(json.loads(body))
        except (ValueError, KeyError, TypeError):
            self._drop(path)
            return None
        if not all(self._cas.verify(f.digest, f.executable) for f in result.all_files()):
            self._drop(path)
            return None
        return result

    def put(self, key: Digest, result: ActionResult) -> None:
        body = canonical_json(result.to_json())
        atomic_write_bytes(self._path(key), hashlib.sha256(body).hexdigest().encode() + b"\n" + body)

    @staticmethod
    def _drop(path: Path) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
