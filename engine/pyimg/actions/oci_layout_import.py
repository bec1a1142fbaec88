"""The `oci_layout_import` builtin: a pinned image or index out of a workspace OCI layout."""

from __future__ import annotations

import os
from pathlib import Path

from pyimg.actions._common import (
    output_dir,
    output_with_suffix,
    params_dict,
    write_digest_file,
)
from pyimg.actions.builtins import builtin
from pyimg.core.builtin import BuiltinCall
from pyimg.core.digest import Digest, digest_file
from pyimg.errors import UserInputError
from pyimg.oci import media_types as mt
from pyimg.oci.layout import REF_NAME, LayoutWriter
from pyimg.oci.model import (
    Descriptor,
    load_json,
    parse_index,
    parse_manifest,
    sniff_media_type,
)

__all__ = ["oci_layout_import"]


class _Source:
    """The layout's files as the engine declared them: exec path → (readable path, digest)."""

    def __init__(self, call: BuiltinCall, prefix: str) -> None:
        self.call = call
        self.prefix = prefix.rstrip("/")
        whole = call.inputs.get(self.prefix)
        # The layout may also arrive as one declared directory input.
        self.dir = Path(whole) if whole is not None and Path(whole).is_dir() else None

    def file(self, rel: str) -> tuple[Path, Digest | None] | None:
        exec_path = f"{self.prefix}/{rel}"
        if exec_path in self.call.inputs:
            return Path(self.call.inputs[exec_path]), self.call.input_digests.get(exec_path)
        if self.dir is not None and (self.dir / rel).is_file():
            return self.dir / rel, None
        return None

    def lazy(self, digest: Digest) -> bool:
        """Absent from the layout but pinned by a pulled image (its layers stay remote)."""
        absent = self.file(f"blobs/{digest.algorithm}/{digest.hex}") is None
        return absent and self.call.lazy_blobs is not None and self.call.lazy_blobs.knows(digest)

    def blob(self, desc: Descriptor, what: str) -> Path:
        """The verified blob for `desc`: present, same size, same digest (from the engine)."""
        rel = f"blobs/{desc.digest.algorithm}/{desc.digest.hex}"
        found = self.file(rel)
        if found is None:
            raise UserInputError(
                f"oci_layout_import: {self.prefix}: {what} blob {desc.digest} is missing "
                f"({self.prefix}/{rel} is not an input)"
            )
        path, digest = found
        if digest is None:
            # Only when the engine passed a directory: its files have no digests of their own.
            digest = digest_file(path)[0]
        if digest != desc.digest:
            raise UserInputError(
                f"oci_layout_import: {self.prefix}: {what} blob {self.prefix}/{rel} is corrupt: "
                f"expected {desc.digest}, found {digest}"
            )
        size = os.stat(path).st_size
        if size != desc.size:
            raise UserInputError(
                f"oci_layout_import: {self.prefix}: {what} blob {desc.digest} has {size} bytes, "
                f"expected {desc.size}"
            )
        return path


def _listing(entries: tuple[Descriptor, ...]) -> str:
    """What index.json names, one entry a line, for an error about a digest it lacks."""
    if not entries:
        return "index.json names nothing"
    lines = []
    for d in entries:
        details = [d.media_type]
        if d.platform is not None:
            details.append(str(d.platform))
        ref = dict(d.annotations).get(REF_NAME)
        if ref:
            details.append(f"ref {ref!r}")
        lines.append(f"\n  {d.digest} ({', '.join(details)})")
    return "index.json names:" + "".join(lines)


@builtin("oci_layout_import")
def oci_layout_import(call: BuiltinCall) -> None:
    """Import one pinned image or index from an OCI layout directory of the workspace.

    params: {
      path: EXEC_PATH       the layout directory's exec path; the inputs are the files under
                            it (`PATH/index.json`, `PATH/blobs/sha256/<hex>`, ...) or the
                            directory itself as one input
      digest: "sha256:..."  required: the manifest or index to import
    }
    The digest must be an entry of index.json or a blob of the layout; every blob reachable from
    it (child manifests, configs, layers) must be present with the right size and digest, except
    layers that `call.lazy_blobs` knows: those stay out of the output too (a sparse layout). The
    digests come from the engine's input digests (files are not re-hashed). A missing or corrupt
    blob is a UserInputError naming the blob and both digests.
    outputs: one directory (in output_dirs): an OCI layout holding exactly that image or index
    (blobs hard-linked), its index.json entry annotated ref.name=latest; and, if declared, one
    file ending in ".digest" holding the digest.
    """
    params = params_dict(call, {"path", "digest"}, "oci_layout_import")
    prefix = params.get("path")
    if not isinstance(prefix, str) or not prefix:
        raise UserInputError("oci_layout_import: path must be the layout directory's exec path")
    try:
        pinned = Digest.parse(str(params.get("digest")))
    except ValueError as e:
        raise UserInputError(f"oci_layout_import: digest: {e}") from None
    src = _Source(call, prefix)

    index_file = src.file("index.json")
    if index_file is None:
        raise UserInputError(f"oci_layout_import: {prefix}: no index.json (not an OCI layout)")
    if src.file("oci-layout") is None:
        raise UserInputError(f"oci_layout_import: {prefix}: no oci-layout file")
    top = parse_index(index_file[0].read_bytes(), f"{prefix}/index.json")
    root = next((d for d in top.manifests if d.digest == pinned), None)
    if root is None:
        found = src.file(f"blobs/{pinned.algorithm}/{pinned.hex}")
        if found is None:
            raise UserInputError(
                f"oci_layout_import: {prefix}: {pinned} is neither in index.json nor a blob; "
                + _listing(top.manifests)
            )
        data = found[0].read_bytes()
        media_type = sniff_media_type(load_json(data, f"{prefix}: blob {pinned}"))
        root = Descriptor(media_type, pinned, len(data))
    if root.media_type not in mt.MANIFESTS | mt.INDEXES:
        raise UserInputError(
            f"oci_layout_import: {prefix}: {pinned} is {root.media_type!r}, not a manifest or index"
        )

    writer = LayoutWriter(output_dir(call, "oci_layout_import"))
    seen: set[Digest] = set()

    def visit(desc: Descriptor, what: str, layer: bool = False) -> None:
        if desc.digest in seen:
            return
        seen.add(desc.digest)
        call.check_cancelled()
        if layer and src.lazy(desc.digest):
            return  # an oci_pull layer: referenced now, fetched when an output needs its bytes
        path = src.blob(desc, what)
        rel = f"blobs/{desc.digest.algorithm}/{desc.digest.hex}"
        writer.add_file(desc.digest, path, link=call.may_link(f"{src.prefix}/{rel}"))
        where = f"{prefix}: {what} {desc.digest}"
        if desc.media_type in mt.INDEXES:
            for i, child in enumerate(parse_index(path.read_bytes(), where).manifests):
                visit(child, f"manifests[{i}] of index {desc.digest}")
        elif desc.media_type in mt.MANIFESTS:
            m = parse_manifest(path.read_bytes(), where)
            visit(m.config, f"config of manifest {desc.digest}")
            for i, child in enumerate(m.layers):
                visit(child, f"layers[{i}] of manifest {desc.digest}", layer=True)

    visit(root, "pinned")
    # Keep the entry's platform, drop its other annotations: the ref name is ours.
    writer.finish(
        [
            Descriptor(
                root.media_type, root.digest, root.size, ((REF_NAME, "latest"),), root.platform
            )
        ]
    )
    digest_out = output_with_suffix(call, ".digest", "oci_layout_import", required=False)
    if digest_out is not None:
        write_digest_file(digest_out, pinned)
