"""OCI descriptors, platforms, image manifests and indexes as frozen values with canonical JSON."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyimg.core import json_input
from pyimg.core.digest import Digest, canonical_json, digest_bytes
from pyimg.errors import UserInputError
from pyimg.oci import media_types as mt

__all__ = [
    "Descriptor",
    "Index",
    "Manifest",
    "Platform",
    "descriptor_for_bytes",
    "load_json",
    "parse_index",
    "parse_manifest",
    "sniff_media_type",
]


def _pairs(mapping: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((mapping or {}).items()))


@dataclass(frozen=True)
class Platform:
    """The `platform` of an index entry (also derived from an image config)."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Platform:
        return cls(
            os=str(obj.get("os", "")),
            architecture=str(obj.get("architecture", "")),
            variant=obj.get("variant") or None,
            os_version=obj.get("os.version") or None,
            os_features=tuple(obj.get("os.features") or ()),
        )

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor: what a blob is, its digest and size (plus optional extras)."""

    media_type: str
    digest: Digest
    size: int
    annotations: tuple[tuple[str, str], ...] = ()
    platform: Platform | None = None
    urls: tuple[str, ...] = ()
    artifact_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform is not None:
            out["platform"] = self.platform.to_json()
        if self.urls:
            out["urls"] = list(self.urls)
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    @classmethod
    def from_json(cls, obj: object, where: str) -> Descriptor:
        """Parse a descriptor; `where` names it in errors (e.g. 'layers[2] of sha256:...')."""
        if not isinstance(obj, Mapping):
            raise UserInputError(f"{where}: a descriptor must be a JSON object")
        try:
            digest = Digest.parse(str(obj["digest"]))
            size = obj["size"]
            media_type = obj["mediaType"]
        except KeyError as e:
            raise UserInputError(f"{where}: descriptor lacks {e.args[0]!r}") from None
        except ValueError as e:
            raise UserInputError(f"{where}: {e}") from None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise UserInputError(f"{where}: bad size {size!r}")
        if not isinstance(media_type, str):
            raise UserInputError(f"{where}: bad mediaType {media_type!r}")
        platform = obj.get("platform")
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            annotations=_pairs(obj.get("annotations")),
            platform=Platform.from_json(platform) if isinstance(platform, Mapping) else None,
            urls=tuple(obj.get("urls") or ()),
            artifact_type=obj.get("artifactType") or None,
        )

    def with_annotations(self, annotations: Mapping[str, str]) -> Descriptor:
        return Descriptor(
            self.media_type,
            self.digest,
            self.size,
            _pairs(annotations),
            self.platform,
            self.urls,
            self.artifact_type,
        )

    def with_media_type(self, media_type: str) -> Descriptor:
        return Descriptor(
            media_type,
            self.digest,
            self.size,
            self.annotations,
            self.platform,
            self.urls,
            self.artifact_type,
        )

    def with_platform(self, platform: Platform | None) -> Descriptor:
        return Descriptor(
            self.media_type,
            self.digest,
            self.size,
            self.annotations,
            platform,
            self.urls,
            self.artifact_type,
        )


def descriptor_for_bytes(media_type: str, data: bytes) -> Descriptor:
    return Descriptor(media_type, digest_bytes(data), len(data))


@dataclass(frozen=True)
class Manifest:
    """An image manifest. `to_bytes()` is the canonical JSON that pyimg writes and hashes."""

    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: tuple[tuple[str, str], ...] = ()
    media_type: str = mt.OCI_MANIFEST
    subject: Descriptor | None = field(default=None)
    # OCI 1.1 artifacts (signatures, attestations) say what they are here.
    artifact_type: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_json(),
            "layers": [layer.to_json() for layer in self.layers],
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.subject is not None:
            out["subject"] = self.subject.to_json()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    def descriptor(self) -> Descriptor:
        return descriptor_for_bytes(self.media_type, self.to_bytes())


@dataclass(frozen=True)
class Index:
    """An image index. `to_bytes()` is the canonical JSON that pyimg writes and hashes."""

    manifests: tuple[Descriptor, ...]
    annotations: tuple[tuple[str, str], ...] = ()
    media_type: str = mt.OCI_INDEX

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "manifests": [m.to_json() for m in self.manifests],
        }
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_json())

    def descriptor(self) -> Descriptor:
        return descriptor_for_bytes(self.media_type, self.to_bytes())


def load_json(data: bytes, where: str) -> dict[str, Any]:
    """Parse a JSON object from a blob or file we did not write; errors name `where`."""
    try:
        obj = json_input.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise UserInputError(f"{where}: not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise UserInputError(f"{where}: expected a JSON object")
    return obj


def sniff_media_type(obj: Mapping[str, Any]) -> str:
    """The media type of a manifest or index JSON (the field, else guessed from its shape)."""
    media_type = obj.get("mediaType")
    if isinstance(media_type, str) and media_type:
        return media_type
    if "manifests" in obj:
        return mt.OCI_INDEX
    if "layers" in obj or "config" in obj:
        return mt.OCI_MANIFEST
    return ""


def parse_manifest(data: bytes, where: str) -> Manifest:
    """Parse an OCI or Docker schema-2 image manifest (kept in its own media type)."""
    obj = load_json(data, where)
    media_type = sniff_media_type(obj)
    if media_type not in mt.MANIFESTS:
        raise UserInputError(f"{where}: not an image manifest (mediaType {media_type!r})")
    if obj.get("schemaVersion") != 2:
        raise UserInputError(f"{where}: schemaVersion must be 2")
    layers = obj.get("layers")
    if not isinstance(layers, list):
        raise UserInputError(f"{where}: 'layers' must be a list")
    subject = obj.get("subject")
    return Manifest(
        config=Descriptor.from_json(obj.get("config"), f"config of {where}"),
        layers=tuple(
            Descriptor.from_json(x, f"layers[{i}] of {where}") for i, x in enumerate(layers)
        ),
        annotations=_pairs(obj.get("annotations")),
        media_type=media_type,
        subject=Descriptor.from_json(subject, f"subject of {where}") if subject else None,
        artifact_type=obj.get("artifactType") or None,
    )


def parse_index(data: bytes, where: str) -> Index:
    """Parse an OCI image index or a Docker manifest list (kept in its own media type)."""
    obj = load_json(data, where)
    media_type = sniff_media_type(obj)
    if media_type not in mt.INDEXES:
        raise UserInputError(f"{where}: not an image index (mediaType {media_type!r})")
    manifests = obj.get("manifests")
    if not isinstance(manifests, list):
        raise UserInputError(f"{where}: 'manifests' must be a list")
    return Index(
        manifests=tuple(
            Descriptor.from_json(x, f"manifests[{i}] of {where}") for i, x in enumerate(manifests)
        ),
        annotations=_pairs(obj.get("annotations")),
        media_type=media_type,
    )
