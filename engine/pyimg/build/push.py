"""Pushing built images and indexes to a registry: `pyimg push` and `pyimg run` of an oci_push.

A push goes through the registry client: blobs the repository has are skipped (HEAD first), blobs
of a pulled base in another repository of the same registry are mounted, the rest uploaded; an
index pushes every image in it. An unchanged image re-pushed uploads nothing. The layout may be
sparse (a pulled base's layers never downloaded): such a layer is fetched only when the
destination can neither mount it nor has it.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TextIO, cast

from pyimg.core.digest import Digest
from pyimg.core.session import Session
from pyimg.errors import UsageError
from pyimg.external.options import RegistryOptions
from pyimg.external.pulled import PulledBlobs, pulled_markers
from pyimg.external.repositories import Repositories

if TYPE_CHECKING:
    from pyimg.analysis.analyzer import TargetResult
    from pyimg.oci.model import Descriptor
    from pyimg.registry.push import PushCounters
    from pyimg.signing.attach import Predicate, Signing
    from pyimg.signing.keys import SigningKey

__all__ = ["mount_source", "push_layout_dir", "push_target", "target_layout"]


def target_layout(session: Session, target: TargetResult) -> Path:
    """The OCI layout directory an image, index or oci_push target produced."""
    for pid, fields in target.providers.items():
        if pid.endswith(("%OciImageInfo", "%OciImageIndexInfo", "%OciPushInfo")):
            return session.workspace / fields["layout"]["path"]
    dirs = [f for f in target.default_files if f.get("is_directory")]
    if len(dirs) == 1:
        return session.workspace / dirs[0]["path"]
    raise UsageError(f"{target.label} ({target.kind}) is not an image or index: nothing to push")


def _referenced_blobs(layout_dir: Path) -> set[str]:
    """Every blob digest the layout's images reference, present or left out (lazy layers)."""
    from pyimg.oci.layout import Layout, walk_all

    return {str(d.digest) for d in walk_all(Layout(layout_dir))}


def mount_source(session: Session, layout: Path, registry: str) -> str | None:
    """A repository of `registry` that an oci_pull of this workspace came from and that holds
    the most of the layout's blobs: the registry can mount those instead of receiving them."""
    blobs = _referenced_blobs(layout)
    best: tuple[int, str] | None = None
    for data in pulled_markers(session.output_base):
        if data.get("registry") != registry:
            continue
        shared = len(blobs & set(data.get("blobs") or []))
        if shared and (best is None or shared > best[0]):
            best = (shared, data["repository"])
    return best[1] if best else None


def push_layout_dir(
    session: Session,
    layout: Path,
    repository: str,
    tags: list[str],
    registry: RegistryOptions,
    out: TextIO | None = None,
    lazy_blobs: PulledBlobs | None = None,
    sign: SigningKey | None = None,
    predicates: Sequence[Predicate] = (),
) -> tuple[Digest, PushCounters]:
    """Push the layout's image or index to `repository` (tagged with each of `tags`); returns
    the digest and the client's counters. `lazy_blobs` fetches the layers a sparse layout lacks
    (by default, from the workspace's oci_pull repositories, opened only if one is needed).
    With `sign`, the pushed digest is then signed in cosign's format (signing/attach.py), and
    `predicates` (the SBOM and provenance the caller derived: build may not import attest) are
    attached as DSSE attestations signed by the same key, in the same batch of referrers. An
    index is signed with each image it lists (cosign's `--recursive`); a predicate whose `about`
    names one of them is attached to that image."""
    from pyimg.registry.reference import parse_reference

    out = out or sys.stderr
    ref = parse_reference(repository)
    if ref.digest is not None:
        raise UsageError(f"--repository {repository!r}: a push destination cannot hold a digest")
    all_tags = list(dict.fromkeys([*([ref.tag] if ref.tag else []), *tags]))
    for t in all_tags:
        ref.with_tag(t)  # validates the tag before anything is sent
    dest = parse_reference(ref.name)
    client = registry.client()
    fetch = _LazyFetch(session, registry, lazy_blobs)
    try:
        mount = mount_source(session, layout, dest.registry)
        from pyimg.oci.layout import Layout

        # What push_layout pushes for a destination without a tag: the layout's one entry.
        entry = Layout(layout).resolve(None)
        data = (layout / "blobs" / entry.digest.algorithm / entry.digest.hex).read_bytes()
        media_type = json.loads(data).get("mediaType") or _entry_type(layout, entry.digest)

        def push_image() -> Digest:
            # Pushed by digest first; tags are set only once the whole tree is there.
            digest = client.push_layout(layout, dest, [], mount_from=mount, fetch_missing=fetch)
            for tag in all_tags:
                client.put_manifest(dest.with_tag(tag), data, media_type, tag)
            return digest

        signing: Signing | None = None
        if sign is None:
            digest = push_image()
        else:
            from pyimg.oci.model import Descriptor
            from pyimg.registry.referrers import in_parallel
            from pyimg.signing.attach import begin_signing_tree

            # The signature's first round (reading the .sig and referrers tags, opening the
            # uploads of its blobs) needs the image's digest, not the image in the registry:
            # it overlaps the push, so signing adds one round-trip fewer. An index is signed
            # with each image it lists, each with the predicates about it.
            subject = Descriptor(media_type, entry.digest, len(data))
            calls: list[Callable[[], object]] = [
                push_image,
                partial(begin_signing_tree, client, dest.with_digest(entry.digest), sign,
                        subject, _listed_images(data, media_type), predicates),
            ]
            pushed, begun = in_parallel(calls)
            digest, signing = cast("Digest", pushed), cast("Signing", begun)
        c = client.counters
        print(
            f"Pushed {dest.name}@{digest} ({c.uploaded} blobs uploaded, {c.mounted} mounted, "
            f"{c.skipped} already there)",
            file=out,
        )
        if signing is not None:
            signing.finish()
            attached = "".join(f", {p.what}" for p in predicates)
            listed = len(_listed_images(data, media_type))
            images = f" and the {listed} images it lists" if listed else ""
            print(f"Signed {dest.name}@{digest}{images} (the .sig tag and a Sigstore bundle "
                  f"referrer of each{attached})", file=out)
        return digest, c
    finally:
        fetch.close()
        client.close()


