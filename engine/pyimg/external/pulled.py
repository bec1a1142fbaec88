"""The lazy layers of pulled base images: known by digest from the oci_pull repositories'
markers, fetched into the repository cache the first time an output needs their bytes.

Light on imports on purpose: the incremental build uses it without evaluating MODULE.pyimg,
unless a layer has to be downloaded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyimg.core.digest import Digest
from pyimg.core.workspace import EXTERNAL_DIR

if TYPE_CHECKING:
    from pyimg.core.builtin import LayerFetcher
    from pyimg.core.cas import ContentStore

__all__ = ["MARKER_VERSION", "PulledBlobs", "pulled_markers"]

# Of `<output base>/external/<name>.marker` (written by external/repositories.py): bumped when the
# layout of a materialized repository changes, so that older ones are redone.
MARKER_VERSION = 3  # 3: `@x` of an index pull knows its platforms


def pulled_markers(output_base: Path) -> list[dict[str, Any]]:
    """What each oci_pull repository of this output base recorded: name, registry, repository,
    blobs (every digest its images reference) and layers ({digest: size}, the lazy ones)."""
    found = []
    for marker in sorted((output_base / EXTERNAL_DIR).glob("*.marker")):
        try:
            data = json.loads(marker.read_text())
        except (OSError, ValueError):
            continue
        if data.get("kind") == "oci_pull" and data.get("v") == MARKER_VERSION:
            found.append({**data, "name": marker.name[: -len(".marker")]})
    return found


class PulledBlobs:
    """A `BlobSource` (core/builtin.py) for builtins and for materializing outputs: the layers of
    the output base's oci_pull repositories. `repositories()` gives the `LayerFetcher` (the
    workspace's external repositories), asked for only when a layer must be fetched. `store`, the build's content store, answers
    first: its verification is remembered across builds, so a stored layer is not hashed again.
    Thread-safe."""

    def __init__(self, output_base: Path, repositories: Callable[[], LayerFetcher],
                 store: ContentStore | None = None) -> None:
        self.output_base = output_base
        self._repositories = repositories
        self.store = store
        self.repos: LayerFetcher | None = None
        self._layers: dict[Digest, tuple[str, int]] | None = None  # digest -> (repo name, size)
        self._lock = threading.Lock()
        self._fetching: dict[Digest, threading.Lock] = {}

    def _known(self) -> dict[Digest, tuple[str, int]]:
        with self._lock:
            if self._layers is None:
                self._layers = {}
                for data in pulled_markers(self.output_base):
                    for digest, size in (data.get("layers") or {}).items():
                        self._layers.setdefault(Digest.parse(digest), (data["name"], int(size)))
            return self._layers

    def knows(self, digest: Digest) -> bool:
        return digest in self._known()

    def fetch(self, digest: Digest) -> Path:
        name, size = self._known()[digest]
        if self.store is not None and self.store.verify(digest):
            return self.store.path(digest)
        with self._lock:
            if self.repos is None:
                self.repos = self._repositories()
            repos = self.repos
            one = self._fetching.setdefault(digest, threading.Lock())

        with one:  # two actions needing the same layer download it once
            return repos.fetch_layer(name, digest, size)

    def close(self) -> None:
        if self.repos is not None:
            self.repos.close()
