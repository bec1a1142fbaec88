"""The `oci_layer` builtin: a compressed layer blob and its descriptor from one tar."""

from __future__ import annotations

from pathlib import Path

from pyimg.actions import BuiltinCall, builtin
from pyimg.actions._common import only_input, params_dict
from pyimg.core.digest import canonical_json
from pyimg.core.errors import UserInputError
from pyimg.oci.compress import COMPRESSIONS
from pyimg.oci.layer import layer_from_tar

__all__ = ["oci_layer"]


@builtin("oci_layer")
def oci_layer(call: BuiltinCall) -> None:
    """Compress one tar into a layer blob and write its descriptor.

    params: {"compression": "gzip" | "zstd"}   (default "gzip")
    inputs: exactly one tar file (plain, gzip or zstd; detected by magic and recompressed
            canonically, so the blob depends only on the uncompressed tar bytes).
    outputs: exactly two files:
      - the one whose exec path ends in ".json": the descriptor, canonical JSON
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip" (or "+zstd"),
         "digest": "sha256:<blob>", "size": <blob bytes>, "diffId": "sha256:<uncompressed tar>"}
      - the other one: the compressed blob.
    """
    params = params_dict(call, {"compression"}, "oci_layer")
    compression = params.get("compression") or "gzip"
    if compression not in COMPRESSIONS:
        raise UserInputError(
            f"oci_layer: compression must be one of {list(COMPRESSIONS)}, got {compression!r}"
        )
    exec_path, src = only_input(call, "oci_layer")
    json_outs = sorted(k for k in call.outputs if k.endswith(".json"))
    blob_outs = sorted(k for k in call.outputs if not k.endswith(".json"))
    if len(json_outs) != 1 or len(blob_outs) != 1:
        raise UserInputError(
            "oci_layer: expected two outputs, a blob and a descriptor ending in '.json', got "
            f"{sorted(call.outputs)}"
        )
    layer = layer_from_tar(
        src,
        Path(call.outputs[blob_outs[0]]),
        compression,
        jobs=max(1, call.jobs),
        check_cancelled=call.check_cancelled,
        what=f"oci_layer: input {exec_path}",
    )
    Path(call.outputs[json_outs[0]]).write_bytes(canonical_json(layer.to_json()))
