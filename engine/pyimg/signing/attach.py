"""Signing, attesting and verifying images in a registry, where cosign and its verifiers look.

- A signature is a simple-signing payload signed with the key, stored as cosign stores it: a
  layer of the manifest tagged `sha256-<hex>.sig` (annotation `dev.cosignproject.cosign/signature`),
  plus a Sigstore bundle attached as an OCI 1.1 referrer (a DSSE envelope of an in-toto statement
  about the image, so the bundle verifies on its own).
- An attestation (SBOM, provenance, any predicate) is a DSSE envelope of an in-toto statement
  about the image, attached as an OCI 1.1 referrer (registry/referrers.py).
- An index is signed as `cosign sign --recursive` signs one: the index and each image it lists,
  each with its own `.sig` tag and bundle; an attestation names which of them it is about (an
  SBOM describes one platform's image, as BuildKit attaches one per platform).
Nothing is written into the image or its index: its digest stays the one the build made.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import cast

from pyimg.core import json_input
from pyimg.core.digest import Digest, canonical_json
from pyimg.errors import IntegrityError, RegistryError, UsageError, VerificationError
from pyimg.oci.media_types import INDEXES, OCI_CONFIG, OCI_MANIFEST
from pyimg.oci.model import (
    Descriptor,
    Manifest,
    descriptor_for_bytes,
    parse_index,
    parse_manifest,
)
from pyimg.registry.client import RegistryClient
from pyimg.registry.pull import FetchedManifest
from pyimg.registry.reference import Reference
from pyimg.registry.referrers import (
    Artifact,
    OpenedArtifacts,
    attach_artifacts,
    in_parallel,
    list_referrers,
    open_artifacts,
)
from pyimg.registry.tag_update import read_tag, update_tag

from .formats import (
    BUNDLE_MEDIA_TYPE,
    COSIGN_SIGNATURE,
    DSSE_MEDIA_TYPE,
    STATEMENT_TYPE,
    bundle_envelope,
    dsse_envelope,
    in_toto_statement,
    open_envelope,
    parse_simple_signing,
    sigstore_bundle,
    simple_signing_payload,
)
from .keys import SigningKey, VerifyingKey

__all__ = [
    "PREDICATE_TYPES",
    "REQUIREMENTS",
    "Predicate",
    "SIGNATURE_ANNOTATION",
    "SIMPLESIGNING_MEDIA_TYPE",
    "Signing",
    "Verified",
    "attest_image",
    "begin_signing",
    "begin_signing_tree",
    "predicate_type",
    "sign_image",
    "signature_tag",
    "verify_image",
]

SIMPLESIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
BUILDKIT_REFERENCE_TYPE = "vnd.docker.reference.type"
PREDICATE_ANNOTATION = "dev.sigstore.bundle.predicateType"
# What `cosign sign --new-bundle-format` states about an image it signs.
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"

# `--type` shorthands, as cosign's `attest --type` names them. pyimg writes SLSA provenance v1,
# so `slsaprovenance` means v1 here (cosign's means v0.2; give that URI to attach a v0.2 one).
PREDICATE_TYPES = {
    "spdx": "https://spdx.dev/Document",
    "spdxjson": "https://spdx.dev/Document",
    "cyclonedx": "https://cyclonedx.org/bom",
    "slsaprovenance": "https://slsa.dev/provenance/v1",
    "slsaprovenance1": "https://slsa.dev/provenance/v1",
    "slsaprovenance02": "https://slsa.dev/provenance/v0.2",
}
# `verify --require NAME`: which predicate types satisfy NAME.
REQUIREMENTS = {
    "sbom": ("https://spdx.dev/Document", "https://cyclonedx.org/bom"),
    "provenance": ("https://slsa.dev/provenance/",),
}


def predicate_type(kind: str) -> str:
    """The predicate type URI of a `--type` value (a shorthand or a URI)."""
    if kind in PREDICATE_TYPES:
        return PREDICATE_TYPES[kind]
    if "://" in kind:
        return kind
    raise UsageError(
        f"--type {kind!r}: give one of {', '.join(sorted(PREDICATE_TYPES))} or a predicate type URI"
    )


def signature_tag(digest: Digest) -> str:
    """Where cosign and containers/image look for an image's signatures: `sha256-<hex>.sig`."""
    return f"{digest.algorithm}-{digest.hex}.sig"


def _subject(client: RegistryClient, ref: Reference) -> Descriptor:
    return client.get_manifest(ref).descriptor()


