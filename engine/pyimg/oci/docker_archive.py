"""The `docker load` / `podman load` archive (manifest.json + blobs), written deterministically."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path

from pyimg.core.digest import CHUNK, Digest, canonical_json
from pyimg.core.streams import ByteReader, ByteWriter
from pyimg.errors import IntegrityError, UserInputError
from pyimg.oci import media_types as mt
from pyimg.oci.compress import DecompressedReader, open_decompressed
from pyimg.oci.config import layer_diff_ids
from pyimg.oci.layout import Layout
from pyimg.oci.model import Descriptor, load_json
from pyimg.oci.tar import TarEntry, write_tar

__all__ = ["check_repo_tag", "write_docker_archive"]

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPO_TAG = re.compile(
    rf"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9.-]*[a-zA-Z0-9])?(?::[0-9]+)?/)?{_COMPONENT}(?:/{_COMPONENT})*"
    r":[\w][\w.-]{0,127}$"
)


def check_repo_tag(tag: str) -> str:
    """`tag` if it is a full `repository:tag` reference docker and podman accept, else an error."""
    if not isinstance(tag, str) or not _REPO_TAG.match(tag):
        raise UserInputError(
            f"repo_tags: {tag!r} is not a 'repository:tag' reference (e.g. 'example.com/app:1.0')"
        )
    return tag


def _uncompressed_size(path: Path, diff_id: Digest, what: str) -> int:
    """Decompress once to learn the tar size (the header comes first) and check the diff_id."""
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        reader, _ = open_decompressed(f)
        while chunk := reader.read(CHUNK):
            h.update(chunk)
            size += len(chunk)
    if h.hexdigest() != diff_id.hex:
        raise IntegrityError(f"{what}: uncompresses to sha256:{h.hexdigest()}, expected {diff_id}")
    return size


def _decompressing_opener(path: Path) -> Callable[[], AbstractContextManager[ByteReader]]:
    class _Reader:
        def __enter__(self) -> DecompressedReader:
            self._f = open(path, "rb")  # noqa: SIM115 (closed in __exit__)
            self._r, _ = open_decompressed(self._f)
            return self._r

        def __exit__(self, *exc: object) -> None:
            self._r.close()
            self._f.close()

    return _Reader


def write_docker_archive(
    out: ByteWriter,
    layout: Layout,
    manifest: Descriptor,
    repo_tags: Sequence[str],
    *,
    check_cancelled: Callable[[], None] | None = None,
) -> None:
    """Write the docker-archive tar of one image manifest of `layout` to `out`.

    Layout: `manifest.json` ([{Config, RepoTags, Layers}], canonical JSON) and `blobs/sha256/*`.
    gzip and uncompressed layer blobs are stored as they are (docker and podman detect the
    compression); zstd layers, which older docker cannot load, are stored decompressed under
    their diff_id. Entries follow the canonical tar rules (sorted, mtime 0, owner 0:0, 0644).
    """
    if manifest.media_type not in mt.MANIFESTS:
        raise UserInputError(
            f"{layout.what}: {manifest.digest} is {manifest.media_type!r}, not an image manifest "
            "(a docker archive holds one platform's image)"
        )
    tags = [check_repo_tag(t) for t in repo_tags]
    m = layout.manifest(manifest)
    cfg_bytes = layout.read_blob(m.config)
    cfg = load_json(cfg_bytes, f"{layout.what}: config {m.config.digest}")
    diff_ids = layer_diff_ids(cfg, m, f"{layout.what}: manifest {manifest.digest}")
    entries: dict[str, TarEntry] = {}
    cfg_name = f"blobs/sha256/{m.config.digest.hex}"
    entries[cfg_name] = TarEntry(cfg_name, data=cfg_bytes)
    layer_names: list[str] = []
    for layer, diff_id in zip(m.layers, diff_ids, strict=True):
        path = layout.blob_file(layer.digest)
        what = f"{layout.what}: layer {layer.digest}"
        if not path.is_file():
            raise UserInputError(f"{what}: blob is missing")
        if mt.layer_compression(layer.media_type) == "zstd":
            name = f"blobs/sha256/{diff_id.hex}"
            if name not in entries:
                size = _uncompressed_size(path, diff_id, what)
                entries[name] = TarEntry(name, size=size, opener=_decompressing_opener(path))
        else:
            name = f"blobs/sha256/{layer.digest.hex}"
            if name not in entries:
                entries[name] = TarEntry(name, src=path)
        layer_names.append(name)
    manifest_json = canonical_json([{"Config": cfg_name, "Layers": layer_names, "RepoTags": tags}])
    entries["manifest.json"] = TarEntry("manifest.json", data=manifest_json)
    write_tar(out, entries.values(), mtime=0, check_cancelled=check_cancelled)
