"""`pyimg sbom` and `pyimg provenance` through the CLI: SPDX 2.3 validated by spdx-tools, the
counts against the image's own tar listing, deb purls and licences, generic purls of http_file,
in-toto/SLSA statements validated by in-toto-attestation, and both byte-for-byte reproducible
across workspace paths, umask and TZ."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pyimg.oci.compress import open_decompressed
from workspace_helpers import PYIMG, Workspace

BUILD = """\
load("@pyimg//rules:defs.bzl", "deb_layer", "oci_image", "oci_push", "oci_sbom", "pkg_tar")

pkg_tar(
    name = "files",
    srcs = ["a.txt", "run.sh", "@tool//file"],
    package_dir = "/app",
    owner = "1000.1000",
)

pkg_tar(name = "more", srcs = ["b.txt"], package_dir = "/srv", mode = "0600")

deb_layer(name = "debs", debs = glob(["debs/*.deb"]))

oci_image(
    name = "image",
    tars = [":debs", ":files", ":more"],
    entrypoint = ["/app/run.sh"],
    created = "2024-05-06T07:08:09Z",
)

oci_image(name = "child", base = ":image", tars = [":more"])

oci_sbom(name = "child_sbom", image = ":child")

oci_push(name = "push", image = ":child", repository = "registry.example/app")
"""

COPYRIGHT = b"""\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: hello

Files: *
Copyright: 2024 Somebody
License: GPL-2+

