"""The SBOM writer (SPDX 2.3, CycloneDX 1.5) of `pyimg sbom` and the `oci_sbom` builtin.

The documents are written here, not by spdx-tools or cyclonedx-python-lib: their bytes must be
reproducible (sorted, canonical JSON, no wall clock, no random serial number), they are written
for 10,000-file images in a fraction of a build, and either library (spdx-tools with rdflib and
beartype) costs more to import than a document costs to write. Both validate our output in the
tests (docs/supply-chain.md).

What the writer is given, `facts` (JSON): `pyimg sbom` makes them from the action graph and the
pins (attest/graph_facts.py); the `oci_sbom` rule from what its image's providers know.

    {"image": "//app:image",                      # the image's name (its label)
     "layers": [{"target": "//app:files" | null,  # per manifest layer, lowest first
                 "packages": ["<id>", ...]}, ...],
     "packages": [{"id": "<id>", "name": ..., "version": ..., "purl": ...,
                   "download_url": ..., "sha256": ..., "licenses": [...],
                   "files": [...]}]}               # files: in-layer paths the package ships

Everything else (digests, platform, files with sha256, mode and owner) is read from the layout.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from pyimg.actions._common import input_path, params_dict
from pyimg.actions.builtins import builtin
from pyimg.actions.deb_layer import through_links
from pyimg.core.builtin import BuiltinCall
from pyimg.core.digest import Digest
from pyimg.errors import UserInputError
from pyimg.oci.compress import open_decompressed
from pyimg.oci.config import config_platform, layer_diff_ids
from pyimg.oci.deb import DebCache, read_deb
from pyimg.oci.layout import Layout
from pyimg.oci.media_types import INDEXES
from pyimg.oci.model import load_json

__all__ = [
    "FORMATS",
    "PURLS",
    "LayerFile",
    "deb_package",
    "file_package",
    "layer_files",
    "oci_package",
    "oci_sbom",
    "rule_facts",
    "purl",
    "sbom_document",
]

FORMATS = ("spdx-json", "cyclonedx-json")
_CHUNK = 1 << 20
_SPDX_ID_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")
_DEP5_LICENSE = re.compile(r"^License:[ \t]*(\S[^\n]*)$", re.MULTILINE)
# Debian's DEP-5 short names that differ from their SPDX identifiers; others that SPDX does not
# know become LicenseRef-debian-NAME, with the Debian name as their text.
_DEBIAN_TO_SPDX = {
    "GPL-2": "GPL-2.0-only", "GPL-2+": "GPL-2.0-or-later", "GPL-3": "GPL-3.0-only",
    "GPL-3+": "GPL-3.0-or-later", "LGPL-2": "LGPL-2.0-only", "LGPL-2+": "LGPL-2.0-or-later",
    "LGPL-2.1": "LGPL-2.1-only", "LGPL-2.1+": "LGPL-2.1-or-later", "LGPL-3": "LGPL-3.0-only",
    "LGPL-3+": "LGPL-3.0-or-later", "Expat": "MIT", "MIT": "MIT", "BSD-2-clause": "BSD-2-Clause",
    "BSD-3-clause": "BSD-3-Clause", "BSD-4-clause": "BSD-4-Clause", "Apache-2.0": "Apache-2.0",
    "MPL-2.0": "MPL-2.0", "ISC": "ISC", "Zlib": "Zlib", "zlib": "Zlib", "public-domain": None,
    "Artistic": "Artistic-1.0-Perl", "CC0-1.0": "CC0-1.0", "GPL-2.0+": "GPL-2.0-or-later",
}


# -- package URLs: one function per input kind (pypi and npm are hooks for their lock files)


def _purl_oci(p: Mapping[str, Any]) -> str:
    # purl-spec: the name is the repository's last segment, the version the (escaped) digest.
    repository = str(p["repository"])
    name = repository.rsplit("/", 1)[-1].lower()
    return f"pkg:oci/{name}@{quote(str(p['digest']), safe='')}?repository_url={quote(repository, safe='/:')}"


def _purl_deb(p: Mapping[str, Any]) -> str:
    return f"pkg:deb/debian/{quote(p['name'], safe='+')}@{quote(p['version'], safe='+~.')}?arch={p['arch']}"


def _purl_generic(p: Mapping[str, Any]) -> str:
    out = f"pkg:generic/{quote(p['name'], safe='')}?checksum=sha256:{p['sha256']}"
    if p.get("download_url"):
        out += f"&download_url={quote(p['download_url'], safe='')}"
    return out


def _purl_pypi(p: Mapping[str, Any]) -> str:
    return f"pkg:pypi/{quote(str(p['name']).lower().replace('_', '-'), safe='')}@{quote(p['version'], safe='.+!')}"


def _purl_npm(p: Mapping[str, Any]) -> str:
    name = str(p["name"])
    return f"pkg:npm/{quote(name, safe='/').replace('@', '%40', 1)}@{quote(p['version'], safe='.+-')}"


# A new external-input kind adds its function here (docs/supply-chain.md).
PURLS = {
    "oci": _purl_oci,
    "deb": _purl_deb,
    "generic": _purl_generic,
    "pypi": _purl_pypi,
    "npm": _purl_npm,
}


def purl(kind: str, fields: Mapping[str, Any]) -> str:
    """The package URL of an external input of `kind` (a key of PURLS) described by `fields`."""
    return PURLS[kind](fields)


def oci_package(image: str, digest: str) -> dict[str, Any]:
    """A pulled base image (`oci_pull`'s `image` as declared, and its manifest digest)."""
    p = {"repository": image, "digest": digest, "name": image, "version": digest,
         "sha256": digest.removeprefix("sha256:"), "purpose": "CONTAINER"}
    return {**p, "id": f"oci:{image}@{digest}", "purl": purl("oci", p)}


def file_package(exec_path: str, sha256: str, download_url: str = "") -> dict[str, Any]:
    """A file of an external repository that a layer was made from (`external/<repo>/...`)."""
    p = {"name": exec_path.rsplit("/", 1)[-1], "sha256": sha256, "download_url": download_url,
         "purpose": "FILE"}
    return {**p, "id": f"file:{exec_path}", "purl": purl("generic", p)}


# -- Debian packages


def deb_package(path: Path, scratch: Path, what: str, cache: DebCache | None = None,
                digest: Digest | None = None) -> dict[str, Any]:
    """A `.deb` as an SBOM package: name, version, architecture, the DEP-5 licences of its
    copyright file and the paths it ships (as deb_layer writes them into a layer). With a
    `cache` and the package's `digest`, read from its decoded entry (made when there is none)."""
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        if cache is not None and digest is not None:
            deb = cache.read(path, digest, what)
        else:
            deb = read_deb(path, Path(tmp), what)
        fields = _control_fields(deb.control.decode("utf-8", "replace"))
        copyright_path = f"usr/share/doc/{deb.name}/copyright"
        licenses: list[str] = []
        for entry in deb.entries:
            if entry.path == copyright_path and entry.kind == "file":
                licenses = _dep5_licenses(_entry_bytes(entry))
        files = sorted(e.path for e in deb.entries if e.kind in ("file", "hardlink"))
    version, arch = fields.get("Version", ""), fields.get("Architecture", "")
    package = {"name": deb.name, "version": version, "arch": arch, "licenses": licenses,
               "files": files}
    package["purl"] = purl("deb", package)
    return package


def _entry_bytes(entry: Any) -> bytes:
    if entry.data is not None:
        return bytes(entry.data)
    with open(entry.src, "rb") as f:
        f.seek(entry.offset)
        return f.read(entry.size)


def _control_fields(control: str) -> dict[str, str]:
    out = {}
    for line in control.splitlines():
        if line[:1] not in (" ", "\t") and ":" in line:
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
    return out


def _dep5_licenses(text: bytes) -> list[str]:
    """The short names of a machine-readable (DEP-5) copyright file's `License:` fields, as
    written, each expression split on `or`/`and` (a free-form copyright file has none)."""
    names: set[str] = set()
    for m in _DEP5_LICENSE.finditer(text.decode("utf-8", "replace")):
        for part in re.split(r"\s+(?:or|and)\s+|,\s*|\s+with\s+.*$", m.group(1).strip(), flags=re.I):
            if part.strip():
                names.add(part.strip())
    return sorted(names)


# -- layers


@dataclass(frozen=True)
class LayerFile:
    """A regular file (or hard link) of a layer, as the SBOM lists it."""

    path: str
    sha256: str
    sha1: str
    mode: int
    uid: int
    gid: int


def _layer_path(name: str) -> str:
    """A tar member's or package's path as the layer holds it: no `./` and no leading `/`
    (a file `.profile` keeps its dot)."""
    return "" if name in (".", "./") else name.removeprefix("./").lstrip("/")


def layer_files(blob: Path, what: str,
                links: dict[str, str] | None = None) -> Iterator[LayerFile]:
    """The regular files and hard links of the layer blob (any compression), in tar order;
    whiteouts are not files of the image and are left out. `links`, when given, gets every
    symlink of the layer (path -> target)."""
    seen: dict[str, tuple[str, str]] = {}
    with open(blob, "rb") as raw:
        reader, _ = open_decompressed(raw)
        try:
            # typeshed asks for a seekable, writable file object in every mode; 'r|' only reads.
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                for m in tar:
                    path = _layer_path(m.name)
                    base = path.rsplit("/", 1)[-1]
                    if base.startswith(".wh."):
                        continue
                    if m.isreg():
                        sha256, sha1 = hashlib.sha256(), hashlib.sha1()
                        f = tar.extractfile(m)
                        assert f is not None
                        while chunk := f.read(_CHUNK):
                            sha256.update(chunk)
                            sha1.update(chunk)
                        sums = (sha256.hexdigest(), sha1.hexdigest())
                    elif m.islnk():
                        target = _layer_path(m.linkname)
                        if target not in seen:
                            raise UserInputError(f"{what}: hard link {path!r} to {target!r}, "
                                                 "which comes later or not at all")
                        sums = seen[target]
                    else:
                        if m.issym() and links is not None:
                            links[path] = m.linkname
                        continue
                    seen[path] = sums
                    yield LayerFile(path, sums[0], sums[1], m.mode & 0o7777, m.uid, m.gid)
        except (tarfile.TarError, EOFError, OSError) as e:
            raise UserInputError(f"{what}: not a readable layer ({e})") from None
        finally:
            reader.close()


# -- the document


def _spdx_id(*parts: object) -> str:
    return "SPDXRef-" + "-".join(_SPDX_ID_UNSAFE.sub(".", str(p)) for p in parts)


def _created(config: Mapping[str, Any], source_date_epoch: int | None) -> str:
    """The document's time: the image config's `created`, else SOURCE_DATE_EPOCH, else the epoch."""
    text = config.get("created")
    if isinstance(text, str) and text:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is not None:
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
            return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return datetime.fromtimestamp(source_date_epoch or 0, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# SPDX 2.3's download-location pattern (section 7.7) knows host names, not ports or addresses:
# another URL is kept in the purl's download_url only.
_SPDX_URL = re.compile(r"^(https?|ftp)://[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(/\S*)?$")


def _download_location(url: str) -> str:
    return url if _SPDX_URL.match(url) else "NOASSERTION"


def _verification_code(sha1s: list[str]) -> dict[str, str]:
    """SPDX 2.3 section 7.9: sha1 over the sorted sha1s of the package's files."""
    return {"packageVerificationCodeValue": hashlib.sha1("".join(sorted(sha1s)).encode()).hexdigest()}


def _license_expression(names: list[str], extracted: dict[str, str]) -> str:
    ids = []
    for name in names:
        spdx = _DEBIAN_TO_SPDX.get(name, "")
        if spdx is None:
            continue
        if not spdx:
            spdx = "LicenseRef-debian-" + _SPDX_ID_UNSAFE.sub(".", name)
            extracted[spdx] = name
        ids.append(spdx)
    ids = sorted(set(ids))
    if not ids:
        return "NOASSERTION"
    return ids[0] if len(ids) == 1 else "(" + " AND ".join(ids) + ")"


@dataclass
class _Layer:
    index: int
    diff_id: Any  # Digest
    blob: Any  # Descriptor
    target: str | None
    files: list[LayerFile]
    packages: list[str]  # ids of facts["packages"]


@dataclass
class _Image:
    """What both formats say, read once: the image, its layers with their files, the packages
    and, per package, the (layer, file number) of the files it ships."""

    name: str
    digest: Any  # Digest
    platform: Any  # Platform
    created: str
    layers: list[_Layer]
    packages: dict[str, Mapping[str, Any]]
    package_files: dict[str, list[tuple[int, int]]]


def _read_image(layout: Layout, facts: Mapping[str, Any],
                source_date_epoch: int | None) -> _Image:
    what = layout.what
    desc = layout.resolve(None)
    if desc.media_type in INDEXES:
        raise UserInputError(f"{what}: an SBOM describes one image; this is an index: name one "
                             "image of it")
    manifest = layout.manifest(desc)
    config = load_json(layout.read_blob(manifest.config), f"{what}: config")
    diff_ids = layer_diff_ids(config, manifest, what)
    packages = {str(p["id"]): p for p in facts.get("packages") or []}
    package_files: dict[str, list[tuple[int, int]]] = {pid: [] for pid in packages}
    fact_layers = list(facts.get("layers") or [])
    layers = []
    for n, (blob, diff_id) in enumerate(zip(manifest.layers, diff_ids, strict=True)):
        layer_facts = fact_layers[n] if n < len(fact_layers) else {}
        in_layer = sorted({p for p in layer_facts.get("packages") or [] if p in packages})
        links: dict[str, str] = {}
        files = list(layer_files(layout.blob_file(blob.digest), f"{what}: layer {blob.digest}",
                                 links))
        # A package's path as its .deb names it; deb_layer wrote it where the layer's directory
        # links lead (merged /usr: `bin/sh` is at `usr/bin/sh`), so it is looked up there too.
        owners: dict[str, list[str]] = {}
        for pid in in_layer:
            for path in packages[pid].get("files") or []:
                at = through_links(_layer_path(str(path)), links, what) if links else \
                    _layer_path(str(path))
                owners.setdefault(at, []).append(pid)
        for i, f in enumerate(files):
            for pid in owners.get(f.path, ()):
                package_files[pid].append((n, i))
        layers.append(_Layer(n, diff_id, blob, layer_facts.get("target"), files, in_layer))
    return _Image(str(facts.get("image") or "image"), desc.digest, config_platform(config),
                  _created(config, source_date_epoch), layers, packages, package_files)


def _image_purl(image: _Image) -> str:
    name = image.name.rsplit(":", 1)[-1].rsplit("/", 1)[-1].lower()
    platform = image.platform
    return (f"pkg:oci/{quote(name, safe='')}@{quote(str(image.digest), safe='')}"
            f"?arch={platform.architecture}&os={platform.os}"
            + (f"&variant={platform.variant}" if platform.variant else ""))


def _spdx(image: _Image, version: str) -> dict[str, Any]:
    image_id = "SPDXRef-Image"
    package_ids = {pid: _spdx_id("Package", n) for n, pid in enumerate(sorted(image.packages))}
    packages: list[dict[str, Any]] = [{
        "SPDXID": image_id, "name": image.name, "versionInfo": str(image.digest),
        "downloadLocation": "NOASSERTION", "filesAnalyzed": False,
        "primaryPackagePurpose": "CONTAINER",
        "checksums": [{"algorithm": "SHA256", "checksumValue": image.digest.hex}],
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                          "referenceLocator": _image_purl(image)}],
        "description": f"OCI image {image.digest}, platform {image.platform}",
        "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
    }]
    files: list[dict[str, Any]] = []
    relationships: list[dict[str, str]] = [
        {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
         "relatedSpdxElement": image_id},
    ]
    extracted: dict[str, str] = {}
    for layer in image.layers:
        n = layer.index
        layer_id = _spdx_id("Layer", n)
        for i, f in enumerate(layer.files):
            file_id = _spdx_id("File", n, i)
            files.append({
                "SPDXID": file_id, "fileName": "./" + f.path,
                "checksums": [{"algorithm": "SHA1", "checksumValue": f.sha1},
                              {"algorithm": "SHA256", "checksumValue": f.sha256}],
                "comment": f"layer {n}, mode {f.mode:04o}, owner {f.uid}:{f.gid}",
                "licenseConcluded": "NOASSERTION", "copyrightText": "NOASSERTION",
            })
            relationships.append({"spdxElementId": layer_id, "relationshipType": "CONTAINS",
                                  "relatedSpdxElement": file_id})
        sha1s = [f.sha1 for f in layer.files]
        target = layer.target
        packages.append({
            "SPDXID": layer_id, "name": f"layer {n}: {target or 'unknown target'}",
            "versionInfo": str(layer.diff_id), "downloadLocation": "NOASSERTION",
            "filesAnalyzed": bool(sha1s),
            **({"packageVerificationCode": _verification_code(sha1s)} if sha1s else {}),
            "primaryPackagePurpose": "ARCHIVE",
            "checksums": [{"algorithm": "SHA256", "checksumValue": layer.diff_id.hex}],
            "sourceInfo": f"made by {target}" if target else "made outside this workspace",
            "comment": f"diff_id {layer.diff_id}, blob {layer.blob.digest} "
                       f"({layer.blob.media_type})",
            "licenseConcluded": "NOASSERTION", "licenseDeclared": "NOASSERTION",
            "copyrightText": "NOASSERTION",
        })
        relationships.append({"spdxElementId": image_id, "relationshipType": "CONTAINS",
                              "relatedSpdxElement": layer_id})
        for pid in layer.packages:
            relationships.append({"spdxElementId": layer_id, "relationshipType": "CONTAINS",
                                  "relatedSpdxElement": package_ids[pid]})
    for pid in sorted(image.packages):
        p = image.packages[pid]
        spdx_id = package_ids[pid]
        contained = image.package_files[pid]
        entry: dict[str, Any] = {
            "SPDXID": spdx_id, "name": str(p.get("name") or pid),
            "downloadLocation": _download_location(str(p.get("download_url") or "")),
            "filesAnalyzed": bool(contained),
            "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                              "referenceLocator": str(p["purl"])}],
            "primaryPackagePurpose": str(p.get("purpose") or "LIBRARY"),
            "licenseConcluded": "NOASSERTION",
            "licenseDeclared": _license_expression(list(p.get("licenses") or []), extracted),
            "copyrightText": "NOASSERTION",
        }
        if p.get("version"):
            entry["versionInfo"] = str(p["version"])
        if p.get("sha256"):
            entry["checksums"] = [{"algorithm": "SHA256", "checksumValue": str(p["sha256"])}]
        if contained:
            entry["packageVerificationCode"] = _verification_code(
                [image.layers[n].files[i].sha1 for n, i in contained])
            for n, i in contained:
                relationships.append({"spdxElementId": spdx_id, "relationshipType": "CONTAINS",
                                      "relatedSpdxElement": _spdx_id("File", n, i)})
        packages.append(entry)
    doc: dict[str, Any] = {
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": f"{image.name}@{image.digest}",
        # Derived from the image digest: the same image gets the same document, name and all.
        "documentNamespace": f"https://pyimg.dev/spdx/{image.digest.algorithm}/{image.digest.hex}",
        "creationInfo": {"created": image.created, "creators": [f"Tool: pyimg-{version}"]},
        "documentDescribes": [image_id],
        "packages": packages,
        "files": files,
        "relationships": relationships,
    }
    if extracted:
        doc["hasExtractedLicensingInfos"] = [
            {"licenseId": lid, "name": text,
             "extractedText": f"The Debian copyright file names this licence '{text}'."}
            for lid, text in sorted(extracted.items())
        ]
    return doc