def _subject_and_images(client: RegistryClient, ref: Reference) -> tuple[Descriptor, tuple[Descriptor, ...]]:
    """What `ref` names, and the images it lists when it is an index (none for an image)."""
    fetched = client.get_manifest(ref)
    if fetched.media_type not in INDEXES:
        return fetched.descriptor(), ()
    where = f"{ref.name}@{fetched.digest}"
    try:
        listed = parse_index(fetched.data, where).manifests
    except Exception as e:  # noqa: BLE001 - any unreadable index is the same failure here
        raise VerificationError(f"{where}: not a readable index ({e})") from None
    # BuildKit's attestation manifests, listed in its indexes, are not images to sign.
    images = tuple(d for d in listed
                   if dict(d.annotations).get(BUILDKIT_REFERENCE_TYPE) != "attestation-manifest")
    return fetched.descriptor(), images


def _identity(ref: Reference) -> str:
    """The docker-reference a cosign signature names: the repository, without tag or digest."""
    return ref.name


@dataclass(frozen=True)
class Predicate:
    """An attestation to attach: its JSON (a predicate, or a whole in-toto statement about the
    image), its `--type` (a shorthand or a URI), and where it came from (for messages).
    `about`: of a signed index, the digest of the listed image it describes (None: the image or
    index that is signed)."""

    data: bytes = field(repr=False)
    kind: str
    what: str
    about: Digest | None = None


def sign_image(
    client: RegistryClient,
    ref: Reference,
    key: SigningKey,
    subject: Descriptor | None = None,
    predicates: Sequence[Predicate] = (),
) -> Descriptor:
    """Sign the image `ref` names (or `subject`, when the caller just pushed it), and attach
    `predicates` signed by the same key in the same batch of referrers (one update of the
    referrers tag for all); returns the image's descriptor (what was signed).

    Signing is idempotent: the signature is deterministic, so signing again finds it present.
    Every predicate is checked before anything is pushed. An index that `ref` names is signed
    with each image it lists (`begin_signing_tree`).
    """
    if subject is not None:
        return begin_signing(client, ref, key, subject, predicates).finish()
    top, images = _subject_and_images(client, ref)
    return begin_signing_tree(client, ref, key, top, images, predicates).finish()


class Signing:
    """A signature whose first round of requests was sent (`begin_signing`)."""

    def __init__(self, subject: Descriptor, finishers: list[Callable[[], object]]) -> None:
        self.subject = subject
        self._finishers = finishers

    def finish(self) -> Descriptor:
        """Send the other rounds (the .sig tag's and the referrers' overlap); the subject."""
        in_parallel(self._finishers)
        return self.subject


def begin_signing(
    client: RegistryClient,
    ref: Reference,
    key: SigningKey,
    subject: Descriptor,
    predicates: Sequence[Predicate] = (),
) -> Signing:
    """`sign_image`'s first round: the reads of the .sig and referrers tags and a POST per blob.
    It needs only the subject's digest, not the subject in the registry, so a push overlaps it
    with the image's own requests (build/push.py) and calls `finish` once the image is there."""
    attestations = [_attestation(ref, subject, key, p) for p in predicates]
    payload = simple_signing_payload(_identity(ref), subject.digest, COSIGN_SIGNATURE)
    signature = key.sign(payload)
    statement = in_toto_statement(_identity(ref), subject.digest, SIGN_PREDICATE, {})
    bundle = sigstore_bundle(dsse_envelope(statement, key), key)
    annotations = ((PREDICATE_ANNOTATION, SIGN_PREDICATE),)
    artifacts = [Artifact(BUNDLE_MEDIA_TYPE, BUNDLE_MEDIA_TYPE, bundle, annotations), *attestations]
    # The .sig tag and the referrers do not depend on each other: their rounds of requests
    # overlap (docs/benchmarks.md counts both).
    both: list[Callable[[], object]] = [
        partial(_open_cosign_signature, client, ref, subject.digest, payload, signature),
        partial(open_artifacts, client, ref, subject, artifacts),
    ]
    signature_rest, opened = in_parallel(both)
    return Signing(subject, [cast("Callable[[], object]", signature_rest),
                             cast("OpenedArtifacts", opened).finish])


