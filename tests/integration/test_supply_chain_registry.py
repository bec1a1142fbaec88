"""SBOM and provenance of an image on an `oci_pull` base from a real docker-registry: the base as
a `pkg:oci` package, its layers' files read from the lazily fetched blobs, the `oci_sbom` rule
writing the same document, and the base in the provenance's resolvedDependencies."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

sys.path.insert(0, str(Path(__file__).parent / "registry"))
from regtestlib import start_registry  # noqa: E402
from workspace_helpers import Workspace  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(autouse=True)
def _no_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))


def test_sbom_and_provenance_of_an_image_on_a_pulled_base(registry, tmp_path: Path) -> None:
    base = Workspace(tmp_path / "base", tmp_path / "cache1")
    base.write("hello.txt", "hello\n")
    base.write("BUILD.pyimg", f"""\
        pkg_tar(name = "layer", srcs = ["hello.txt"], package_dir = "/app")
        oci_image(name = "image", tars = [":layer"])
        oci_push(name = "push", image = ":image", repository = "{registry.host}/team/base")
        """)
    r = base.run("run", "//:push")
    assert r.code == 0, r.err
    digest = r.out.strip().splitlines()[-1]

    ws = Workspace(tmp_path / "ws", tmp_path / "cold")
    ws.write("MODULE.pyimg", f'oci_pull(name = "base", image = "{registry.host}/team/base", '
                             f'digest = "{digest}")\n')
    ws.write("x.txt", "x\n")
    ws.write("BUILD.pyimg", """\
        load("@pyimg//rules:defs.bzl", "oci_sbom")
        pkg_tar(name = "layer", srcs = ["x.txt"])
        oci_image(name = "image", base = "@base", tars = [":layer"])
        oci_sbom(name = "sbom", image = ":image")
        """)
    r = ws.run("sbom", *ws.flags(), "//:image")
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    purl = (f"pkg:oci/base@{quote(digest, safe='')}?repository_url="
            f"{quote(registry.host, safe=':')}/team/base")
    (pulled,) = [p for p in doc["packages"]
                 if p.get("externalRefs", [{}])[0].get("referenceLocator") == purl]
    layers = [p for p in doc["packages"] if p["SPDXID"].startswith("SPDXRef-Layer")]
    assert [p["sourceInfo"] for p in layers] == ["made by @base//:base", "made by //:layer"]
    assert {"spdxElementId": "SPDXRef-Layer-0", "relationshipType": "CONTAINS",
            "relatedSpdxElement": pulled["SPDXID"]} in doc["relationships"]
    assert sorted(f["fileName"] for f in doc["files"]) == ["./app/hello.txt", "./x.txt"]

    r = ws.run("build", "//:sbom")
    assert r.code == 0, r.err
    assert ws.out("sbom.spdx.json").read_text() == json.dumps(
        doc, sort_keys=True, separators=(",", ":")) + "\n"

    r = ws.run("provenance", *ws.flags(), "//:image")
    assert r.code == 0, r.err
    deps = json.loads(r.out)["predicate"]["buildDefinition"]["resolvedDependencies"]
    assert deps == [{"name": "base", "uri": f"oci://{registry.host}/team/base@{digest}",
                     "digest": {"sha256": digest[7:]}}]