def _cyclonedx(image: _Image, version: str) -> dict[str, Any]:
    """CycloneDX 1.5: the image is the metadata component; each layer a `file` component whose
    nested components are its files; packages are components the layers depend on."""
    image_ref = f"image:{image.digest}"
    components: list[dict[str, Any]] = []
    dependencies: list[dict[str, Any]] = []
    package_refs = {pid: f"package:{pid}" for pid in image.packages}
    for layer in image.layers:
        n = layer.index
        ref = f"layer:{n}"
        files = [{
            "type": "file", "bom-ref": f"file:{n}:{i}", "name": "./" + f.path,
            "hashes": [{"alg": "SHA-1", "content": f.sha1}, {"alg": "SHA-256", "content": f.sha256}],
            "properties": [{"name": "pyimg:mode", "value": f"{f.mode:04o}"},
                           {"name": "pyimg:owner", "value": f"{f.uid}:{f.gid}"}],
        } for i, f in enumerate(layer.files)]
        components.append({
            "type": "file", "bom-ref": ref, "name": f"layer {n}",
            "version": str(layer.diff_id),
            "hashes": [{"alg": "SHA-256", "content": layer.diff_id.hex}],
            "properties": [{"name": "pyimg:made-by", "value": layer.target or ""},
                           {"name": "pyimg:blob", "value": str(layer.blob.digest)},
                           {"name": "pyimg:media-type", "value": layer.blob.media_type}],
            "components": files,
        })
        dependencies.append({"ref": ref, "dependsOn": [package_refs[p] for p in layer.packages]})
    for pid in sorted(image.packages):
        p = image.packages[pid]
        entry: dict[str, Any] = {
            "type": "container" if p.get("purpose") == "CONTAINER" else "library",
            "bom-ref": package_refs[pid], "name": str(p.get("name") or pid),
            "purl": str(p["purl"]),
        }
        if p.get("version"):
            entry["version"] = str(p["version"])
        if p.get("sha256"):
            entry["hashes"] = [{"alg": "SHA-256", "content": str(p["sha256"])}]
        names = list(p.get("licenses") or [])
        if names:
            entry["licenses"] = [{"license": {"name": name}} for name in names]
        if p.get("download_url"):
            entry["externalReferences"] = [{"type": "distribution", "url": str(p["download_url"])}]
        components.append(entry)
        dependencies.append({"ref": package_refs[pid], "dependsOn": []})
    dependencies.append({"ref": image_ref,
                         "dependsOn": [f"layer:{layer.index}" for layer in image.layers]})
    # A name-based UUID of the image digest: the same image, the same serial number.
    import uuid

    serial = uuid.uuid5(uuid.NAMESPACE_URL, f"https://pyimg.dev/cyclonedx/{image.digest}")
    return {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": serial.urn,
        "version": 1,
        "metadata": {
            "timestamp": image.created,
            "tools": {"components": [{"type": "application", "name": "pyimg",
                                      "version": version}]},
            "component": {
                "type": "container", "bom-ref": image_ref, "name": image.name,
                "version": str(image.digest), "purl": _image_purl(image),
                "hashes": [{"alg": "SHA-256", "content": image.digest.hex}],
                "properties": [{"name": "pyimg:platform", "value": str(image.platform)}],
            },
        },
        "components": components,
        "dependencies": sorted(dependencies, key=lambda d: str(d["ref"])),
    }


