"""The `oci_layer` builtin: a compressed layer blob and its descriptor from one tar."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyimg.actions._common import only_input, params_dict
from pyimg.actions.builtins import builtin
from pyimg.core.builtin import BuiltinCall
from pyimg.core.digest import canonical_json
from pyimg.errors import UserInputError
from pyimg.oci.compress import COMPRESSIONS
from pyimg.oci.layer import Layer, layer_from_tar, write_layer

__all__ = ["oci_layer"]


@builtin("oci_layer")
def oci_layer(call: BuiltinCall) -> None:
    """Compress one tar into a layer blob and write its descriptor.

    params: {"compression": "gzip" | "zstd" (default "gzip"),
             "tar_spec": pkg_tar params (optional),
             "tar_writer": "pkg_tar" (default) | "deb_layer" | "py_layer" | "npm_layer": whose params tar_spec is}
    inputs: without tar_spec, exactly one tar file (plain, gzip or zstd; detected by magic and
            recompressed canonically, so the blob depends only on the uncompressed tar bytes).
            With tar_spec, the inputs pkg_tar would take: the canonical tar those params describe
            is streamed from the sources straight into hashing and compression, never written
            to disk; its bytes are exactly the ones pkg_tar writes (one function makes both).
    outputs: exactly two files:
      - the one whose exec path ends in ".json": the descriptor, canonical JSON
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip" (or "+zstd"),
         "digest": "sha256:<blob>", "size": <blob bytes>, "diffId": "sha256:<uncompressed tar>"}
      - the other one: the compressed blob.
    """
    params = params_dict(call, {"compression", "tar_spec", "tar_writer"}, "oci_layer")
    compression = params.get("compression") or "gzip"
    if compression not in COMPRESSIONS:
        raise UserInputError(
            f"oci_layer: compression must be one of {list(COMPRESSIONS)}, got {compression!r}"
        )
    json_outs = sorted(k for k in call.outputs if k.endswith(".json"))
    blob_outs = sorted(k for k in call.outputs if not k.endswith(".json"))
    if len(json_outs) != 1 or len(blob_outs) != 1:
        raise UserInputError(
            "oci_layer: expected two outputs, a blob and a descriptor ending in '.json', got "
            f"{sorted(call.outputs)}"
        )
    blob = Path(call.outputs[blob_outs[0]])
    spec = params.get("tar_spec")
    if spec is not None:
        layer = _layer_from_spec(call, spec, params.get("tar_writer") or "pkg_tar", blob, compression)
    else:
        exec_path, src = only_input(call, "oci_layer")
        layer = layer_from_tar(
            src,
            blob,
            compression,
            jobs=max(1, call.jobs),
            check_cancelled=call.check_cancelled,
            what=f"oci_layer: input {exec_path}",
        )
    call.output_digests[str(blob)] = layer.descriptor.digest
    Path(call.outputs[json_outs[0]]).write_bytes(canonical_json(layer.to_json()))


def _layer_from_spec(call: BuiltinCall, spec: Any, writer: Any, blob: Path,
                     compression: str) -> Layer:
    """The canonical tar of a pkg_tar, deb_layer or npm_layer, written straight into hashing and
    compression: no tar file."""
    write_layer_tar: Callable[..., None]
    if writer == "pkg_tar":
        from pyimg.actions.pkg_tar import _PARAMS as known
        from pyimg.actions.pkg_tar import write_layer_tar
    elif writer == "deb_layer":
        from pyimg.actions.deb_layer import PARAMS as known
        from pyimg.actions.deb_layer import write_deb_layer_tar as write_layer_tar
    elif writer == "py_layer":
        from pyimg.actions.py_layer import PY_LAYER_PARAMS as known
        from pyimg.actions.py_layer import write_py_layer_tar as write_layer_tar
    elif writer == "npm_layer":
        from pyimg.actions.npm_layer import NPM_LAYER_PARAMS as known
        from pyimg.actions.npm_layer import write_npm_layer_tar as write_layer_tar
    else:
        raise UserInputError(
            f"oci_layer: tar_writer must be pkg_tar, deb_layer, py_layer or npm_layer, got {writer!r}")
    if not isinstance(spec, dict) or set(spec) - known:
        raise UserInputError(f"oci_layer: tar_spec must be {writer} params, got {spec!r}")
    from pyimg.actions.layer_record import LayerFilesTee

    store = call.content_store
    with tempfile.TemporaryDirectory(dir=blob.parent, prefix=".oci_layer-") as scratch:
        # No store: nowhere to record the layer's files, an SBOM reads them from the blob.
        tee = LayerFilesTee(f"oci_layer: {writer} tar") if store is not None else None
        try:
            layer = write_layer(
                blob,
                compression,
                lambda out: write_layer_tar(call, spec, tee.writer(out) if tee else out,
                                            Path(scratch), what="oci_layer: tar_spec"),
                jobs=max(1, call.jobs),
                check_cancelled=call.check_cancelled,
            )
        finally:
            if tee is not None:
                tee.close()
    if tee is not None and store is not None:
        # The files an SBOM lists, read from the tar as it was written: no SBOM decompresses
        # this layer again (actions/layer_record.py). Synced with the build's own entries.
        from pyimg.core.action_cache import ActionCache

        tee.record(store, ActionCache(store.root, store), layer.descriptor.digest, sync=False)
    return layer