Files: debian/*
License: Expat

Files: extra/*
License: Custom-1
"""


class _Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        handler = lambda *a: _Quiet(*a, directory=str(root))  # noqa: E731
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    root = tmp_path_factory.mktemp("served")
    (root / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    s = _Server(root)
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _workspace(root: Path, cache: Path, served: _Server) -> Workspace:
    from debian_fixtures import make_deb

    ws = Workspace(root, cache)
    sha = hashlib.sha256((served.root / "tool.sh").read_bytes()).hexdigest()
    ws.write("MODULE.pyimg", f"""\
        http_file(name = "tool", urls = ["{served.url("tool.sh")}"], sha256 = "{sha}",
                  executable = True)
        """)
    ws.write("app/BUILD.pyimg", BUILD)
    ws.write("app/a.txt", "hello\n")
    ws.write("app/b.txt", "secret-ish\n")
    ws.write("app/run.sh", "#!/bin/sh\necho hi\n", mode=0o755)
    (root / "app/debs").mkdir()
    make_deb(root / "app/debs", "hello", {
        "usr/bin/hello": (b"#!/bin/sh\necho hello\n", 0o755),
        "usr/share/doc/hello/copyright": COPYRIGHT,
    }, version="2.10-3", compression="gzip")
    return ws


def _pyimg(ws: Workspace, *args: str, env: dict[str, str] | None = None,
           umask: int | None = None) -> bytes:
    full = {**os.environ, **(env or {})}
    r = subprocess.run([*PYIMG, args[0], *ws.flags(), *args[1:]], cwd=ws.root, env=full,
                       capture_output=True,
                       preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


def _layer_listing(layout: Path) -> list[list[tuple[str, str, int, int, int]]]:
    """(path, sha256, mode, uid, gid) of each regular file or hard link, per layer, read with
    Python's tarfile from the image's own blobs."""
    index = json.loads((layout / "index.json").read_text())
    digest = index["manifests"][0]["digest"].split(":")[1]
    manifest = json.loads((layout / "blobs/sha256" / digest).read_bytes())
    out = []
    for layer in manifest["layers"]:
        files = []
        with open(layout / "blobs/sha256" / layer["digest"].split(":")[1], "rb") as raw:
            reader, _ = open_decompressed(raw)
            with tarfile.open(fileobj=reader, mode="r|") as tar:  # type: ignore[call-overload]
                contents: dict[str, str] = {}
                for m in tar:
                    name = m.name.lstrip("./")
                    if m.isreg():
                        f = tar.extractfile(m)
                        assert f is not None
                        contents[name] = hashlib.sha256(f.read()).hexdigest()
                    elif m.islnk():
                        contents[name] = contents[m.linkname.lstrip("./")]
                    else:
                        continue
                    files.append((name, contents[name], m.mode & 0o7777, m.uid, m.gid))
        out.append(files)
    return out


def _validate_spdx(path: Path) -> None:
    from spdx_tools.spdx.parser.parse_anything import parse_file
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

    assert validate_full_spdx_document(parse_file(str(path))) == []


def _validate_statement(data: bytes) -> dict:
    from google.protobuf import json_format
    from in_toto_attestation.predicates.provenance.v1 import provenance_pb2
    from in_toto_attestation.v1 import statement_pb2
    from in_toto_attestation.v1.resource_descriptor import ResourceDescriptor
    from in_toto_attestation.v1.statement import Statement

    doc = json.loads(data)
    Statement.copy_from_pb(json_format.ParseDict(doc, statement_pb2.Statement())).validate()
    # Strict parsing: a field SLSA provenance v1 does not define is an error.
    predicate = json_format.ParseDict(doc["predicate"], provenance_pb2.Provenance())
    for rd in predicate.build_definition.resolved_dependencies:
        ResourceDescriptor.copy_from_pb(rd).validate()
    return doc


needs_dpkg = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")


@needs_dpkg
def test_sbom_is_valid_spdx_and_lists_every_file_layer_and_package(served: _Server,
                                                                   tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", tmp_path / "cache", served)
    _pyimg(ws, "sbom", "//app:child", "-o", str(tmp_path / "sbom.json"))
    _validate_spdx(tmp_path / "sbom.json")
    doc = json.loads((tmp_path / "sbom.json").read_text())

    # The image: name, digest, platform.
    digest = (ws.out("app/child.digest")).read_text().strip()
    image = next(p for p in doc["packages"] if p["SPDXID"] == "SPDXRef-Image")
    assert image["name"] == "//app:child" and image["versionInfo"] == digest
    assert "platform linux/amd64" in image["description"]
    assert doc["documentNamespace"].endswith(digest.split(":")[1])
    assert doc["creationInfo"]["created"] == "1970-01-01T00:00:00Z"  # the child's config

    # Files: the same count, paths, sha256, modes and owners as the image's own tar listing.
    listing = _layer_listing(ws.out("app/child"))
    assert [len(x) for x in listing] == [4, 3, 1, 1]  # hello's 2 + 2 dpkg records; app; srv; srv
    by_id = {f["SPDXID"]: f for f in doc["files"]}
    contains = {}
    for r in doc["relationships"]:
        if r["relationshipType"] == "CONTAINS":
            contains.setdefault(r["spdxElementId"], []).append(r["relatedSpdxElement"])
    for n, files in enumerate(listing):
        listed = []
        for fid in contains[f"SPDXRef-Layer-{n}"]:
            if fid in by_id:
                f = by_id[fid]
                sha = next(c["checksumValue"] for c in f["checksums"] if c["algorithm"] == "SHA256")
                listed.append((f["fileName"][2:], sha, f["comment"]))
        assert listed == [(p, s, f"layer {n}, mode {m:04o}, owner {u}:{g}")
                          for p, s, m, u, g in files]
    assert len(doc["files"]) == sum(len(x) for x in listing)

    # Layers: diff_id and the target that made each.
    layers = {p["SPDXID"]: p for p in doc["packages"] if p["SPDXID"].startswith("SPDXRef-Layer")}
    assert [layers[f"SPDXRef-Layer-{n}"]["sourceInfo"] for n in range(4)] == [
        "made by //app:debs", "made by //app:files", "made by //app:more", "made by //app:more"]
    config = json.loads((ws.out("app/child/blobs/sha256") / json.loads(
        (ws.out("app/child/blobs/sha256") / digest.split(":")[1]).read_text())["config"]["digest"]
        .split(":")[1]).read_text())
    assert [layers[f"SPDXRef-Layer-{n}"]["versionInfo"] for n in range(4)] == \
        config["rootfs"]["diff_ids"]

    # Packages: the deb with its purl and DEP-5 licences, the http_file with a generic purl,
    # each contained by the layer that holds its files.
    purls = {ref["referenceLocator"]: p for p in doc["packages"] for ref in p.get("externalRefs", [])}
    deb = purls["pkg:deb/debian/hello@2.10-3?arch=amd64"]
    # Debian's short names as SPDX identifiers; one SPDX lacks as a LicenseRef with its text.
    assert deb["licenseDeclared"] == "(GPL-2.0-or-later AND LicenseRef-debian-Custom-1 AND MIT)"
    assert [x["licenseId"] for x in doc["hasExtractedLicensingInfos"]] == \
        ["LicenseRef-debian-Custom-1"]
    assert deb["versionInfo"] == "2.10-3"
    deb_files = {by_id[f]["fileName"] for f in contains[deb["SPDXID"]]}
    assert deb_files == {"./usr/bin/hello", "./usr/share/doc/hello/copyright"}
    assert deb["SPDXID"] in contains["SPDXRef-Layer-0"]
    sha = hashlib.sha256((served.root / "tool.sh").read_bytes()).hexdigest()
    tool = next(p for u, p in purls.items() if u.startswith("pkg:generic/tool.sh?"))
    assert f"checksum=sha256:{sha}" in tool["externalRefs"][0]["referenceLocator"]
    assert "download_url=http%3A%2F%2F127.0.0.1" in tool["externalRefs"][0]["referenceLocator"]
    # SPDX's download-location pattern has no room for a port: the URL stays in the purl.
    assert tool["downloadLocation"] == "NOASSERTION"
    assert tool["SPDXID"] in contains["SPDXRef-Layer-1"]
    assert tool["SPDXID"] not in contains["SPDXRef-Layer-2"]


@needs_dpkg
def test_sbom_and_provenance_are_the_same_bytes_across_paths_umask_and_tz(
        served: _Server, tmp_path: Path) -> None:
    one = _workspace(tmp_path / "one", tmp_path / "cache1", served)
    two = _workspace(tmp_path / "elsewhere/two", tmp_path / "cache2", served)
    sbom1 = _pyimg(one, "sbom", "//app:image", env={"TZ": "UTC"}, umask=0o022)
    sbom2 = _pyimg(two, "sbom", "//app:image", env={"TZ": "Asia/Kolkata"}, umask=0o077)
    assert sbom1 == sbom2
    _validate_spdx_bytes(sbom1, tmp_path)
    assert json.loads(sbom1)["creationInfo"]["created"] == "2024-05-06T07:08:09Z"
    prov1 = _pyimg(one, "provenance", "//app:image", env={"TZ": "UTC"}, umask=0o022)
    prov2 = _pyimg(two, "provenance", "//app:image", env={"TZ": "Asia/Kolkata"}, umask=0o077)
    assert prov1 == prov2


def _validate_spdx_bytes(data: bytes, tmp_path: Path) -> None:
    path = tmp_path / "check.spdx.json"
    path.write_bytes(data)
    _validate_spdx(path)


@needs_dpkg
def test_provenance_is_a_valid_slsa_statement(served: _Server, tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", tmp_path / "cache", served)
    doc = _validate_statement(_pyimg(ws, "provenance", "//app:image"))
    digest = ws.out("app/image.digest").read_text().strip()
    assert doc["subject"] == [{"name": "//app:image", "digest": {"sha256": digest[7:]}}]
    build = doc["predicate"]["buildDefinition"]
    assert build["buildType"] == "https://pyimg.dev/buildtypes/build/v1"
    assert build["externalParameters"]["targets"] == ["//app:image"]
    assert set(build["externalParameters"]["source"]) == {"digest"}  # not in git
    deps = {d["uri"]: d["digest"] for d in build["resolvedDependencies"]}
    sha = hashlib.sha256((served.root / "tool.sh").read_bytes()).hexdigest()
    assert deps == {served.url("tool.sh"): {"sha256": sha}}
    assert doc["predicate"]["runDetails"] == {
        "builder": {"id": "https://pyimg.dev/builder/local/v1", "version": {"pyimg": "0.1.0"}}}

    # A source change changes the source digest; run details only when asked.
    ws.write("app/a.txt", "changed\n")
    again = _validate_statement(_pyimg(ws, "provenance", "//app:image", "--include-run-details"))
    source = again["predicate"]["buildDefinition"]["externalParameters"]["source"]
    assert source != build["externalParameters"]["source"]
    assert set(again["predicate"]["runDetails"]) == {"builder", "metadata", "byproducts"}
    assert "startedOn" in again["predicate"]["runDetails"]["metadata"]


def test_provenance_names_the_git_commit_and_tree_state(tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("needs git")
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("BUILD.pyimg", """\
        load("@pyimg//rules:defs.bzl", "oci_image", "pkg_tar")
        pkg_tar(name = "t", srcs = ["f.txt"])
        oci_image(name = "i", tars = [":t"])
        """)
    ws.write("f.txt", "x\n")
    git = ["git", "-C", str(ws.root), "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    subprocess.run([*git, "init", "-q"], check=True)
    (ws.root / ".gitignore").write_text("pyimg-out\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True,
                            text=True).stdout.strip()
    clean = _validate_statement(_pyimg(ws, "provenance", "//:i"))
    source = clean["predicate"]["buildDefinition"]["externalParameters"]["source"]
    assert source["git"] == {"commit": commit, "treeState": "clean"}
    ws.write("f.txt", "y\n")
    dirty = _validate_statement(_pyimg(ws, "provenance", "//:i"))
    source = dirty["predicate"]["buildDefinition"]["externalParameters"]["source"]
    assert source["git"] == {"commit": commit, "treeState": "dirty"}


def test_an_sbom_or_provenance_of_what_is_no_image_is_a_clear_error(tmp_path: Path) -> None:
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("BUILD.pyimg", """\
        load("@pyimg//rules:defs.bzl", "oci_image", "oci_image_index", "pkg_tar")
        pkg_tar(name = "t", srcs = ["f.txt"])
        oci_image(name = "i", tars = [":t"])
        oci_image_index(name = "x", images = [":i"])
        """)
    ws.write("f.txt", "x\n")
    for command, label, words in (("sbom", "//:t", "is not an image"),
                                  ("sbom", "//:x", "name one with --platform, or write one "
                                                   "document per platform with -o DIRECTORY"),
                                  ("provenance", "//:t", "no image or index among the targets")):
        r = subprocess.run([*PYIMG, command, *ws.flags(), label], cwd=ws.root,
                           capture_output=True, text=True)
        assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_sbom_of_an_image_on_a_layout_base_names_the_base_target(tmp_path: Path) -> None:
    first = Workspace(tmp_path / "first", tmp_path / "cache")
    first.write("BUILD.pyimg", """\
        load("@pyimg//rules:defs.bzl", "oci_image", "pkg_tar")
        pkg_tar(name = "t", srcs = ["f.txt"])
        oci_image(name = "i", tars = [":t"])
        """)
    first.write("f.txt", "x\n")
    assert first.run("build", "//:i").code == 0
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    shutil.copytree(first.out("i"), ws.root / "base")
    digest = first.out("i.digest").read_text().strip()
    ws.write("BUILD.pyimg", f"""\
        load("@pyimg//rules:defs.bzl", "oci_image", "oci_layout", "pkg_tar")
        oci_layout(name = "base", path = "base", digest = "{digest}")
        pkg_tar(name = "t", srcs = ["g.txt"])
        oci_image(name = "i", base = ":base", tars = [":t"])
        """)
    ws.write("g.txt", "y\n")
    doc = json.loads(_pyimg(ws, "sbom", "//:i"))
    layers = [p for p in doc["packages"] if p["SPDXID"].startswith("SPDXRef-Layer")]
    assert [p["sourceInfo"] for p in layers] == ["made by //:base", "made by //:t"]
    assert sorted(f["fileName"] for f in doc["files"]) == ["./f.txt", "./g.txt"]


@needs_dpkg
def test_the_oci_sbom_rule_writes_the_document_pyimg_sbom_writes(served: _Server,
                                                                 tmp_path: Path) -> None:
    ws = _workspace(tmp_path / "ws", tmp_path / "cache", served)
    command = _pyimg(ws, "sbom", "//app:child")
    assert ws.run("build", "//app:child_sbom").code == 0
    rule = ws.out("app/child_sbom.spdx.json").read_bytes()
    _validate_spdx(ws.out("app/child_sbom.spdx.json"))
    # The same document, but for the download URL that only pyimg.lock and MODULE.pyimg know.
    url = "&download_url=" + quote(served.url("tool.sh"), safe="")
    assert url.encode() in command and url.encode() not in rule
    assert command.replace(url.encode(), b"") == rule

    # An oci_push names its image: the same layers, made by the same targets, the same files.
    pushed = json.loads(_pyimg(ws, "sbom", "//app:push"))
    child = json.loads(command)
    for key in ("files", "relationships"):
        assert pushed[key] == child[key]
    assert [p.get("sourceInfo") for p in pushed["packages"]] == \
        [p.get("sourceInfo") for p in child["packages"]]


@needs_dpkg
def test_cyclonedx_is_valid_and_lists_the_same_files_and_packages(served: _Server,
                                                                   tmp_path: Path) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    ws = _workspace(tmp_path / "ws", tmp_path / "cache", served)
    ws.write("app/BUILD.pyimg", BUILD + 'oci_sbom(name = "cdx", image = ":child", '
                                        'format = "cyclonedx-json")\n')
    data = _pyimg(ws, "sbom", "//app:child", "--format", "cyclonedx-json")
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(data.decode()) is None
    doc = json.loads(data)
    spdx = json.loads(_pyimg(ws, "sbom", "//app:child"))
    layers = doc["components"][:4]
    assert [c["name"] for c in layers] == [f"layer {n}" for n in range(4)]
    files = [(f["name"], f["hashes"][1]["content"]) for c in layers for f in c["components"]]
    assert files == [(f["fileName"], f["checksums"][1]["checksumValue"]) for f in spdx["files"]]
    purls = sorted(c["purl"] for c in doc["components"][4:])
    assert purls == sorted(ref["referenceLocator"] for p in spdx["packages"]
                           for ref in p.get("externalRefs", []) if p["SPDXID"] != "SPDXRef-Image")
    assert doc["metadata"]["component"]["version"] == \
        ws.out("app/child.digest").read_text().strip()
    # Reproducible: the serial number is derived from the image digest; the rule agrees.
    assert _pyimg(ws, "sbom", "//app:child", "--format", "cyclonedx-json") == data
    assert ws.run("build", "//app:cdx").code == 0
    url = "&download_url=" + quote(served.url("tool.sh"), safe="")
    assert ws.out("app/cdx.cdx.json").read_bytes() == data.replace(url.encode(), b"").replace(
        b',"externalReferences":[{"type":"distribution","url":"' + served.url("tool.sh").encode()
        + b'"}]', b"")


@needs_dpkg
def test_a_deb_file_written_through_a_merged_usr_link_stays_its_package_s(tmp_path: Path) -> None:
    """deb_layer writes `bin/dash` of a package at `usr/bin/dash` when another package ships
    `bin -> usr/bin` (merged /usr, as dpkg installs it); the SBOM still says whose file it is."""
    from debian_fixtures import make_deb

    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("app/BUILD.pyimg", """\
        load("@pyimg//rules:defs.bzl", "deb_layer")

        deb_layer(name = "debs", debs = glob(["debs/*.deb"]))

        oci_image(name = "image", tars = [":debs"], created = "2024-05-06T07:08:09Z")
        """)
    (ws.root / "app/debs").mkdir(parents=True)
    make_deb(ws.root / "app/debs", "usrmerge", symlinks={"bin": "usr/bin"},
             dirs={"usr/bin": 0o755}, compression="gzip")
    make_deb(ws.root / "app/debs", "dash", {"bin/dash": (b"\x7fELF dash\n", 0o755)},
             compression="gzip")
    _pyimg(ws, "sbom", "//app:image", "-o", str(tmp_path / "sbom.json"))
    doc = json.loads((tmp_path / "sbom.json").read_text())
    by_id = {f["SPDXID"]: f["fileName"] for f in doc["files"]}
    contains: dict[str, set[str]] = {}
    for r in doc["relationships"]:
        if r["relationshipType"] == "CONTAINS" and r["relatedSpdxElement"] in by_id:
            contains.setdefault(r["spdxElementId"], set()).add(by_id[r["relatedSpdxElement"]])
    dash = next(p for p in doc["packages"]
                if any(ref["referenceLocator"].startswith("pkg:deb/debian/dash@")
                       for ref in p.get("externalRefs", [])))
    assert "./usr/bin/dash" in contains[dash["SPDXID"]]


def test_a_layer_is_read_once_for_every_sbom_of_it(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A layer's files are kept in the action cache by its digest (attest/layer_facts.py): a
    second SBOM, in either format, reads no layer and says the same."""
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("BUILD.pyimg", """\
        load("@pyimg//rules:defs.bzl", "oci_image", "pkg_tar")
        pkg_tar(name = "t", srcs = ["f.txt", "g.txt"], package_dir = "/srv")
        oci_image(name = "i", tars = [":t"])
        """)
    ws.write("f.txt", "x\n")
    ws.write("g.txt", "y\n")
    first = ws.run("sbom", *ws.flags(), "//:i")
    assert first.code == 0, first.err

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a layer was read again")

    monkeypatch.setattr("pyimg.attest.layer_facts.layer_files", no_reading)
    monkeypatch.setattr("pyimg.actions.sbom.layer_files", no_reading)
    again = ws.run("sbom", *ws.flags(), "//:i")
    assert again.code == 0 and again.out == first.out, again.err
    other = ws.run("sbom", *ws.flags(), "//:i", "--format", "cyclonedx-json")
    assert other.code == 0, other.err
    (layer,) = [c for c in json.loads(other.out)["components"] if c["bom-ref"] == "layer:0"]
    assert [f["name"] for f in layer["components"]] == ["./srv/f.txt", "./srv/g.txt"]


def test_the_build_records_the_files_of_the_layers_it_writes_for_the_sbom(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The layer action records the files of a layer as it writes it (actions/layer_record.py):
    `pyimg sbom` after a build reads no layer, and writes the bytes it writes when it reads
    the layer itself."""
    import pyimg.actions.sbom

    def workspace(name: str) -> Workspace:
        ws = Workspace(tmp_path / name, tmp_path / f"{name}-cache")
        ws.write("BUILD.pyimg", """\
            load("@pyimg//rules:defs.bzl", "oci_image", "pkg_tar")
            pkg_tar(name = "t", srcs = glob(["src/**"]), package_dir = "/srv")
            oci_image(name = "i", tars = [":t"])
            """)
        for i in range(20):
            ws.write(f"src/d{i % 3}/f{i}.txt", f"{i}\n" * i)
        return ws

    recorded = workspace("recorded")
    assert recorded.run("build", "//:i").code == 0

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a layer was read")

    monkeypatch.setattr("pyimg.attest.layer_facts.layer_files", no_reading)
    first = recorded.run("sbom", *recorded.flags(), "//:i")
    assert first.code == 0, first.err
    assert len(json.loads(first.out)["files"]) == 20

    reads = []
    layer_files = pyimg.actions.sbom.layer_files

    def reading(*args: Any, **kwargs: Any) -> Any:
        reads.append(args[0])
        return layer_files(*args, **kwargs)

    monkeypatch.setattr("pyimg.attest.layer_facts.layer_files", reading)
    monkeypatch.setattr("pyimg.actions.layer_record.LayerFilesTee.record",
                        lambda *a, **k: False)
    read = workspace("read")
    assert read.run("build", "//:i").code == 0
    again = read.run("sbom", *read.flags(), "//:i")
    assert again.code == 0, again.err
    assert len(reads) == 1 and again.out == first.out


def test_sbom_and_provenance_after_a_build_take_it_from_its_no_op_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing changed since `pyimg build` of the same command line, `pyimg sbom` and
    `pyimg provenance` take the build from its no-op record (attest/built.py) and write the
    bytes the full path writes; an edited source is noticed, and they describe the new build."""
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("BUILD.pyimg", """\
        load("@pyimg//rules:defs.bzl", "oci_image", "pkg_tar")
        pkg_tar(name = "t", srcs = ["f.txt"], package_dir = "/srv")
        oci_image(name = "i", tars = [":t"])
        """)
    ws.write("f.txt", "x\n")
    out = tmp_path / "sbom.cdx.json"
    commands = [("sbom", *ws.flags(), "//:i"),
                ("sbom", *ws.flags(), "//:i", "--format=cyclonedx-json", "-o", str(out)),
                ("provenance", *ws.flags(), "//:i")]

    def documents() -> list[str]:
        docs = []
        for argv in commands:
            r = ws.run(*argv)
            assert r.code == 0, r.err
            docs.append(r.out or out.read_text())
        return docs

    assert ws.run("build", "//:i").code == 0
    monkeypatch.setenv("PYIMG_FAST_NOOP", "0")
    full = documents()
    monkeypatch.delenv("PYIMG_FAST_NOOP")

    def no_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("built although nothing changed")

    with monkeypatch.context() as m:
        m.setattr("pyimg.attest.built.build", no_build)
        m.setattr("pyimg.attest.built.analyze", no_build)  # the saved analysis, unchecked
        assert documents() == full

    # An edit (same size, so only the stat's times and the contents tell): the record no longer
    # stands for the build, which runs, and the documents name the new contents.
    ws.write("f.txt", "y\n")
    edited = documents()
    sha = hashlib.sha256(b"y\n").hexdigest()
    (f,) = [f for f in json.loads(edited[0])["files"] if f["fileName"] == "./srv/f.txt"]
    assert {"algorithm": "SHA256", "checksumValue": sha} in f["checksums"]
    assert sha in edited[1]
    assert edited[2] != full[2]
    digest = ws.out("i.digest").read_text().strip()
    assert digest.removeprefix("sha256:") in edited[2]


def test_sbom_of_an_index_is_one_document_per_platform_image(tmp_path: Path) -> None:
    """`pyimg sbom` of an index writes each platform image's SBOM into -o DIRECTORY (as BuildKit
    attaches one to each), or the one --platform names; each describes that image by the
    digest the index lists for the platform."""
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("BUILD.pyimg", """\
        load("@pyimg//rules:defs.bzl", "oci_image", "oci_image_index", "pkg_tar")
        pkg_tar(name = "t", srcs = ["f.txt"], package_dir = "/srv")
        oci_image(name = "i", tars = [":t"])
        oci_image_index(name = "x", images = [":i"], platforms = ["linux/amd64", "linux/arm64/v8"])
        """)
    ws.write("f.txt", "x\n")
    out = tmp_path / "sboms"
    r = ws.run("sbom", *ws.flags(), "//:x", "-o", str(out))
    assert r.code == 0, r.err
    assert sorted(p.name for p in out.iterdir()) == ["linux-amd64.spdx.json",
                                                     "linux-arm64-v8.spdx.json"]
    index = json.loads((ws.out("x") / "index.json").read_text())
    top = index["manifests"][0]["digest"].split(":")[1]
    entries = json.loads((ws.out("x") / "blobs/sha256" / top).read_bytes())["manifests"]
    by_platform = {"/".join(filter(None, (e["platform"]["os"], e["platform"]["architecture"],
                                          e["platform"].get("variant")))): e["digest"]
                   for e in entries}
    for name, platform in (("linux-amd64", "linux/amd64"), ("linux-arm64-v8", "linux/arm64/v8")):
        path = out / f"{name}.spdx.json"
        _validate_spdx(path)
        doc = json.loads(path.read_text())
        (image,) = [p for p in doc["packages"] if p["SPDXID"] == "SPDXRef-Image"]
        assert image["name"] == "//:i" and image["versionInfo"] == by_platform[platform]
        assert image["description"].endswith(f"platform {platform}")
        assert [f["fileName"] for f in doc["files"]] == ["./srv/f.txt"]
        (layer,) = [p for p in doc["packages"] if p["SPDXID"] == "SPDXRef-Layer-0"]
        assert layer["sourceInfo"] == "made by //:t"
        one = ws.run("sbom", *ws.flags(), "//:x", "--platform", platform)
        assert one.code == 0 and one.out == path.read_text(), one.err
    cdx = ws.run("sbom", *ws.flags(), "//:x", "--format", "cyclonedx-json", "-o", str(out))
    assert cdx.code == 0, cdx.err
    assert (out / "linux-arm64-v8.cdx.json").is_file()
    wrong = ws.run("sbom", *ws.flags(), "//:x", "--platform", "linux/s390x")
    assert wrong.code == 2 and "holds linux/amd64, linux/arm64/v8" in wrong.err, wrong.err