def sbom_document(layout: Layout, facts: Mapping[str, Any], version: str,
                  source_date_epoch: int | None = None, fmt: str = "spdx-json") -> bytes:
    """The SBOM (`fmt`: one of FORMATS) of the one image in `layout`, described by `facts`
    (module docstring). Its bytes depend only on the image, the facts and pyimg's version."""
    image = _read_image(layout, facts, source_date_epoch)
    doc = _cyclonedx(image, version) if fmt == "cyclonedx-json" else _spdx(image, version)
    # Sorted keys and no spaces (docs/architecture.md: JSON we own is canonical), one newline.
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def rule_facts(layers: list[Any], layer_count: int,
               package: Callable[[str], dict[str, Any] | None]) -> dict[str, Any]:
    """The facts of an image from what its providers say of its `layers` (rules/providers.bzl,
    OciImageInfo.layers): a leading `base` entry stands for all the base image's layers.
    `package(path)` is the package of a file a layer was made from (None: not one)."""
    own = [entry for entry in layers if "base" not in entry]
    out: list[dict[str, Any]] = []
    packages: dict[str, dict[str, Any]] = {}
    for entry in layers:
        ids = []
        if entry.get("pulled"):
            p = oci_package(str(entry["pulled"]["image"]), str(entry["pulled"]["digest"]))
            packages.setdefault(p["id"], p)
            ids.append(p["id"])
        for path in entry.get("files") or []:
            found = package(str(path))
            if found is not None:
                packages.setdefault(found["id"], found)
                ids.append(found["id"])
        target = entry.get("base") or entry.get("target")
        fact = {"target": target, "packages": ids}
        out.extend([fact] * max(layer_count - len(own), 0) if "base" in entry else [fact])
    return {"layers": out, "packages": [packages[k] for k in sorted(packages)]}


