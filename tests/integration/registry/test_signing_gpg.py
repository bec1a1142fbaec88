"""GPG simple signing: `pyimg sign --gpg-key` writes lookaside signatures that skopeo and podman
enforce under their usual `signedBy` policy, and a tampered or misplaced signature is refused.
(Debian's skopeo/podman have sigstore compiled out; this is the format they do verify.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
from debian_fixtures import SigningKey  # noqa: E402
from pyimg.registry.client import RegistryClient  # noqa: E402
from realtools import podman_env, require  # noqa: E402
from regtestlib import make_image  # noqa: E402
from test_signing import pyimg  # noqa: E402

pytestmark = pytest.mark.slow

UID = "pyimg signer <signer@example.invalid>"


def _policy(path: Path, scope: str, keyring: Path) -> Path:
    path.write_text(json.dumps({
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {scope: [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(keyring)}]}
        },
    }))
    return path


def _skopeo_copy(policy: Path, registries_d: Path, src: str, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", "--policy", str(policy), "--registries.d", str(registries_d), "copy",
         "--remove-signatures", "--src-tls-verify=false", f"docker://{src}", f"oci:{dest}:v1"],
        capture_output=True, text=True, timeout=120,
    )


def test_skopeo_and_podman_enforce_pyimg_gpg_signatures(
    registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    require("gpg", "skopeo")
    key = SigningKey(tmp_path / "gnupg", UID)
    monkeypatch.setenv("GNUPGHOME", str(key.home))
    keyring = tmp_path / "signer.gpg"
    keyring.write_bytes(key.keyring())
    images = {}
    client = RegistryClient()
    for name, content in (("signed", b"signed\n"), ("unsigned", b"unsigned\n"), ("moved", b"moved\n")):
        make_image(tmp_path / name, tag="v1", layers=[{"f.txt": content}])
        ref = f"{registry.host}/gpg/{name}:v1"
        images[name] = (ref, client.push_layout(tmp_path / name, ref))
    client.close()
    lookaside = tmp_path / "lookaside"
    for name in ("signed", "moved"):
        r = pyimg("sign", images[name][0], "--gpg-key", "signer@example.invalid",
                  "--lookaside", str(lookaside))
        assert r.code == 0, r.err
    signature = Path(r.out.strip())
    assert signature.name == "signature-1"
    assert signature.parent.name == f"moved@sha256={images['moved'][1].hex}"

    registries_d = tmp_path / "registries.d"
    registries_d.mkdir()
    (registries_d / "pyimg.yaml").write_text(
        f"docker:\n  {registry.host}:\n    lookaside: file://{lookaside}\n"
    )
    policy = _policy(tmp_path / "policy.json", f"{registry.host}/gpg", keyring)

    ok = _skopeo_copy(policy, registries_d, images["signed"][0], tmp_path / "out-signed")
    assert ok.returncode == 0, ok.stderr
    unsigned = _skopeo_copy(policy, registries_d, images["unsigned"][0], tmp_path / "out-unsigned")
    assert unsigned.returncode != 0 and "rejected" in unsigned.stderr, unsigned.stderr
    # The signature of another image, placed where this one's would be: its digest is not this.
    moved_dir = lookaside / "gpg" / f"unsigned@sha256={images['unsigned'][1].hex}"
    moved_dir.mkdir(parents=True)
    shutil.copy(signature, moved_dir / "signature-1")
    misplaced = _skopeo_copy(policy, registries_d, images["unsigned"][0], tmp_path / "out-moved")
    assert misplaced.returncode != 0 and "rejected" in misplaced.stderr, misplaced.stderr
    # One flipped bit in the signature.
    data = bytearray(signature.read_bytes())
    data[len(data) // 2] ^= 1
    signature.write_bytes(bytes(data))
    tampered = _skopeo_copy(policy, registries_d, images["moved"][0], tmp_path / "out-tampered")
    assert tampered.returncode != 0 and "rejected" in tampered.stderr, tampered.stderr
    # Another key in the policy: pyimg's signature no longer counts.
    stranger = SigningKey(tmp_path / "stranger", "stranger <stranger@example.invalid>")
    (tmp_path / "stranger.gpg").write_bytes(stranger.keyring())
    other_policy = _policy(tmp_path / "other.json", f"{registry.host}/gpg", tmp_path / "stranger.gpg")
    refused = _skopeo_copy(other_policy, registries_d, images["signed"][0], tmp_path / "out-other")
    assert refused.returncode != 0 and "rejected" in refused.stderr, refused.stderr

    # podman reads the policy and registries.d of $HOME/.config/containers when they exist.
    if shutil.which("podman") is None:
        return
    home = tmp_path / "home"
    config = home / ".config" / "containers"
    (config / "registries.d").mkdir(parents=True)
    shutil.copy(policy, config / "policy.json")
    shutil.copy(registries_d / "pyimg.yaml", config / "registries.d" / "pyimg.yaml")
    env = {**podman_env(tmp_path / "podman"), "HOME": str(home)}
    env.pop("DOCKER_CONFIG", None)  # the conftest's empty one: podman insists on its file

    def pull(ref: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["podman", "pull", "--tls-verify=false", ref],
                              capture_output=True, text=True, env=env, timeout=180)

    pulled = pull(images["signed"][0])
    assert pulled.returncode == 0, pulled.stderr
    assert images["signed"][1].hex in subprocess.run(
        ["podman", "images", "--digests", "--format", "{{.Digest}}"],
        capture_output=True, text=True, env=env, check=True,
    ).stdout
    refused_pull = pull(images["unsigned"][0])
    assert refused_pull.returncode != 0 and "rejected" in refused_pull.stderr, refused_pull.stderr