class _LazyFetch:
    """fetch(digest) -> Path for a layer a sparse layout left out (the build's PulledBlobs, or
    the output base's when the build was not run). The workspace's repositories (MODULE.pyimg)
    are opened only when a layer must be downloaded."""

    def __init__(self, session: Session, registry: RegistryOptions,
                 lazy_blobs: PulledBlobs | None) -> None:
        def repositories() -> Repositories:
            return Repositories(session, registry=registry)

        self.source = lazy_blobs or PulledBlobs(session.output_base, repositories)

    def __call__(self, digest: Digest) -> Path:
        if not self.source.knows(digest):
            raise UsageError(f"blob {digest} is neither in the layout nor in a pulled base image")
        return self.source.fetch(digest)

    def close(self) -> None:
        self.source.close()


def _listed_images(data: bytes, media_type: str) -> tuple[Descriptor, ...]:
    """The images an index lists (none: `data` is an image's manifest)."""
    from pyimg.oci.media_types import INDEXES
    from pyimg.oci.model import parse_index

    return parse_index(data, "the pushed index").manifests if media_type in INDEXES else ()


def _entry_type(layout: Path, digest: Digest) -> str:
    index = json.loads((layout / "index.json").read_text())
    for m in index.get("manifests") or []:
        if m.get("digest") == str(digest):
            return str(m["mediaType"])
    raise UsageError(f"{layout}: {digest} is not in index.json")


def push_target(session: Session, target: TargetResult, registry: RegistryOptions,
                repository: str | None = None, tags: tuple[str, ...] = (),
                lazy_blobs: PulledBlobs | None = None,
                environ: Mapping[str, str] | None = None,
                attestations: Callable[[], Sequence[Predicate]] | None = None) -> Digest:
    """Push what an oci_push target built to its repository (or `repository`), tagged with its
    remote_tags and `tags`, and sign it when the target names a `sign_key` (read from `environ`
    or the workspace before anything is pushed, so a wrong password pushes nothing), attaching
    what `attestations()` derives (called only to sign: build may not import attest); returns
    the pushed digest."""
    info = next((f for pid, f in target.providers.items() if pid.endswith("%OciPushInfo")), None)
    if info is None:
        raise UsageError(f"{target.label} is not an oci_push target")
    layout = session.workspace / info["layout"]["path"]
    all_tags = list(info.get("remote_tags") or []) + list(tags)
    key = None
    if info.get("sign_key"):
        from pyimg.signing.keys import ENV_PREFIX, open_signing_key

        spec = str(info["sign_key"])
        if not spec.startswith(ENV_PREFIX):
            spec = str(session.workspace / spec)
        key = open_signing_key(spec, environ or {}, info.get("sign_key_password_env") or None)
    predicates = attestations() if key is not None and attestations is not None else ()
    digest, _ = push_layout_dir(session, layout, repository or info["repository"], all_tags,
                                registry, lazy_blobs=lazy_blobs, sign=key, predicates=predicates)
    return digest
