"""`pyimg sbom` of an image with a py_layer and an npm_layer (wheels and tarballs served on
loopback): each installed package with its pypi/npm purl (a scoped name encoded), version,
checksums, declared licence (NOASSERTION when none) and download location, contained by its
layer, and every file of those layers linked to the package that installed it; validated by
spdx-tools and cyclonedx-python-lib, and the same bytes from a second workspace."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from workspace_helpers import PYIMG, Workspace

sys.path.insert(0, str(Path(__file__).parents[1]))
from npm_fixtures import Installed, Pkg, Registry, integrity, serve, write_project  # noqa: E402
from python_fixtures import (  # noqa: E402
    Wheel,
    make_wheel,
    publish_index,
    serve_index,
    sha256_file,
)
from test_supply_chain import _layer_listing, _validate_spdx  # noqa: E402

BUILD = """\
load("@pyimg//rules:defs.bzl", "npm_layer", "oci_image", "oci_sbom", "py_layer")

py_layer(
    name = "site",
    deps = ["@pypi//mypkg"],
    platform = "linux/amd64",
)

npm_layer(name = "modules", lock = "@npm//:lock", path = "/app/node_modules",
          platform = "linux/amd64")

oci_image(name = "image", tars = [":site", ":modules"], created = "2024-05-06T07:08:09Z")