def begin_signing_tree(
    client: RegistryClient,
    ref: Reference,
    key: SigningKey,
    subject: Descriptor,
    images: Sequence[Descriptor],
    predicates: Sequence[Predicate] = (),
) -> Signing:
    """`begin_signing` of an index `subject` and of each of the `images` it lists (none: of an
    image), as `cosign sign --recursive` signs: each gets its `.sig` tag and bundle, and the
    predicates whose `about` names it. The first rounds of all go out together, so an index adds
    requests but not round-trips to the signature of one image."""
    digests = {image.digest for image in images}
    for p in predicates:
        if p.about is not None and p.about not in digests:
            raise UsageError(f"{p.what}: about {p.about}, which {ref.name}@{subject.digest} "
                             "does not list")
    targets = [(subject, [p for p in predicates if p.about is None])]
    targets += [(image, [p for p in predicates if p.about == image.digest]) for image in images]
    begun = in_parallel([
        partial(begin_signing, client, ref.with_digest(desc.digest), key, desc, chosen)
        for desc, chosen in targets
    ])
    return Signing(subject, [signing.finish for signing in begun])


def attest_image(
    client: RegistryClient, ref: Reference, key: SigningKey, predicates: Sequence[Predicate]
) -> Descriptor:
    """Attach each of `predicates` as a signed DSSE in-toto attestation of the image `ref`
    names, in one batch of referrers; returns the image's descriptor."""
    subject = _subject(client, ref)
    attestations = [_attestation(ref, subject, key, p) for p in predicates]
    attach_artifacts(client, ref, subject, attestations)
    return subject


def _attestation(ref: Reference, subject: Descriptor, key: SigningKey, predicate: Predicate) -> Artifact:
    """The DSSE envelope of an in-toto statement about `subject` with `predicate`.

    A predicate that is itself an in-toto statement (as `pyimg provenance` writes) must be of
    the type `--type` names and have this image among its subjects; its predicate is used.
    """
    what = predicate.what
    try:
        doc = json_input.loads(predicate.data)
    except ValueError as e:
        raise UsageError(f"{what}: not valid JSON ({e})") from None
    ptype = predicate_type(predicate.kind)
    if isinstance(doc, dict) and doc.get("_type") == STATEMENT_TYPE:
        stated = doc.get("predicateType")
        if stated != ptype:
            raise UsageError(f"{what}: an in-toto statement of type {stated!r}, not {ptype!r}")
        digests = {
            f"sha256:{s.get('digest', {}).get('sha256')}"
            for s in doc.get("subject") or []
            if isinstance(s, dict) and isinstance(s.get("digest"), dict)
        }
        if str(subject.digest) not in digests:
            raise UsageError(
                f"{what}: the statement is about {', '.join(sorted(digests)) or 'no digest'}, "
                f"not {ref.name}@{subject.digest}"
            )
        doc = doc.get("predicate")
    statement = in_toto_statement(_identity(ref), subject.digest, ptype, doc)
    return Artifact(
        DSSE_MEDIA_TYPE, DSSE_MEDIA_TYPE, dsse_envelope(statement, key), ((PREDICATE_ANNOTATION, ptype),)
    )


def _signature_config(layers: Sequence[Descriptor]) -> bytes:
    """cosign's signature image config: its diff_ids are the payload digests, nothing else."""
    return canonical_json({
        "architecture": "",
        "config": {},
        "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [str(x.digest) for x in layers]},
    })


def _open_cosign_signature(
    client: RegistryClient, ref: Reference, digest: Digest, payload: bytes, signature: bytes
) -> Callable[[], None]:
    """Add a layer to the `.sig` tag's manifest. Requests, in rounds sent together: the tag's
    GET and a POST for the payload and for the config (each asking to mount its blob from this
    repository: 201 when it is there), sent now; then, by the function returned, the two PUTs
    with the tag's GET again (the manifest is merged from a read just before its write, so that
    no other signer's update can land in between unseen), the manifest's conditional PUT and
    the GET that checks it (registry/tag_update.py; another signer's layers are kept)."""
    import base64

    tag_ref = ref.with_tag(signature_tag(digest))
    layer = descriptor_for_bytes(SIMPLESIGNING_MEDIA_TYPE, payload).with_annotations(
        {SIGNATURE_ANNOTATION: base64.b64encode(signature).decode()}
    )
    # The config's digest if this is the first signature (the usual case): a session opened for
    # it takes whichever config the tag turns out to need.
    guess = descriptor_for_bytes(OCI_CONFIG, _signature_config((layer,))).digest
    round_one: list[Callable[[], object]] = [
        partial(client.find_manifest, tag_ref),
        partial(client.open_upload, tag_ref, layer.digest),
        partial(client.open_upload, tag_ref, guess),
    ]
    fetched, payload_upload, config_upload = in_parallel(round_one)
    current = cast("FetchedManifest | None", fetched)
    return partial(_finish_cosign_signature, client, ref, tag_ref, layer, current, guess,
                   payload, cast("str | None", payload_upload), cast("str | None", config_upload))


