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
                 "packages": ["<id>", ...],
                 "paths": {"<id>": {"files": [...], "directories": [...]}}}, ...],
                                                  # where this layer put each package (else
                                                  # the package's own files and directories)
     "packages": [{"id": "<id>", "name": ..., "version": ..., "purl": ...,
                   "download_url": ..., "sha256": ..., "licenses": [...],
                   "license_expression": ...,     # as pypi/npm declare it (else `licenses`)
                   "checksums": {"SHA512": hex},  # further pins (an npm SRI)
                   "files": [...],                # in-layer paths the package ships
                   "directories": [...]}]}        # in-layer directories it owns (npm)

Everything else (digests, platform, files with sha256, mode and owner) is read from the layout.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import tempfile
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import closing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote

from pyimg.actions._common import input_path, params_dict
from pyimg.actions.builtins import builtin
from pyimg.actions.deb_layer import through_links
from pyimg.actions.npm_layer import installed_packages
from pyimg.actions.py_layer import installed_paths
from pyimg.core.builtin import BuiltinCall
from pyimg.core.digest import Digest
from pyimg.core.streams import ByteReader
from pyimg.errors import UserInputError
from pyimg.oci.compress import open_decompressed
from pyimg.oci.config import config_platform, layer_diff_ids
from pyimg.oci.deb import DebCache, read_deb
from pyimg.oci.layout import Layout
from pyimg.oci.media_types import INDEXES
from pyimg.oci.model import Descriptor, load_json
from pyimg.oci.tar_scan import ScannedMember, UnsupportedTar, scan_tar

