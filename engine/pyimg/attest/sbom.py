"""`pyimg sbom`: the SPDX document of a built image (one per platform image of an index), its
facts taken from the action graph."""

from __future__ import annotations

from typing import Any, TextIO

from pyimg.actions.sbom import FORMATS, rule_facts, sbom_document
from pyimg.attest.built import Built, LastBuild, build_for_attestation, image_layout_path
from pyimg.attest.graph_facts import image_facts
from pyimg.attest.layer_facts import CachedLayerFiles
from pyimg.build.request import BuildRequest
from pyimg.core.scheduler import ActionGraph
from pyimg.core.session import Session
from pyimg.errors import UsageError
from pyimg.oci.layout import Layout
from pyimg.oci.media_types import INDEXES, MANIFESTS
from pyimg.oci.model import Descriptor

__all__ = ["built_sbom", "built_sboms", "platform_file_name", "sboms"]


def built_sbom(built: Built, fmt: str = "spdx-json", source_date_epoch: int | None = None) -> bytes:
    """The SBOM of the one image `built` made (an oci_push target names its image)."""
    ((_, data),) = built_sboms(built, fmt, source_date_epoch, one=True)
    return data


def built_sboms(built: Built, fmt: str = "spdx-json", source_date_epoch: int | None = None,
                platform: str | None = None, one: bool = False) -> list[tuple[str | None, bytes]]:
    """The SBOM of the image `built` made, as [(None, document)]; of an index, one document per
    platform image, [(platform, document)] in the index's order (`platform`: that one only).
    `one`: an index is an error (a signed push attaches one image's SBOM)."""
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
    read_layer = CachedLayerFiles(built.session)
    if desc.media_type in INDEXES:
        images = _index_images(built, layout, path)
        names = ", ".join(images)
        if one:
            raise UsageError(f"{top[0].label} is an index of {len(images)} images ({names}): "
                             "this SBOM describes one image; name the image of one platform")
        if platform is not None and platform not in images:
            raise UsageError(f"--platform {platform}: {top[0].label} holds {names}")
        actions = built.analysis_actions()  # which target made each layer: the whole analysis
        out: list[tuple[str | None, bytes]] = []
        for name, (label, child, entry) in images.items():
            if platform is not None and name != platform:
                continue
            count = len(layout.manifest(entry).layers)
            facts = image_facts(label, child, count, actions, built.repos, built.digests,
                                built.host_path)
            out.append((name, sbom_document(layout, facts, __version__, source_date_epoch, fmt,
                                            read_layer, entry)))
        return out
    if platform is not None:
        raise UsageError(f"--platform {platform}: {top[0].label} is one image, not an index")
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
    return [(None, sbom_document(layout, facts, __version__, source_date_epoch, fmt,
                                 read_layer))]


def _index_images(built: Built, layout: Layout,
                  path: str) -> dict[str, tuple[str, str, Descriptor]]:
    """platform -> (the image's label, the exec path of the layout its oci_image made, its
    manifest in the index) of the index the oci_index action at `path` made, in its order."""
    graph = ActionGraph(built.actions)
    action = graph.producer.get(path)
    if action is None or action.builtin != "oci_index":
        raise UsageError(f"{path}: an index pyimg did not assemble (an oci_pull or oci_layout of "
                         "one): name the image of one platform")
    children = [str(c) for c in (action.params or {}).get("images") or []]
    entries = layout.image_index(layout.resolve(None)).manifests
    # oci_index lists its images in the order of its `images` (actions/oci_index.py).
    out = {}
    for child, entry in zip(children, entries, strict=True):
        label = graph.producer[child].owner if child in graph.producer else child
        out[str(entry.platform)] = (label, child, entry)
    return out


def platform_file_name(platform: str, fmt: str) -> str:
    """The file of one platform's document in `-o DIRECTORY`: linux-arm64-v8.spdx.json."""
    return platform.replace("/", "-") + (".spdx.json" if fmt == "spdx-json" else ".cdx.json")


def sboms(session: Session, request: BuildRequest, fmt: str = "spdx-json",
          source_date_epoch: int | None = None, out: TextIO | None = None,
          last: LastBuild | None = None,
          platform: str | None = None) -> list[tuple[str | None, bytes]]:
    """Build the one image or index `request` names (or take it from `last`, the record of that
    build, unchanged since) and return its SBOMs, as `built_sboms` does."""
    built = build_for_attestation(session, request, out, last)
    try:
        return built_sboms(built, fmt, source_date_epoch, platform)
    finally:
        built.close()

