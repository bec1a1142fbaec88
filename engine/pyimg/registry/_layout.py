"""The minimal OCI image layout read/write the registry client needs (private; see pyimg.oci.layout).

Layout: `oci-layout` (`{"imageLayoutVersion":"1.0.0"}`), `index.json`, `blobs/sha256/<hex>`.
Blob writes go to a temp file in the same directory, fsync, then rename; reads of manifests verify.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from pyimg.core import json_input
from pyimg.core.digest import Digest, canonical_json, digest_bytes, digest_file
from pyimg.core.errors import IntegrityError, UsageError
from pyimg.oci.media_types import OCI_INDEX

__all__ = ["REF_NAME", "Layout"]

REF_NAME = "org.opencontainers.image.ref.name"
_LAYOUT_FILE = {"imageLayoutVersion": "1.0.0"}


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Layout:
    """An OCI image layout directory. `open` requires one; `create` makes one if absent."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def open(cls, root: str | Path) -> Layout:
        layout = cls(root)
        marker = layout.root / "oci-layout"
        try:
            version = json_input.loads(marker.read_bytes()).get("imageLayoutVersion")
        except (FileNotFoundError, NotADirectoryError):
            raise UsageError(
                f"{layout.root} is not an OCI image layout (no oci-layout file)"
            ) from None
        except (ValueError, AttributeError):
            raise UsageError(f"{marker}: not valid JSON") from None
        if version != "1.0.0":
            raise UsageError(f"{marker}: unsupported imageLayoutVersion {version!r}")
        return layout

    @classmethod
    def create(cls, root: str | Path) -> Layout:
        layout = cls(root)
        (layout.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        if not (layout.root / "oci-layout").exists():
            _atomic_write(layout.root / "oci-layout", canonical_json(_LAYOUT_FILE))
        if not (layout.root / "index.json").exists():
            layout.write_index([])
        return cls.open(root)

    def blob_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def has_blob(self, digest: Digest, size: int | None = None) -> bool:
        try:
            st = self.blob_path(digest).stat()
        except FileNotFoundError:
            return False
        return size is None or st.st_size == size

    def read_blob(self, digest: Digest) -> bytes:
        """Read a (small) blob whole and verify it; for manifests and configs."""
        try:
            data = self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise UsageError(f"{self.root}: blob {digest} is missing from the layout") from None
        actual = digest_bytes(data)
        if actual != digest:
            raise IntegrityError(f"{self.blob_path(digest)}: expected {digest}, found {actual}")
        return data

    def verify_blob(self, digest: Digest, size: int | None = None) -> None:
        actual, actual_size = digest_file(self.blob_path(digest))
        if actual != digest or (size is not None and actual_size != size):
            raise IntegrityError(
                f"{self.blob_path(digest)}: expected {digest} ({size} bytes), "
                f"found {actual} ({actual_size} bytes)"
            )

    def write_blob(self, data: bytes) -> Digest:
        digest = digest_bytes(data)
        path = self.blob_path(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, data)
        return digest

    def index(self) -> dict[str, Any]:
        try:
            data = json_input.loads((self.root / "index.json").read_bytes())
        except FileNotFoundError:
            raise UsageError(f"{self.root}: no index.json") from None
        except ValueError:
            raise UsageError(f"{self.root}/index.json: not valid JSON") from None
        if not isinstance(data, dict) or not isinstance(data.get("manifests", []), list):
            raise UsageError(f"{self.root}/index.json: not an OCI image index")
        return data

    def manifests(self) -> list[dict[str, Any]]:
        return list(self.index().get("manifests", []))

    def write_index(self, manifests: list[dict[str, Any]]) -> None:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        _atomic_write(self.root / "index.json", canonical_json(index))

    def add_manifest(self, descriptor: dict[str, Any], ref_name: str | None) -> None:
        """Add a top-level descriptor; an entry with the same ref name (or digest, when no ref
        name) is replaced, so re-pulling a tag moves it."""
        kept = []
        for entry in self.manifests():
            entry_ref = (entry.get("annotations") or {}).get(REF_NAME)
            if ref_name is not None and entry_ref == ref_name:
                continue
            if (
                ref_name is None
                and entry_ref is None
                and entry.get("digest") == descriptor["digest"]
            ):
                continue
            kept.append(entry)
        if ref_name is not None:
            annotations = dict(descriptor.get("annotations") or {})
            annotations[REF_NAME] = ref_name
            descriptor = {**descriptor, "annotations": annotations}
        kept.append(descriptor)
        self.write_index(kept)

    def find(self, ref_name: str | None) -> dict[str, Any]:
        """The top-level descriptor named `ref_name`; with None, the only one there is."""
        entries = self.manifests()
        if ref_name is not None:
            for entry in entries:
                if (entry.get("annotations") or {}).get(REF_NAME) == ref_name:
                    return entry
        if len(entries) == 1:
            return entries[0]
        names = sorted(
            (e.get("annotations") or {}).get(REF_NAME) or e.get("digest", "?") for e in entries
        )
        if not entries:
            raise UsageError(f"{self.root}: index.json lists no manifests")
        raise UsageError(
            f"{self.root}: index.json lists {len(entries)} manifests; "
            f"name one of {', '.join(names)}"
            + (f" (no entry named {ref_name!r})" if ref_name else "")
        )