__all__ = [
    "FORMATS",
    "PURLS",
    "LayerFile",
    "LayerReader",
    "deb_package",
    "file_package",
    "layer_files",
    "layer_files_of",
    "layer_paths",
    "npm_packages",
    "oci_package",
    "oci_sbom",
    "rule_facts",
    "purl",
    "sbom_document",
    "wheel_package",
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


# -- Python wheels and npm packages


def wheel_package(path: Path, exec_path: str, sha256: str,
                  spec: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A wheel as an SBOM package: name, version and declared licence of its METADATA, and,
    when py_layer `spec` installed it, the in-layer paths installer put its files at."""
    import email.parser
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist()
                     if n.count("/") == 1 and n.endswith(".dist-info/METADATA")]
            if not names:
                raise UserInputError(f"{exec_path}: a wheel without .dist-info/METADATA")
            # The one of the wheel's own distribution (the file name's first part).
            dist = path.name.split("-", 1)[0].lower()
            name = min(names, key=lambda n: (n.split("-", 1)[0].lower() != dist, n))
            metadata = email.parser.BytesHeaderParser().parsebytes(z.read(name))
    except (zipfile.BadZipFile, OSError, KeyError) as e:
        raise UserInputError(f"{exec_path}: not a readable wheel ({e})") from None
    package: dict[str, Any] = {
        "name": str(metadata.get("Name") or dist), "version": str(metadata.get("Version") or ""),
        "sha256": sha256, "license_expression": _wheel_license(metadata),
        "license_kind": "pypi",
        "files": installed_paths(path, dict(spec), exec_path) if spec else [],
    }
    package["purl"] = purl("pypi", package)
    return {**package, "id": f"pypi:{package['purl']}"}


# Trove classifiers (`License :: ...`) whose SPDX identifier is certain.
_CLASSIFIER_TO_SPDX = {
    "MIT License": "MIT", "MIT No Attribution License (MIT-0)": "MIT-0",
    "BSD License": "", "Apache Software License": "", "ISC License (ISCL)": "ISC",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "GNU General Public License v2 (GPLv2)": "GPL-2.0-only",
    "GNU General Public License v2 or later (GPLv2+)": "GPL-2.0-or-later",
    "GNU General Public License v3 (GPLv3)": "GPL-3.0-only",
    "GNU General Public License v3 or later (GPLv3+)": "GPL-3.0-or-later",
    "GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.0-or-later",
    "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0-only",
    "GNU Lesser General Public License v3 or later (LGPLv3+)": "LGPL-3.0-or-later",
    "GNU Affero General Public License v3": "AGPL-3.0-only",
    "Python Software Foundation License": "PSF-2.0", "The Unlicense (Unlicense)": "Unlicense",
    "Universal Permissive License (UPL)": "UPL-1.0", "zlib/libpng License": "Zlib",
    "Boost Software License 1.0 (BSL-1.0)": "BSL-1.0", "Eclipse Public License 2.0 (EPL-2.0)": "EPL-2.0",
}


def _wheel_license(metadata: Any) -> str:
    """What the wheel declares, most precise first: `License-Expression` (PEP 639), `License`
    (free text, often one identifier), else its licence classifiers (several: any of them)."""
    expression = str(metadata.get("License-Expression") or "").strip()
    if expression:
        return expression
    text = str(metadata.get("License") or "").strip()
    if text and text.upper() not in ("UNKNOWN", "NONE"):
        return text
    names = []
    for classifier in metadata.get_all("Classifier") or []:
        parts = [x.strip() for x in str(classifier).split("::")]
        if parts[0] == "License" and len(parts) > 1 and parts[-1] != "OSI Approved":
            names.append(_CLASSIFIER_TO_SPDX.get(parts[-1]) or parts[-1])
    return " OR ".join(sorted(set(names)))


def npm_packages(layout_path: Path, layout: str, spec: Mapping[str, Any],
                 host_path: Callable[[str], Path],
                 sha256_of: Callable[[str], str]) -> list[dict[str, Any]]:
    """The packages npm_layer `spec` installs from the npm_lock layout.json at `layout_path`
    (exec path `layout`): name, version and `license` of each package.json, the tarball's SRI
    and sha256, and the node_modules directory it was unpacked at (one package per name and
    version, with every directory it is at)."""
    base = layout.rsplit("/", 1)[0]
    by_id: dict[str, dict[str, Any]] = {}
    for directory, planned, entry in installed_packages(layout_path, layout, dict(spec),
                                                        f"{layout}: npm_layer"):
        manifest: Mapping[str, Any] = {}
        checksums: dict[str, str] = {}
        sha256 = ""
        if planned.tarball is not None:
            tarball = f"{base}/{planned.tarball}"
            manifest = _npm_manifest(host_path(tarball), tarball)
            algorithm, _, hex_digest = planned.tarball.rsplit("/", 1)[-1].removesuffix(
                ".tgz").partition("-")
            checksums[algorithm.upper()] = hex_digest
            sha256 = sha256_of(tarball)
        name = manifest.get("name") if isinstance(manifest.get("name"), str) else planned.name
        package: dict[str, Any] = {
            "name": name, "version": str(entry.get("version") or ""), "sha256": sha256,
            "checksums": checksums, "license_expression": _npm_license(manifest),
            "license_kind": "npm", "directories": [directory],
        }
        package["purl"] = purl("npm", package)
        package["id"] = f"npm:{package['purl']}"
        known = by_id.setdefault(package["id"], package)
        if known is not package:
            known["directories"] = sorted({*known["directories"], directory})
    return [by_id[k] for k in sorted(by_id)]


def _npm_manifest(tgz: Path, what: str) -> Mapping[str, Any]:
    """The package.json of an npm tarball (its first component stripped, as npm does)."""
    try:
        with tarfile.open(tgz, "r|gz") as tar:
            for m in tar:
                rest = m.name.lstrip("./").split("/", 1)
                if m.isreg() and len(rest) == 2 and rest[1] == "package.json":
                    f = tar.extractfile(m)
                    assert f is not None
                    doc = json.loads(f.read(1 << 22))
                    return doc if isinstance(doc, dict) else {}
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        raise UserInputError(f"{what}: not a readable npm tarball ({e})") from None
    return {}


def _npm_license(manifest: Mapping[str, Any]) -> str:
    """package.json's `license` (an SPDX expression), or the older `{type}` and `licenses`."""
    value = manifest.get("license")
    if isinstance(value, dict):
        value = value.get("type")
    if isinstance(value, str) and value.strip():
        return value.strip()
    legacy = manifest.get("licenses")
    if isinstance(legacy, list):
        types = [x.get("type") if isinstance(x, dict) else x for x in legacy]
        return " OR ".join(sorted({t.strip() for t in types if isinstance(t, str) and t.strip()}))
    return ""


# SPDX identifiers a declared expression may name as they are (matched case-insensitively, as
# SPDX says); an expression naming another becomes one LicenseRef with its text.
_SPDX_IDS = {i.lower(): i for i in (
    "0BSD", "AFL-3.0", "AGPL-3.0-only", "AGPL-3.0-or-later", "Apache-1.1", "Apache-2.0",
    "Artistic-1.0-Perl", "Artistic-2.0", "BlueOak-1.0.0", "BSD-1-Clause", "BSD-2-Clause",
    "BSD-3-Clause", "BSD-3-Clause-Clear", "BSD-4-Clause", "BSL-1.0", "CC-BY-3.0", "CC-BY-4.0",
    "CC-BY-SA-4.0", "CC0-1.0", "CDDL-1.0", "CDDL-1.1", "EPL-1.0", "EPL-2.0", "EUPL-1.2",
    "GPL-2.0-only", "GPL-2.0-or-later", "GPL-3.0-only", "GPL-3.0-or-later", "HPND", "ISC",
    "LGPL-2.0-only", "LGPL-2.0-or-later", "LGPL-2.1-only", "LGPL-2.1-or-later", "LGPL-3.0-only",
    "LGPL-3.0-or-later", "MIT", "MIT-0", "MPL-1.1", "MPL-2.0", "MS-PL", "NCSA", "OFL-1.1",
    "OpenSSL", "PSF-2.0", "Python-2.0", "Ruby", "Unicode-3.0", "Unicode-DFS-2016",
    "Unlicense", "UPL-1.0", "W3C", "WTFPL", "X11", "Zlib", "ZPL-2.1",
)}
_SPDX_EXCEPTIONS = {i.lower(): i for i in (
    "Classpath-exception-2.0", "GCC-exception-3.1", "LLVM-exception", "Autoconf-exception-3.0",
    "Bison-exception-2.2", "Font-exception-2.0",
)}
_EXPRESSION_TOKEN = re.compile(r"\(|\)|[^\s()]+")


def _declared_expression(text: str) -> str | None:
    """`text` as a valid SPDX expression of known identifiers (normalized case), else None."""
    out: list[str] = []
    depth, want_operand, after_with = 0, True, False
    for token in _EXPRESSION_TOKEN.findall(text):
        upper = token.upper()
        if token == "(" and want_operand and not after_with:
            depth += 1
            out.append(token)
        elif token == ")" and not want_operand and depth:
            depth -= 1
            out.append(token)
        elif upper in ("AND", "OR") and not want_operand:
            out.append(upper)
            want_operand = True
        elif upper == "WITH" and not want_operand and out[-1] != ")":
            out.append(upper)
            want_operand, after_with = True, True
        elif want_operand and after_with and token.lower() in _SPDX_EXCEPTIONS:
            out.append(_SPDX_EXCEPTIONS[token.lower()])
            want_operand, after_with = False, False
        elif want_operand and not after_with and token.lower() in _SPDX_IDS:
            out.append(_SPDX_IDS[token.lower()])
            want_operand = False
        else:
            return None
    if want_operand or depth or not out:
        return None
    return " ".join(out).replace("( ", "(").replace(" )", ")")


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
    symlink of the layer (path -> target). The layer is read by oci/tar_scan.py, or by
    `tarfile` when it uses a form that reader leaves to it."""
    found: dict[str, str] = {}
    try:
        with open(blob, "rb") as raw:
            files = layer_files_of(raw, what, found)
    except UnsupportedTar:
        found.clear()
        files = _layer_files(_tarfile_members(blob, what), what, found)
    if links is not None:
        links.update(found)
    yield from files


def layer_files_of(raw: ByteReader, what: str, links: dict[str, str]) -> list[LayerFile]:
    """`layer_files` of the layer tar (any compression) read from `raw`, by oci/tar_scan.py
    only: raises UnsupportedTar for a tar it leaves to `tarfile`. The caller closes `raw`."""
    # Closed on leaving, also on an error: its decompressing thread has stopped reading `raw`.
    scanned = cast(Generator[ScannedMember, None, None], scan_tar(raw, what, ("sha256", "sha1")))
    with closing(scanned) as members:
        return _layer_files(
            ((m.name, m.kind, m.linkname, m.mode, m.uid, m.gid,
              (m.digests["sha256"], m.digests["sha1"]) if m.digests else None)
             for m in members), what, links)


# (name, kind, linkname, mode, uid, gid, (sha256, sha1) of a file's content or None)
_Member = tuple[str, str, str, int, int, int, "tuple[str, str] | None"]


def _layer_files(members: Iterator[_Member], what: str, links: dict[str, str]) -> list[LayerFile]:
    seen: dict[str, tuple[str, str]] = {}
    out = []
    for name, kind, linkname, mode, uid, gid, sums in members:
        path = _layer_path(name)
        if path.rsplit("/", 1)[-1].startswith(".wh."):
            continue
        if kind == "hardlink":
            target = _layer_path(linkname)
            if target not in seen:
                raise UserInputError(f"{what}: hard link {path!r} to {target!r}, "
                                     "which comes later or not at all")
            sums = seen[target]
        elif kind == "symlink":
            links[path] = linkname
        if sums is None:
            continue
        seen[path] = sums
        out.append(LayerFile(path, sums[0], sums[1], mode & 0o7777, uid, gid))
    return out


def _tarfile_members(blob: Path, what: str) -> Iterator[_Member]:
    """The members of a layer as Python's tarfile reads them (sparse files, global headers)."""
    with open(blob, "rb") as raw:
        reader, _ = open_decompressed(raw)
        try:
            # typeshed asks for a seekable, writable file object in every mode; 'r|' only reads.
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                for m in tar:
                    sums = None
                    if m.isreg():
                        sha256, sha1 = hashlib.sha256(), hashlib.sha1()
                        f = tar.extractfile(m)
                        assert f is not None
                        while chunk := f.read(_CHUNK):
                            sha256.update(chunk)
                            sha1.update(chunk)
                        sums = (sha256.hexdigest(), sha1.hexdigest())
                    kind = ("file" if m.isreg() else "hardlink" if m.islnk() else
                            "symlink" if m.issym() else "other")
                    yield m.name, kind, m.linkname, m.mode, m.uid, m.gid, sums
        except (tarfile.TarError, EOFError, OSError) as e:
            raise UserInputError(f"{what}: not a readable layer ({e})") from None
        finally:
            reader.close()


# -- the document


def _spdx_id(*parts: object) -> str:
    return "SPDXRef-" + "-".join(_SPDX_ID_UNSAFE.sub(".", str(p)) for p in parts)


def _file_id(layer: int, number: int) -> str:
    """`_spdx_id("File", layer, number)`, without its regular expressions: one per file."""
    return f"SPDXRef-File-{layer}-{number}"


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


def _license_expression(names: list[str], extracted: dict[str, tuple[str, str]]) -> str:
    ids = []
    for name in names:
        spdx = _DEBIAN_TO_SPDX.get(name, "")
        if spdx is None:
            continue
        if not spdx:
            spdx = "LicenseRef-debian-" + _SPDX_ID_UNSAFE.sub(".", name)
            extracted[spdx] = (name, f"The Debian copyright file names this licence '{name}'.")
        ids.append(spdx)
    ids = sorted(set(ids))
    if not ids:
        return "NOASSERTION"
    return ids[0] if len(ids) == 1 else "(" + " AND ".join(ids) + ")"


def _declared_license(p: Mapping[str, Any], extracted: dict[str, tuple[str, str]]) -> str:
    """A package's declared licence as SPDX: a pypi or npm declaration as it is when it is an
    SPDX expression of known identifiers, else as one LicenseRef carrying its text; Debian's
    DEP-5 names through `_license_expression`."""
    if "license_expression" not in p:
        return _license_expression(list(p.get("licenses") or []), extracted)
    text = str(p.get("license_expression") or "").strip()
    if not text:
        return "NOASSERTION"
    expression = _declared_expression(text)
    if expression is not None:
        return expression
    kind = str(p.get("license_kind") or "declared")
    first = text.splitlines()[0].strip()
    name = _SPDX_ID_UNSAFE.sub(".", first).strip(".")[:48] or "text"
    if name != text:  # shortened or rewritten: the text's digest keeps different texts apart
        name += "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    lid = f"LicenseRef-{kind}-{name}"
    extracted[lid] = (first[:200], f"The {kind} package declares this licence: {text}")
    return lid


_CYCLONEDX_HASH = {"SHA1": "SHA-1", "SHA256": "SHA-256", "SHA384": "SHA-384", "SHA512": "SHA-512"}


def _checksums(p: Mapping[str, Any]) -> dict[str, str]:
    """SPDX algorithm -> hex digest of every pin of the package (its sha256, an npm SRI)."""
    out = {str(k).upper(): str(v) for k, v in (p.get("checksums") or {}).items()
           if str(k).upper() in _CYCLONEDX_HASH}
    if p.get("sha256"):
        out["SHA256"] = str(p["sha256"])
    return dict(sorted(out.items()))


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


# read_layer(blob descriptor, blob file, what, links) -> the layer's files, as `layer_files`
# gives them (`pyimg sbom` passes one that keeps them in the action cache: attest/layer_facts.py).
LayerReader = Callable[[Descriptor, Path, str, dict[str, str]], list[LayerFile]]


def _read_image(layout: Layout, facts: Mapping[str, Any], source_date_epoch: int | None,
                read_layer: LayerReader | None = None,
                manifest_desc: Descriptor | None = None) -> _Image:
    what = layout.what
    desc = manifest_desc or layout.resolve(None)
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
        where = f"{what}: layer {blob.digest}"
        path = layout.blob_file(blob.digest)
        files = (read_layer(blob, path, where, links) if read_layer is not None
                 else list(layer_files(path, where, links)))
        # A package's path as its .deb names it; deb_layer wrote it where the layer's directory
        # links lead (merged /usr: `bin/sh` is at `usr/bin/sh`), so it is looked up there too.
        # Where this layer put each package, else where the package says it goes.
        placed = {pid: (layer_facts.get("paths") or {}).get(pid) or packages[pid]
                  for pid in in_layer}
        owners: dict[str, list[str]] = {}
        for pid in in_layer:
            for path in placed[pid].get("files") or []:
                at = through_links(_layer_path(str(path)), links, what) if links else \
                    _layer_path(str(path))
                owners.setdefault(at, []).append(pid)
        # An npm package owns the files under its directory but not those of a package
        # nested in it (node_modules/c/node_modules/a): the deepest directory wins.
        directories: dict[str, list[str]] = {}
        for pid in in_layer:
            for d in placed[pid].get("directories") or []:
                directories.setdefault(_layer_path(str(d)).rstrip("/"), []).append(pid)
        for i, f in enumerate(files):
            for pid in owners.get(f.path, ()):
                package_files[pid].append((n, i))
            parent = f.path
            while directories and "/" in parent:
                parent = parent.rsplit("/", 1)[0]
                if parent in directories:
                    for pid in directories[parent]:
                        package_files[pid].append((n, i))
                    break
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
    extracted: dict[str, tuple[str, str]] = {}
    for layer in image.layers:
        n = layer.index
        layer_id = _spdx_id("Layer", n)
        for i, f in enumerate(layer.files):
            file_id = _file_id(n, i)
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
            "licenseDeclared": _declared_license(p, extracted),
            "copyrightText": "NOASSERTION",
        }
        if p.get("version"):
            entry["versionInfo"] = str(p["version"])
        sums = _checksums(p)
        if sums:
            entry["checksums"] = [{"algorithm": k, "checksumValue": v} for k, v in sums.items()]
        if contained:
            entry["packageVerificationCode"] = _verification_code(
                [image.layers[n].files[i].sha1 for n, i in contained])
            for n, i in contained:
                relationships.append({"spdxElementId": spdx_id, "relationshipType": "CONTAINS",
                                      "relatedSpdxElement": _file_id(n, i)})
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
            {"licenseId": lid, "name": name, "extractedText": text}
            for lid, (name, text) in sorted(extracted.items())
        ]
    return doc


