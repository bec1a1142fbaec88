"""The secrets example of docs/sandbox-secrets-caches.md works as written: offline, a release
tarball signed in the sandbox with a key given by --secret, verifiable and reproducible."""

from __future__ import annotations

import re
import shutil
import subprocess
import textwrap

import pytest
from workspace_helpers import REPO, Workspace

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


def _example() -> tuple[str, list[str]]:
    """The BUILD file and the console lines of the "Secrets" section."""
    doc = (REPO / "docs/sandbox-secrets-caches.md").read_text()
    section = doc[doc.index("## Secrets\n"):]
    build = re.search(r"```python\n(.*?)```", section, re.S)
    console = re.search(r"```console\n(.*?)```", section, re.S)
    assert build and console
    return build.group(1), console.group(1).splitlines()


def _openssl(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=True)


def test_the_documented_signing_example_builds_offline_and_verifies(ws, tmp_path):
    build, console = _example()
    assert build.startswith("# release/BUILD.pyimg\n")
    ws.write("release/BUILD.pyimg", build)
    (ws.root / "release" / "app.tar").write_bytes(b"the release\n" * 100)
    key, public = tmp_path / "release.pem", ws.root / "release.pub"
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(key))
    _openssl("pkey", "-in", str(key), "-pubout", "-out", str(public))

    missing = ws.run("build", "//release:signature")
    assert missing.code == 2
    documented = textwrap.dedent(re.search(r"is an error before anything runs.*?\n\n(.*?)\n\n",
                                           (REPO / "docs/sandbox-secrets-caches.md").read_text(),
                                           re.S).group(1))
    assert " ".join(missing.err.split()) == "ERROR: " + " ".join(documented.split())

    assert console[0].startswith("$ pyimg build //release:signature --secret id=signing_key,src=")
    r = ws.run("build", "//release:signature", "--secret", f"id=signing_key,src={key}")
    assert r.code == 0, r.err
    verify = console[2].removeprefix("$ openssl ").split()
    assert _openssl(*verify, cwd=ws.root).stdout.strip() == console[3] == "Verified OK"

    # Reproducible: another cache, another checkout, the same signature bytes.
    other = Workspace(tmp_path / "other", tmp_path / "other-cache")
    shutil.copytree(ws.root / "release", other.root / "release")
    assert other.run("build", "//release:signature", "--secret", f"id=signing_key,src={key}").code == 0
    assert other.out("release/app.tar.sig").read_bytes() == ws.out("release/app.tar.sig").read_bytes()
