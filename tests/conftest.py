"""Shared fixtures for unit and integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from workspace_helpers import Workspace


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path / "ws", tmp_path / "cache")