def _finish_cosign_signature(
    client: RegistryClient, ref: Reference, tag_ref: Reference, layer: Descriptor,
    current: FetchedManifest | None, guess: Digest, payload: bytes,
    payload_upload: str | None, config_upload: str | None,
) -> None:
    uploaded: set[Digest] = set()

    def layers_of(tag: FetchedManifest | None) -> tuple[Descriptor, ...]:
        if tag is None:
            return ()
        return _manifest(tag.data, tag.media_type, f"signatures {tag_ref}").layers

    layers = layers_of(current)
    if layer in layers:
        return
    config = _signature_config((*layers, layer))
    config_desc = descriptor_for_bytes(OCI_CONFIG, config)
    # A session that found the guessed config present cannot take another one.
    session = config_upload if config_desc.digest == guess or config_upload else ""
    round_two: list[Callable[[], object]] = [
        partial(client.finish_upload, tag_ref, payload_upload, layer.digest, payload),
        partial(client.finish_upload, tag_ref, session, config_desc.digest, config),
        partial(read_tag, client, tag_ref),
    ]
    results: list[object] = in_parallel(round_two)
    uploaded.add(config_desc.digest)
    current, read_at = cast("tuple[FetchedManifest | None, float]", results[-1])

    def merge(tag: FetchedManifest | None) -> tuple[bytes, str] | None:
        present = layers_of(tag)
        if layer in present:
            return None
        config = _signature_config((*present, layer))
        config_desc = descriptor_for_bytes(OCI_CONFIG, config)
        if config_desc.digest not in uploaded:  # another signer's layers came in between
            client.push_blob(tag_ref, config_desc.digest, config_desc.size,
                             lambda: io.BytesIO(config), check_first=False)
            uploaded.add(config_desc.digest)
        return Manifest(config=config_desc, layers=(*present, layer)).to_bytes(), OCI_MANIFEST

    try:
        update_tag(client, tag_ref, current, merge, read_at=read_at)
    except RegistryError as e:
        raise RegistryError(
            f"{ref.registry}/{ref.repository} refused the signature tag {tag_ref.identifier} "
            f"(the image itself is unchanged): {e.message}"
        ) from None


def _manifest(data: bytes, media_type: str, where: str) -> Manifest:
    if media_type != OCI_MANIFEST:
        raise VerificationError(f"{where}: expected an OCI manifest, got {media_type!r}")
    try:
        return parse_manifest(data, where)
    except Exception as e:  # noqa: BLE001 - any unreadable manifest is the same failure here
        raise VerificationError(f"{where}: not a readable manifest ({e})") from None


@dataclass(frozen=True)
class Verified:
    """What `verify_image` found valid: the image, its signatures, its attestations' types; of
    an index, the same for each image it lists (`images`: (platform, what was found))."""

    subject: Descriptor
    signatures: int
    bundles: int
    predicate_types: tuple[str, ...]
    problems: tuple[str, ...] = field(default=())
    images: tuple[tuple[str, Verified], ...] = field(default=())


# Of an index, a requirement met by each image it lists rather than by the index itself: an
# SBOM describes one image (docs/supply-chain.md).
PER_IMAGE_REQUIREMENTS = frozenset({"sbom"})


def verify_image(
    client: RegistryClient, ref: Reference, key: VerifyingKey, require: Iterable[str] = ()
) -> Verified:
    """Check the image's cosign signatures and its attestations under `key`.

    Passes when at least one signature over this image's digest verifies, every attestation and
    bundle signed by `key` is about this digest, and each of `require` ("sbom", "provenance")
    has a verified attestation. Otherwise one VerificationError says what failed first.
    Referrers signed by other keys are skipped (another party may attest the same image).
    An index passes when it does and so does each image it lists (pyimg signs an index as
    `cosign sign --recursive` does); "sbom" is then required of each image, not of the index.
    """
    require = list(require)
    for name in require:
        if name not in REQUIREMENTS:
            raise UsageError(f"--require {name!r}: give {' or '.join(sorted(REQUIREMENTS))}")
    subject, images = _subject_and_images(client, ref)
    if not images:
        return _verify_one(client, ref, subject, key, require, f"{ref.name}@{subject.digest}")
    own = [name for name in require if name not in PER_IMAGE_REQUIREMENTS]
    top = _verify_one(client, ref, subject, key, own, f"{ref.name}@{subject.digest}")
    found = []
    for image in images:
        platform = str(image.platform) if image.platform is not None else "unknown platform"
        where = f"{ref.name}@{image.digest} (the {platform} image of the index {subject.digest})"
        found.append((platform, _verify_one(client, ref.with_digest(image.digest), image, key,
                                            require, where)))
    return Verified(top.subject, top.signatures, top.bundles, top.predicate_types,
                    top.problems, tuple(found))


