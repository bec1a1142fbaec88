"""Fixtures for registry integration tests: a real docker-registry on loopback."""

from __future__ import annotations

from pathlib import Path

import pytest
from regtestlib import htpasswd_line, start_registry


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory):
    reg = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.stop()


@pytest.fixture(autouse=True)
def _no_docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The developer's own ~/.docker/config.json must not change what a test sees.
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("basic-registry")
    (root / "htpasswd").write_text(htpasswd_line("alice", "wonderland") + "\n")
    reg = start_registry(
        root, f"auth:\n  htpasswd:\n    realm: test-realm\n    path: {root / 'htpasswd'}\n"
    )
    yield reg
    reg.stop()
