"""The files of a layer as an SBOM lists them, from the action cache under the layer's digest.

A layer's files (path, sha256, sha1, mode, owner; its symlinks) follow from its bytes alone, so
they are read once per layer: the layer action records them as it writes a layer it streams
(actions/layer_record.py), and every other layer (a pulled base's, one made from a tar file) is
read by the first SBOM that needs it; every later SBOM of any image holding that layer (the
other format, `pyimg push --sign-key` after `pyimg sbom`, the next image on the same base) takes
them from the cache. The entry is an ordinary action-cache entry whose one output is the facts
as canonical JSON in the content store, so it is verified on read and `pyimg cache verify`
checks it like any other.
"""

from __future__ import annotations

from pathlib import Path

from pyimg.actions.layer_record import load_layer_files, store_layer_files
from pyimg.actions.sbom import LayerFile, layer_files
from pyimg.core.action_cache import ActionCache
from pyimg.core.cas import ContentStore
from pyimg.core.session import Session
from pyimg.oci.model import Descriptor

__all__ = ["CachedLayerFiles"]


class CachedLayerFiles:
    """`layer_files` (actions/sbom.py) of a layer blob, from the action cache when the build
    or an earlier command recorded the same layer, else read and stored there."""

    def __init__(self, session: Session) -> None:
        self._cas: ContentStore
        self._cache: ActionCache
        # The digest cache only memoises verified reads here: loaded if a read asks it.
        self._cas, self._cache = session.stores(session.digest_cache(lazy=True))

    def __call__(self, blob: Descriptor, path: Path, what: str,
                 links: dict[str, str]) -> list[LayerFile]:
        kept = load_layer_files(self._cas, self._cache, blob.digest)
        if kept is not None:
            files, found = kept
            links.update(found)
            return files
        found = {}
        files = list(layer_files(path, what, found))
        links.update(found)
        store_layer_files(self._cas, self._cache, blob.digest, files, found)
        return files
