"""The import direction of DESIGN.md: cli -> starlark, actions, registry -> oci -> core."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "engine" / "pyimg"
ALLOWED = {
    "core": {"core"},
    "oci": {"core", "oci"},
    "registry": {"core", "oci", "registry"},
    "actions": {"core", "oci", "actions"},
    "starlark": {"core", "oci", "starlark"},  # docs/architecture.md: starlark -> oci -> core
}


def test_layers_import_only_downwards():
    bad = []
    for layer, allowed in ALLOWED.items():
        for path in (PKG / layer).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names = [node.module]
                for name in names:
                    parts = name.split(".")
                    if parts[0] == "pyimg" and len(parts) > 1 and parts[1] not in allowed:
                        bad.append(f"{path.relative_to(PKG)} imports {name}")
    assert bad == []


def test_only_starlark_imports_starlark():
    offenders = [
        str(p.relative_to(PKG))
        for p in PKG.rglob("*.py")
        if "starlark" not in p.relative_to(PKG).parts[:1]
        and any(
            (isinstance(n, ast.Import) and any(a.name == "starlark" for a in n.names))
            or (isinstance(n, ast.ImportFrom) and n.module == "starlark")
            for n in ast.walk(ast.parse(p.read_text()))
        )
    ]
    assert offenders == []


def test_every_module_states_its_responsibility():
    missing = [
        str(p.relative_to(PKG))
        for p in PKG.rglob("*.py")
        if not ast.get_docstring(ast.parse(p.read_text()))
    ]
    assert missing == []
