"""A layer's files as an SBOM lists them, kept in the action cache under the layer's digest:
recorded by the layer action from the tar it writes, or by the first SBOM that reads the layer.

A layer's files (path, sha256, sha1, mode, owner; its symlinks) follow from its bytes alone.
Reading them back from a written layer costs a decompression (about two thirds of the work for a
gzip layer of 10,000 files), so `oci_layer` hands the uncompressed tar it is writing to
`LayerFilesTee` as well, which reads it with the SBOM's own reader (`layer_files_of`, on a
thread, while compression runs) and stores what it found under the blob digest the write gave.
The entry is an ordinary action-cache entry whose one output is the facts as canonical JSON in
the content store: verified on read, checked by `pyimg cache verify` like any other. The body
names the layer it describes, and a reader trusts it only for that layer.
"""

from __future__ import annotations

import json
import queue
import threading

from pyimg.actions.sbom import LayerFile, layer_files_of
from pyimg.core.action_cache import ActionCache, ActionResult, FileOutput
from pyimg.core.cas import ContentStore
from pyimg.core.digest import Digest, canonical_json, digest_bytes
from pyimg.core.streams import ByteWriter

__all__ = ["LayerFilesTee", "load_layer_files", "store_layer_files"]

# What the entry's key names besides the layer: a change of how layers are read (or of the
# facts' shape) takes a new kind. v2: the body names its layer.
_KIND = "pyimg/sbom-layer-files/v2"
_OUTPUT = "layer_files.json"
_CHUNK = 1 << 20
_QUEUED = 8  # chunks in flight: the writer waits when the reader falls this far behind


def _key(blob: Digest) -> Digest:
    return digest_bytes(canonical_json({"kind": _KIND, "layer": str(blob)}))


def store_layer_files(cas: ContentStore, cache: ActionCache, blob: Digest,
                      files: list[LayerFile], links: dict[str, str], sync: bool = True) -> None:
    """Keep the files and symlinks of the layer blob `blob` for `load_layer_files`. Without
    `sync` the entry is not fsynced (a build syncs the filesystem once at its end): torn by a
    crash, it fails its check and is dropped, and the SBOM reads the layer."""
    body = canonical_json({
        "layer": str(blob),
        "files": [[f.path, f.sha256, f.sha1, f.mode, f.uid, f.gid] for f in files],
        "links": links,
    })
    digest = cas.put_bytes(body)
    cache.put(_key(blob), ActionResult({_OUTPUT: FileOutput(digest, len(body), False)}, {}),
              sync=sync)


def load_layer_files(cas: ContentStore, cache: ActionCache,
                     blob: Digest) -> tuple[list[LayerFile], dict[str, str]] | None:
    """The files and symlinks kept for the layer blob `blob`, or None: none kept, an entry this
    version cannot read, or one that describes another layer (never trusted for this one)."""
    hit = cache.get(_key(blob))
    if hit is None or _OUTPUT not in hit.files:
        return None
    try:
        data = json.loads(cas.path(hit.files[_OUTPUT].digest).read_bytes())
        if data["layer"] != str(blob):
            return None
        files = [LayerFile(*entry) for entry in data["files"]]
        links = {str(k): str(v) for k, v in data["links"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return files, links


class _QueuedTar:
    """The bytes the tee was given, read on the reader's thread; b"" once the writer finished.
    One thread reads at a time (tar_scan's, then the tee's, which drains the rest)."""

    def __init__(self) -> None:
        self.chunks: queue.Queue[bytes] = queue.Queue(maxsize=_QUEUED)
        self.ended = False
        self._left = memoryview(b"")

    def read(self, size: int = -1, /) -> bytes:
        """At most `size` bytes (all of one chunk when negative); b"" only at the end."""
        if not self._left:
            if self.ended:
                return b""
            chunk = self.chunks.get()
            self.ended = not chunk
            self._left = memoryview(chunk)
        n = len(self._left) if size < 0 else min(size, len(self._left))
        out, self._left = bytes(self._left[:n]), self._left[n:]
        return out


class LayerFilesTee:
    """Reads the files of the uncompressed layer tar written through `writer(out)`, as
    `layer_files` reads a layer blob, on a thread while the tar is written; `record` then keeps
    them for the blob the write made. A tar that reader leaves to `tarfile`, or one it finds
    damaged, records nothing (the SBOM reads such a layer itself). `close` stops the thread."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._tar = _QueuedTar()
        self._pending = bytearray()
        self._ended = False
        self._found: tuple[list[LayerFile], dict[str, str]] | None = None
        self._thread = threading.Thread(target=self._read, daemon=True, name="layer-files-tee")
        self._thread.start()

    def _read(self) -> None:
        try:
            links: dict[str, str] = {}
            files = layer_files_of(self._tar, self._what, links)
            self._found = (files, links)
        except Exception:  # UnsupportedTar, a damaged tar, anything: the build goes on
            self._found = None
        finally:
            while self._tar.read():  # what the reader did not need, up to the end
                pass

    def writer(self, out: ByteWriter) -> ByteWriter:
        """A writer that passes everything to `out` and to the reader."""
        tee = self

        class _Tee:
            def write(self, data: bytes | bytearray | memoryview, /) -> int:
                n = out.write(data)
                tee._pending += data
                if len(tee._pending) >= _CHUNK:
                    tee._tar.chunks.put(bytes(tee._pending))
                    tee._pending.clear()
                return n

        return _Tee()

    def close(self) -> None:
        """Stop reading (the end of the tar, or of a write that failed); `record` may follow."""
        if not self._ended:
            self._ended = True
            if self._pending:
                self._tar.chunks.put(bytes(self._pending))
                self._pending.clear()
            self._tar.chunks.put(b"")
            self._thread.join()

    def record(self, cas: ContentStore, cache: ActionCache, blob: Digest,
               sync: bool = True) -> bool:
        """Keep what the reader found under `blob`, the digest of the layer the tar was
        compressed into (`sync`: as `store_layer_files`); False when it found nothing."""
        self.close()
        if self._found is None:
            return False
        store_layer_files(cas, cache, blob, *self._found, sync=sync)
        return True