def _verify_one(client: RegistryClient, ref: Reference, subject: Descriptor, key: VerifyingKey,
                require: Sequence[str], where: str) -> Verified:
    """`verify_image` of one image or index, not of what it lists; `where` names it in errors."""
    signatures = _verify_signatures(client, ref, subject.digest, key, where)
    bundles = 0
    types: list[str] = []
    for desc in list_referrers(client, ref, subject.digest):
        if desc.artifact_type not in (DSSE_MEDIA_TYPE, BUNDLE_MEDIA_TYPE):
            continue
        what = f"{desc.artifact_type} referrer {desc.digest} of {where}"
        fetched = client.get_manifest(ref.with_digest(desc.digest))
        manifest = _manifest(fetched.data, fetched.media_type, what)
        if manifest.subject is None or manifest.subject.digest != subject.digest:
            raise VerificationError(f"{what}: its manifest's subject is not this image")
        for layer in manifest.layers:
            data = client.read_small_blob(ref, layer.digest)
            if desc.artifact_type == BUNDLE_MEDIA_TYPE:
                data = bundle_envelope(data, what)
            try:
                envelope = open_envelope(data, key, what)
            except VerificationError:
                if _keyid(data) not in ("", key.hint):
                    continue  # signed by another key, and says so: not ours to judge
                raise
            if str(subject.digest) not in envelope.subject_digests:
                raise VerificationError(
                    f"{what}: the statement is about {', '.join(envelope.subject_digests)}, "
                    f"not {subject.digest}"
                )
            if desc.artifact_type == BUNDLE_MEDIA_TYPE:
                bundles += 1
            elif envelope.predicate_type:
                types.append(envelope.predicate_type)
    for name in require:
        if not any(t.startswith(prefix) for t in types for prefix in REQUIREMENTS[name]):
            found = ", ".join(sorted(set(types))) or "none"
            raise VerificationError(
                f"{where}: no {name} attestation signed by the key (attestations found: {found})"
            )
    return Verified(subject, signatures, bundles, tuple(sorted(set(types))))


def _verify_signatures(
    client: RegistryClient, ref: Reference, digest: Digest, key: VerifyingKey, where: str
) -> int:
    import base64

    tag_ref = ref.with_tag(signature_tag(digest))
    fetched = client.find_manifest(tag_ref)
    if fetched is None:
        raise VerificationError(f"{where}: not signed (no {tag_ref.identifier} in {ref.repository})")
    manifest = _manifest(fetched.data, fetched.media_type, f"signatures {tag_ref}")
    valid = 0
    other_digests: list[str] = []
    other_names: list[str] = []
    for layer in manifest.layers:
        if layer.media_type != SIMPLESIGNING_MEDIA_TYPE:
            continue
        encoded = dict(layer.annotations).get(SIGNATURE_ANNOTATION, "")
        try:
            signature = base64.b64decode(encoded, validate=True)
            payload = client.read_small_blob(tag_ref, layer.digest)
        except (ValueError, IntegrityError):
            continue
        if not key.verify(signature, payload):
            continue
        claim = parse_simple_signing(payload, f"signature payload {layer.digest}")
        if claim.digest != digest:
            other_digests.append(str(claim.digest))
            continue
        if claim.docker_reference != _identity(ref):
            other_names.append(claim.docker_reference)
            continue
        valid += 1
    if valid:
        return valid
    if other_names:
        raise VerificationError(
            f"{where}: the signature verifies but names another repository ({other_names[0]})"
        )
    if other_digests:
        raise VerificationError(
            f"{where}: the signature verifies but is over another digest ({other_digests[0]})"
        )
    raise VerificationError(f"{where}: no signature in {tag_ref.identifier} verifies with the key")


def _keyid(envelope: bytes) -> str:
    try:
        return str(json_input.loads(envelope)["signatures"][0].get("keyid", ""))
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return ""