@builtin("oci_sbom")
def oci_sbom(call: BuiltinCall) -> None:
    """The SBOM of the image at `params.layout`; params `image` (its label), `layers`
    (OciImageInfo.layers, files as exec paths, each an input), `source_date_epoch`, `format`."""
    import shutil

    from pyimg import __version__

    params = params_dict(call, {"image", "layout", "layers", "source_date_epoch", "format"},
                         "oci_sbom")
    fmt = str(params.get("format") or "spdx-json")
    if fmt not in FORMATS:
        raise UserInputError(f"attribute 'format' must be one of {list(FORMATS)}, got {fmt!r}")
    layout_path = str(params.get("layout"))
    layout = Layout(input_path(call, layout_path, "oci_sbom: layout"), layout_path,
                    lazy=call.lazy_blobs)
    desc = layout.resolve(None)
    count = 0 if desc.media_type in INDEXES else len(layout.manifest(desc).layers)
    scratch = Path(tempfile.mkdtemp())
    debs = DebCache(call.content_store) if call.content_store is not None else None
    try:
        def package(path: str) -> dict[str, Any] | None:
            sha256 = str(call.input_digests[path]).removeprefix("sha256:")
            if path.endswith(".deb"):
                p = deb_package(input_path(call, path, "oci_sbom: deb"), scratch, path,
                                debs, call.input_digests[path])
                return {**p, "id": f"deb:{p['purl']}", "sha256": sha256}
            return file_package(path, sha256) if path.startswith("external/") else None

        facts = rule_facts(list(params.get("layers") or []), count, package)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    facts["image"] = params.get("image")
    data = sbom_document(layout, facts, __version__, params.get("source_date_epoch") or None, fmt)
    (out,) = call.outputs.values()
    out.write_bytes(data)
