"""`pyimg sbom`: the SPDX document of a built image, its facts taken from the action graph."""

from __future__ import annotations

from typing import Any, TextIO

from pyimg.actions.sbom import FORMATS, rule_facts, sbom_document
from pyimg.attest.built import Built, LastBuild, build_for_attestation, image_layout_path
from pyimg.attest.graph_facts import image_facts
from pyimg.attest.layer_facts import CachedLayerFiles
from pyimg.build.request import BuildRequest
from pyimg.core.session import Session
from pyimg.errors import UsageError
from pyimg.oci.layout import Layout
from pyimg.oci.media_types import MANIFESTS

__all__ = ["built_sbom", "sbom_bytes"]


def built_sbom(built: Built, fmt: str = "spdx-json", source_date_epoch: int | None = None) -> bytes:
    """The SBOM of the one image `built` made (an oci_push target names its image)."""
    from pyimg import __version__

    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: one of {', '.join(FORMATS)}")
    top = built.top_level
    if len(top) != 1:
        raise UsageError(f"an SBOM describes one image: {built.request.patterns} names {len(top)} "
                         "targets")
    path = image_layout_path(top[0])
    if path is None:
        raise UsageError(f"{top[0].label} ({top[0].kind}) is not an image")
    layout = Layout(built.session.workspace / path, path, lazy=built.lazy_blobs)
    desc = layout.resolve(None)
    layers = len(layout.manifest(desc).layers) if desc.media_type in MANIFESTS else 0
    info: dict[str, Any] = next(
        (f for pid, f in top[0].providers.items() if pid.endswith("%OciImageInfo")), {})
    if info.get("layers"):
        targets = [x["target"] for x in rule_facts(info["layers"], layers, lambda _: None)["layers"]]
        facts = image_facts(top[0].label, path, layers, built.actions, built.repos,
                            built.digests, built.host_path, targets)
    else:  # an oci_push: which target made each layer is found in the whole analysis
        facts = image_facts(top[0].label, path, layers, built.analysis_actions(), built.repos,
                            built.digests, built.host_path)
    return sbom_document(layout, facts, __version__, source_date_epoch, fmt,
                         CachedLayerFiles(built.session))


def sbom_bytes(session: Session, request: BuildRequest, fmt: str = "spdx-json",
               source_date_epoch: int | None = None, out: TextIO | None = None,
               last: LastBuild | None = None) -> bytes:
    """Build the one image `request` names (or take it from `last`, the record of that build,
    unchanged since) and return its SBOM (SPDX 2.3 or CycloneDX 1.5 JSON)."""
    built = build_for_attestation(session, request, out, last)
    try:
        return built_sbom(built, fmt, source_date_epoch)
    finally:
        built.close()