oci_sbom(name = "image_sbom", image = ":image")
"""


def _npm_tree() -> tuple[dict[str, str], dict[str, str], dict[str, str], list[Installed]]:
    """A scoped package, one package at two versions (one nested), one without a licence, one
    with a licence SPDX does not know, and an optional one for another os (not installed)."""
    a1 = Pkg("a", "1.0.0", {"index.js": "module.exports = 'a1';\n",
                            "bin/cli.js": "#!/usr/bin/env node\n"}, bin={"a-cli": "bin/cli.js"},
             license="MIT")
    a2 = Pkg("a", "2.0.0", {"index.js": "module.exports = 'a2';\n"}, license="MIT")
    x = Pkg("@s/x", "2.0.0", {"x.js": "module.exports = 'x';\n"}, license="(ISC OR apache-2.0)")
    c = Pkg("c", "1.0.0", {"index.js": "module.exports = require('a');\n"},
            dependencies={"a": "2.0.0"})
    odd = Pkg("odd", "0.1.0", {"index.js": "1;\n"}, license="SEE LICENSE IN LICENSE.txt")
    darwin = Pkg("opt-darwin", "1.0.0", {"index.js": "1;\n"}, os=["darwin"], license="MIT")
    deps = {"a": "1.0.0", "@s/x": "2.0.0", "c": "1.0.0", "odd": "0.1.0"}
    tree = [Installed("node_modules/a", a1), Installed("node_modules/@s/x", x),
            Installed("node_modules/c", c), Installed("node_modules/c/node_modules/a", a2),
            Installed("node_modules/odd", odd),
            Installed("node_modules/opt-darwin", darwin, optional=True)]
    return deps, {}, {"opt-darwin": "1.0.0"}, tree


def _workspace(root: Path, cache: Path, www: Path, registry: Registry) -> Workspace:
    ws = Workspace(root, cache)
    wheels = sorted((www / "files").glob("*.whl"))
    ws.write("requirements.txt", "".join(
        f"{w.name.split('-')[0]}==1.0 --hash=sha256:{sha256_file(w)}\n" for w in wheels))
    write_project(ws.root / "web", registry, tree=_npm_tree())
    ws.write("BUILD.pyimg", BUILD)
    return ws


def _lock(ws: Workspace, index_url: str) -> None:
    ws.write("MODULE.pyimg", f"""
        pip_lock(name = "pypi", requirements = "requirements.txt", python_version = "3.11",
                 index_url = "{index_url}/simple")
        npm_lock(name = "npm", lock = "web/package-lock.json")
        """)
    r = ws.run("lock", "--disk-cache", str(ws.cache))
    assert r.code == 0, r.err


def _sbom(ws: Workspace, *args: str) -> bytes:
    r = subprocess.run([*PYIMG, "sbom", *ws.flags(), "//:image", *args], cwd=ws.root,
                       capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    return r.stdout


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Workspace, Path, Registry, bytes]:
    tmp = tmp_path_factory.mktemp("sbompkg")
    wheels = [
        make_wheel(tmp / "dist", Wheel(
            "mypkg", console_scripts={"mypkg-hello": "mypkg:main"}, requires=("helper",),
            files={"mypkg/__init__.py": b"def main():\n    pass\n",
                   "mypkg-1.0.data/data/share/mypkg/notes.txt": b"notes\n"},
            metadata=("License-Expression: Apache-2.0 OR MIT",))),
        # No licence declared at all.
        make_wheel(tmp / "dist", Wheel("helper")),
    ]
    publish_index(tmp / "www", wheels)
    with serve(Registry()) as registry, serve_index(tmp / "www") as index:
        ws = _workspace(tmp / "ws", tmp / "cache", tmp / "www", registry)
        _lock(ws, index.url)
        sbom = _sbom(ws, "-o", str(tmp / "sbom.json"))
        assert sbom == b""
        yield ws, tmp, registry, (tmp / "sbom.json").read_bytes()


def _contains(doc: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in doc["relationships"]:
        if r["relationshipType"] == "CONTAINS":
            out.setdefault(r["spdxElementId"], []).append(r["relatedSpdxElement"])
    return out


def _by_purl(doc: dict) -> dict[str, dict]:
    return {ref["referenceLocator"]: p for p in doc["packages"]
            for ref in p.get("externalRefs", []) if p["SPDXID"].startswith("SPDXRef-Package")}


def test_wheels_and_npm_packages_are_packages_with_purls_licences_and_files(built) -> None:
    ws, tmp, registry, data = built
    _validate_spdx(tmp / "sbom.json")
    doc = json.loads(data)
    purls = _by_purl(doc)
    assert sorted(purls) == [
        "pkg:npm/%40s/x@2.0.0", "pkg:npm/a@1.0.0", "pkg:npm/a@2.0.0", "pkg:npm/c@1.0.0",
        "pkg:npm/odd@0.1.0", "pkg:pypi/helper@1.0", "pkg:pypi/mypkg@1.0"]
    contains = _contains(doc)
    by_id = {f["SPDXID"]: f for f in doc["files"]}

    def files(p: dict) -> set[str]:
        return {by_id[f]["fileName"] for f in contains.get(p["SPDXID"], [])}

    def sums(p: dict) -> dict[str, str]:
        return {c["algorithm"]: c["checksumValue"] for c in p["checksums"]}

    # Wheels: METADATA's name, version and licence; the pinned sha256; installer's paths.
    mypkg, helper = purls["pkg:pypi/mypkg@1.0"], purls["pkg:pypi/helper@1.0"]
    wheel = tmp / "www/files/mypkg-1.0-py3-none-any.whl"
    assert (mypkg["name"], mypkg["versionInfo"]) == ("mypkg", "1.0")
    assert sums(mypkg) == {"SHA256": sha256_file(wheel)}
    assert mypkg["licenseDeclared"] == "Apache-2.0 OR MIT"
    assert helper["licenseDeclared"] == "NOASSERTION"
    # A loopback URL has a port, which SPDX's pattern refuses; the lock's URL is in CycloneDX.
    assert mypkg["downloadLocation"] == "NOASSERTION"
    site = "./usr/local/lib/python3.11/site-packages"
    assert files(mypkg) == {
        f"{site}/mypkg/__init__.py", "./usr/local/bin/mypkg-hello",
        "./usr/local/share/mypkg/notes.txt",
        *(f"{site}/mypkg-1.0.dist-info/{n}" for n in (
            "METADATA", "WHEEL", "entry_points.txt", "RECORD", "INSTALLER"))}
    assert files(helper) == {f"{site}/helper/__init__.py", *(
        f"{site}/helper-1.0.dist-info/{n}" for n in ("METADATA", "WHEEL", "RECORD", "INSTALLER"))}

    # npm: package.json's name and licence, the lock's SRI (sha512) and the tarball's sha256.
    x = purls["pkg:npm/%40s/x@2.0.0"]
    assert (x["name"], x["versionInfo"]) == ("@s/x", "2.0.0")
    tarball = registry.files["/@s/x/-/x-2.0.0.tgz"]
    sri = integrity(tarball)
    assert sums(x) == {"SHA256": hashlib.sha256(tarball).hexdigest(),
                       "SHA512": base64.b64decode(sri.split("-", 1)[1]).hex()}
    assert x["licenseDeclared"] == "(ISC OR Apache-2.0)"
    assert files(x) == {"./app/node_modules/@s/x/package.json", "./app/node_modules/@s/x/x.js"}
    assert purls["pkg:npm/c@1.0.0"]["licenseDeclared"] == "NOASSERTION"
    # The nested a@2 owns its files; c only its own.
    assert files(purls["pkg:npm/c@1.0.0"]) == {"./app/node_modules/c/package.json",
                                               "./app/node_modules/c/index.js"}
    assert files(purls["pkg:npm/a@2.0.0"]) == {
        "./app/node_modules/c/node_modules/a/package.json",
        "./app/node_modules/c/node_modules/a/index.js"}
    # A licence SPDX does not know: a LicenseRef with its text.
    odd = purls["pkg:npm/odd@0.1.0"]["licenseDeclared"]
    assert odd.startswith("LicenseRef-npm-SEE.LICENSE.IN.LICENSE.txt-")
    extracted = {x["licenseId"]: x for x in doc["hasExtractedLicensingInfos"]}
    assert "SEE LICENSE IN LICENSE.txt" in extracted[odd]["extractedText"]

    # Each layer contains its packages; every file of both layers is linked to exactly one
    # package, and the counts match the image's own tar listing.
    listing = _layer_listing(ws.out("image"))
    for n, names in ((0, {"mypkg", "helper"}), (1, {"a", "@s/x", "c", "odd"})):
        packages = [p for p in purls.values() if p["SPDXID"] in contains[f"SPDXRef-Layer-{n}"]]
        assert {p["name"] for p in packages} == names
        linked = [f for p in packages for f in files(p)]
        assert sorted(linked) == sorted(f"./{path}" for path, *_ in listing[n])
        assert len(linked) == len(set(linked))


def test_cyclonedx_lists_the_same_packages(built) -> None:
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    ws, tmp, registry, data = built
    cdx = _sbom(ws, "--format", "cyclonedx-json")
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(cdx.decode()) is None
    components = {c["purl"]: c for c in json.loads(cdx)["components"] if "purl" in c}
    x = components["pkg:npm/%40s/x@2.0.0"]
    assert x["licenses"] == [{"expression": "(ISC OR Apache-2.0)"}]
    assert {h["alg"] for h in x["hashes"]} == {"SHA-256", "SHA-512"}
    assert x["externalReferences"] == [
        {"type": "distribution", "url": registry.tarball_url(Pkg("@s/x", "2.0.0"))}]
    mypkg = components["pkg:pypi/mypkg@1.0"]
    assert mypkg["licenses"] == [{"expression": "Apache-2.0 OR MIT"}]
    assert mypkg["externalReferences"][0]["url"].endswith("/files/mypkg-1.0-py3-none-any.whl")
    assert "licenses" not in components["pkg:pypi/helper@1.0"]


def test_the_same_bytes_from_another_workspace(built) -> None:
    ws, tmp, registry, data = built
    other = Workspace(tmp / "elsewhere/ws2", tmp / "cache")
    for name in ("MODULE.pyimg", "pyimg.lock", "requirements.txt", "BUILD.pyimg",
                 "web/package.json", "web/package-lock.json"):
        other.write(name, (ws.root / name).read_text())
    assert _sbom(other) == data


def test_the_oci_sbom_rule_lists_the_same_packages(built) -> None:
    ws, tmp, registry, data = built
    r = ws.run("build", "//:image_sbom")
    assert r.code == 0, r.err
    # The download URLs, which only the lock knows, are loopback ones: SPDX has no room for
    # them (a port), so the rule's document is the command's to the byte.
    assert ws.out("image_sbom.spdx.json").read_bytes() == data


TWO_LAYERS = """\
load("@pyimg//rules:defs.bzl", "oci_image", "oci_sbom", "py_layer")

