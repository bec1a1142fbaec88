"""The wheel and the sdist ship every Starlark file pyimg needs (checked without building them)."""

from __future__ import annotations

from pathlib import Path

from hatchling.builders.sdist import SdistBuilder  # the build backend (pyproject.toml)
from hatchling.builders.wheel import WheelBuilder
from workspace_helpers import REPO

ENGINE = REPO / "engine" / "pyimg"
RULES = REPO / "rules"


def _source_files(root: Path, suffix: str) -> set[Path]:
    return {p for p in root.rglob(f"*{suffix}") if "__pycache__" not in p.parts}


def _wheel_files() -> dict[str, Path]:
    """Path inside the wheel -> the source file it is copied from."""
    builder = WheelBuilder(str(REPO))
    return {f.distribution_path: Path(f.path) for f in builder.recurse_included_files()}


def _installed_path(source: Path) -> str:
    """Where an installed pyimg reads `source` from (see pyimg.starlark.loading.rules_dir)."""
    if source.is_relative_to(RULES):
        return f"pyimg/_rules/{source.relative_to(RULES).as_posix()}"
    return f"pyimg/{source.relative_to(ENGINE).as_posix()}"


def test_wheel_holds_every_starlark_file_where_the_loader_looks():
    bzl = _source_files(ENGINE, ".bzl") | _source_files(RULES, ".bzl")
    assert any(p.name == "prelude.bzl" for p in bzl) and RULES / "defs.bzl" in bzl
    shipped = {name: src for name, src in _wheel_files().items() if name.endswith(".bzl")}
    assert shipped == {_installed_path(p): p for p in bzl}


def test_wheel_holds_every_engine_module():
    shipped = {name for name in _wheel_files() if name.endswith(".py")}
    assert shipped == {_installed_path(p) for p in _source_files(ENGINE, ".py")}


def test_sdist_holds_every_starlark_file_and_what_the_wheel_is_built_from():
    builder = SdistBuilder(str(REPO))
    shipped = {f.distribution_path for f in builder.recurse_included_files()}
    wanted = _source_files(ENGINE, ".bzl") | _source_files(RULES, ".bzl")
    wanted |= _source_files(ENGINE, ".py") | {REPO / "README.md"}  # (pyproject.toml always is)
    assert {p.relative_to(REPO).as_posix() for p in wanted} <= shipped