def _cyclonedx(image: _Image, version: str) -> dict[str, Any]:
    """CycloneDX 1.5: the image is the metadata component; each layer a `file` component whose
    nested components are its files; packages are components the layers depend on, with the
    files they installed in each layer as evidence (`occurrences`)."""
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
        sums = _checksums(p)
        if sums:
            entry["hashes"] = [{"alg": _CYCLONEDX_HASH[k], "content": v} for k, v in sums.items()]
        names = list(p.get("licenses") or [])
        declared = str(p.get("license_expression") or "").strip()
        if declared:
            expression = _declared_expression(declared)
            entry["licenses"] = ([{"expression": expression}] if expression is not None else
                                 [{"license": {"name": declared.splitlines()[0].strip()[:200]}}])
        elif names:
            entry["licenses"] = [{"license": {"name": name}} for name in names]
        if p.get("download_url"):
            entry["externalReferences"] = [{"type": "distribution", "url": str(p["download_url"])}]
        contained = image.package_files[pid]
        if contained:
            # The files it installed, in each layer that holds it (the layer's own files are
            # its nested components): CycloneDX has no file-level "contains".
            entry["evidence"] = {"occurrences": [
                {"location": f"layer {n}: ./{image.layers[n].files[i].path}"}
                for n, i in contained]}
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
                  source_date_epoch: int | None = None, fmt: str = "spdx-json",
                  read_layer: LayerReader | None = None,
                  manifest: Descriptor | None = None) -> bytes:
    """The SBOM (`fmt`: one of FORMATS) of the one image in `layout` (or of its image
    `manifest`, one platform's of an index), described by `facts` (module docstring). Its bytes
    depend only on the image, the facts and pyimg's version. `read_layer` reads a layer's files
    (default: `layer_files`)."""
    image = _read_image(layout, facts, source_date_epoch, read_layer, manifest)
    doc = _cyclonedx(image, version) if fmt == "cyclonedx-json" else _spdx(image, version)
    # Sorted keys and no spaces (docs/architecture.md: JSON we own is canonical), one newline.
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