py_layer(name = "system", deps = ["@pypi//solo"], platform = "linux/amd64")
py_layer(name = "venv", deps = ["@pypi//solo"], platform = "linux/amd64", prefix = "/opt/venv")

oci_image(name = "image", tars = [":system", ":venv"], created = "2024-05-06T07:08:09Z")

oci_sbom(name = "image_sbom", image = ":image")
"""


def test_the_same_package_in_two_layers_owns_the_files_of_each(tmp_path: Path) -> None:
    """One wheel installed by two layers at two prefixes: one package, contained by both
    layers, owning the files each layer installed (SPDX), found in both (CycloneDX: evidence
    of each file); the oci_sbom rule says the same."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    wheel = make_wheel(tmp_path / "dist", Wheel("solo", files={"solo/__init__.py": b"x = 1\n"}))
    publish_index(tmp_path / "www", [wheel])
    ws = Workspace(tmp_path / "ws", tmp_path / "cache")
    ws.write("requirements.txt", f"solo==1.0 --hash=sha256:{sha256_file(wheel)}\n")
    ws.write("BUILD.pyimg", TWO_LAYERS)
    with serve_index(tmp_path / "www") as index:
        ws.write("MODULE.pyimg", f"""
            pip_lock(name = "pypi", requirements = "requirements.txt", python_version = "3.11",
                     index_url = "{index.url}/simple")
            """)
        r = ws.run("lock", "--disk-cache", str(ws.cache))
        assert r.code == 0, r.err
        data = _sbom(ws, "-o", str(tmp_path / "sbom.json"))
        assert data == b""
        cdx = _sbom(ws, "--format", "cyclonedx-json")
        r = ws.run("build", "//:image_sbom")
        assert r.code == 0, r.err
    _validate_spdx(tmp_path / "sbom.json")
    data = (tmp_path / "sbom.json").read_bytes()
    assert ws.out("image_sbom.spdx.json").read_bytes() == data
    doc = json.loads(data)
    (solo,) = _by_purl(doc).values()
    contains = _contains(doc)
    by_id = {f["SPDXID"]: f for f in doc["files"]}
    owned = [by_id[f]["fileName"] for f in contains[solo["SPDXID"]]]
    listing = _layer_listing(ws.out("image"))
    assert len(listing) == 2
    for n, prefix in ((0, "usr/local"), (1, "opt/venv")):
        assert solo["SPDXID"] in contains[f"SPDXRef-Layer-{n}"]
        paths = [f"./{path}" for path, *_ in listing[n]]
        assert paths and all(p.startswith(f"./{prefix}/") for p in paths)
        # Every file of the layer is the package's (each once).
        assert sorted(p for p in owned if p.startswith(f"./{prefix}/")) == sorted(paths)
    assert len(owned) == len(set(owned)) == sum(len(files) for files in listing)

    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(cdx.decode()) is None
    bom = json.loads(cdx)
    (component,) = [c for c in bom["components"] if c.get("purl") == "pkg:pypi/solo@1.0"]
    files = {f["bom-ref"]: f["name"] for c in bom["components"] if c["bom-ref"].startswith("layer:")
             for f in c["components"]}
    found = [o["location"] for o in component["evidence"]["occurrences"]]
    assert sorted(found) == sorted(
        f"layer {n}: ./{path}" for n, files_of in enumerate(listing) for path, *_ in files_of)
    assert len(files) == len(found)
    layers = {d["ref"]: d["dependsOn"] for d in bom["dependencies"]}
    assert layers["layer:0"] == layers["layer:1"] == [component["bom-ref"]]
