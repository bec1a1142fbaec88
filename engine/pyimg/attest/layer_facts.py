"""The files of a layer as an SBOM lists them, kept in the action cache under the layer's digest.

A layer's files (path, sha256, sha1, mode, owner; its symlinks) follow from its bytes alone, so
they are read once per layer: every later SBOM of any image holding that layer (the other
format, `pyimg push --sign-key` after `pyimg sbom`, the next image on the same base) takes them
from the cache. The entry is an ordinary action-cache entry whose one output is the facts as
canonical JSON in the content store, so it is verified on read and `pyimg cache verify` checks
it like any other.
"""

from __future__ import annotations

import json
from pathlib import Path

from pyimg.actions.sbom import LayerFile, layer_files
from pyimg.core.action_cache import ActionCache, ActionResult, FileOutput
from pyimg.core.cas import ContentStore
from pyimg.core.digest import Digest, canonical_json, digest_bytes
from pyimg.core.session import Session
from pyimg.oci.model import Descriptor

__all__ = ["CachedLayerFiles"]

# What the entry's key names besides the layer: a change of how layers are read (or of the
# facts' shape) takes a new kind.
_KIND = "pyimg/sbom-layer-files/v1"
_OUTPUT = "layer_files.json"


class CachedLayerFiles:
    """`layer_files` (actions/sbom.py) of a layer blob, from the action cache when an earlier
    command read the same layer, else read and stored there."""

    def __init__(self, session: Session) -> None:
        self._cas: ContentStore
        self._cache: ActionCache
        # The digest cache only memoises verified reads here: loaded if a read asks it.
        self._cas, self._cache = session.stores(session.digest_cache(lazy=True))

    @staticmethod
    def _key(blob: Digest) -> Digest:
        return digest_bytes(canonical_json({"kind": _KIND, "layer": str(blob)}))

    def __call__(self, blob: Descriptor, path: Path, what: str,
                 links: dict[str, str]) -> list[LayerFile]:
        key = self._key(blob.digest)
        hit = self._cache.get(key)
        if hit is not None and _OUTPUT in hit.files:
            try:
                data = json.loads(self._cas.path(hit.files[_OUTPUT].digest).read_bytes())
                files = [LayerFile(*entry) for entry in data["files"]]
                links.update(data["links"])
                return files
            except (OSError, ValueError, KeyError, TypeError):
                pass  # an entry this version cannot read: read the layer again
        found: dict[str, str] = {}
        files = list(layer_files(path, what, found))
        links.update(found)
        body = canonical_json({
            "files": [[f.path, f.sha256, f.sha1, f.mode, f.uid, f.gid] for f in files],
            "links": found,
        })
        digest = self._cas.put_bytes(body)
        self._cache.put(key, ActionResult({_OUTPUT: FileOutput(digest, len(body), False)}, {}))
        return files