WriterPackages = Callable[[str, Mapping[str, Any], list[str]],
                          tuple[list[dict[str, Any]], set[str]]]


def layer_paths(package: Mapping[str, Any]) -> dict[str, list[str]]:
    """Where a layer put `package` (its `files` and `directories`, those it has), for the
    layer's `paths` fact: the same package in another layer may be elsewhere."""
    return {k: list(package[k]) for k in ("files", "directories") if package.get(k)}


def rule_facts(layers: list[Any], layer_count: int,
               package: Callable[[str], dict[str, Any] | None],
               writer_packages: WriterPackages | None = None) -> dict[str, Any]:
    """The facts of an image from what its providers say of its `layers` (rules/providers.bzl,
    OciImageInfo.layers): a leading `base` entry stands for all the base image's layers.
    `package(path)` is the package of a file a layer was made from (None: not one);
    `writer_packages(writer, params, files)`, for a py_layer or npm_layer layer, the packages it
    installed and which of `files` they stand for."""
    own = [entry for entry in layers if "base" not in entry]
    out: list[dict[str, Any]] = []
    packages: dict[str, dict[str, Any]] = {}
    for entry in layers:
        ids = []
        if entry.get("pulled"):
            p = oci_package(str(entry["pulled"]["image"]), str(entry["pulled"]["digest"]))
            packages.setdefault(p["id"], p)
            ids.append(p["id"])
        files = [str(path) for path in entry.get("files") or []]
        covered: set[str] = set()
        paths: dict[str, Any] = {}
        if writer_packages is not None and entry.get("writer") and entry.get("spec"):
            made, covered = writer_packages(str(entry["writer"]), json.loads(entry["spec"]), files)
            for p in made:
                packages.setdefault(p["id"], p)
                ids.append(p["id"])
                if placed := layer_paths(p):
                    paths[p["id"]] = placed
        for path in files:
            if path in covered:
                continue
            found = package(str(path))
            if found is not None:
                packages.setdefault(found["id"], found)
                ids.append(found["id"])
                if placed := layer_paths(found):
                    paths[found["id"]] = placed
        target = entry.get("base") or entry.get("target")
        fact: dict[str, Any] = {"target": target, "packages": ids}
        if paths:
            fact["paths"] = paths
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

        def writer_packages(writer: str, spec: Mapping[str, Any],
                            files: list[str]) -> tuple[list[dict[str, Any]], set[str]]:
            def sha256_of(path: str) -> str:
                return str(call.input_digests.get(path, "")).removeprefix("sha256:")

            if writer == "py_layer":
                wheels = [f for f in files if f.endswith(".whl")]
                return ([wheel_package(input_path(call, f, "oci_sbom: wheel"), f, sha256_of(f),
                                       spec) for f in wheels], set(wheels))
            layout = str(spec.get("layout") or "")
            if writer == "npm_layer" and layout in files:
                base = layout.rsplit("/", 1)[0] + "/"
                return (npm_packages(input_path(call, layout, "oci_sbom: layout"), layout, spec,
                                     lambda p: input_path(call, p, "oci_sbom: tarball"),
                                     sha256_of),
                        {f for f in files if f.startswith(base)})
            return [], set()

        facts = rule_facts(list(params.get("layers") or []), count, package, writer_packages)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    facts["image"] = params.get("image")
    data = sbom_document(layout, facts, __version__, params.get("source_date_epoch") or None, fmt)
    (out,) = call.outputs.values()
    out.write_bytes(data)
