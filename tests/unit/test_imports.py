"""The package map of docs/architecture.md: which package may import which, lazily or not."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "engine" / "pyimg"

# The top-level modules every package may import.
EVERYWHERE = {"errors", "labels"}
# Each package and what it may import besides itself and EVERYWHERE. `cli` may import anything.
ALLOWED = {
    "core": set(),
    "oci": {"core"},
    "registry": {"oci", "core"},
    "actions": {"oci", "core"},
    # The REAPI client sits beside core's executor seam (core/remote_cache.py), below build.
    "remote": {"core"},
    # Platform values (os, architecture, variant) are checked against oci/platforms.py.
    "loading": {"oci", "core"},
    "analysis": {"loading", "oci", "core"},
    "external": {"loading", "registry", "oci", "core"},
    # signatures and attestations of images in registries (docs/supply-chain.md).
    "signing": {"registry", "oci", "core"},
    "query": {"analysis", "external", "loading", "actions", "registry", "oci", "core"},
    # aquery keys actions as the build does, over what a query selects; oci_push signs what it
    # pushed when the target names a key; remote caching and execution when a flag asks.
    "build": {
        "query", "analysis", "external", "loading", "actions", "registry", "remote", "signing",
        "oci", "core",
    },
    # audit runs builds (in a subprocess) and reads the build records they leave.
    "audit": {
        "build", "analysis", "external", "loading", "actions", "registry", "remote", "signing",
        "oci", "core",
    },
}
TOP_LEVEL_MODULES = {"__init__", "errors", "labels"}
# The modules protoc makes from the REAPI protos (tools/gen_reapi_protos.py): each defines its
# own DESCRIPTOR, and none is ours to shape.
GENERATED = PKG / "remote" / "_proto"
STARLARK_USERS = {"loading", "analysis"}


def _imports(path: Path) -> list[str]:
    """Every module `path` imports, at the top or inside a function, relative imports resolved."""
    package = ".".join(("pyimg", *path.relative_to(PKG).parent.parts))
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names.append(module)
            # `from pyimg import x` and `from pyimg.oci import media_types` import submodules too.
            names += [f"{module}.{a.name}" for a in node.names]
    return names


def _package(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "pyimg" or len(parts) < 2:
        return None
    return parts[1]


def test_every_package_is_named():
    packages = {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in PKG.glob("*.py")}
    assert packages == set(ALLOWED) | {"cli"}
    assert modules == TOP_LEVEL_MODULES


def test_packages_import_only_what_they_may():
    known = set(ALLOWED) | {"cli"} | TOP_LEVEL_MODULES - {"__init__"}
    bad = []
    for layer, allowed in ALLOWED.items():
        may = allowed | EVERYWHERE | {layer}
        for path in (PKG / layer).rglob("*.py"):
            for module in _imports(path):
                target = _package(module)
                if target is not None and target in known and target not in may:
                    bad.append(f"{path.relative_to(PKG)} imports {module}")
    assert bad == []


def test_top_level_modules_import_no_package():
    bad = [
        f"{name}.py imports {module}"
        for name in EVERYWHERE
        for module in _imports(PKG / f"{name}.py")
        if _package(module) not in (None, "__version__")
    ]
    assert bad == []


def test_only_loading_and_analysis_import_starlark():
    offenders = [
        str(p.relative_to(PKG))
        for p in PKG.rglob("*.py")
        if p.relative_to(PKG).parts[0] not in STARLARK_USERS
        and any(m == "starlark" or m.startswith("starlark.") for m in _imports(p))
    ]
    assert offenders == []


def test_every_init_is_free_of_imports():
    # Importing a package must cost nothing: start-up time is part of every command's latency.
    offenders = [
        str(p.relative_to(PKG))
        for p in PKG.rglob("__init__.py")
        if any(isinstance(n, ast.Import | ast.ImportFrom) for n in ast.walk(ast.parse(p.read_text())))
    ]
    assert offenders == []


def test_every_module_states_its_responsibility():
    missing = [
        str(p.relative_to(PKG))
        for p in PKG.rglob("*.py")
        if not ast.get_docstring(ast.parse(p.read_text()))
    ]
    assert missing == []


def test_module_docstrings_cite_nothing_outside_the_repository():
    # The engine, its tests and tools cite docs/ pages, never a spec or an issue tracker.
    outside = ("SPEC", "DESIGN.md", "issue ")
    offenders = [
        str(p.relative_to(PKG.parents[1]))
        for tree in ("engine", "tests", "tools")
        for p in (PKG.parents[1] / tree).rglob("*.py")
        if any(word in (ast.get_docstring(ast.parse(p.read_text())) or "") for word in outside)
    ]
    assert offenders == []


def test_no_function_imports_what_its_module_imports_at_the_top():
    # A deferred import is for start-up time; repeating one the module already made is noise.
    offenders = []
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text())
        top = {
            (node.module, alias.name)
            for node in tree.body
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        } | {(None, alias.name) for node in tree.body if isinstance(node, ast.Import)
             for alias in node.names}
        top_modules = {module for module, _ in top if module}
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module in top_modules:
                    offenders.append(f"{path.relative_to(PKG)}:{inner.lineno} {inner.module}")
                elif isinstance(inner, ast.Import) and any(
                    (None, a.name) in top for a in inner.names
                ):
                    offenders.append(f"{path.relative_to(PKG)}:{inner.lineno}")
    assert offenders == []


# Names defined in several modules on purpose: type variables are local to their module, and
# cli/query.py repeats the output formats of query/serve.py, which registering the command must
# not import (start-up time).
SHARED_NAMES = {"T", "QUERY_OUTPUTS"}


def test_one_owner_per_concept():
    # A public class, function or constant is defined once: a second Platform, Layout or REF_NAME
    # drifts from the first (docs/architecture.md, "Layout").
    owners: dict[str, list[str]] = {}
    for path in sorted(PKG.rglob("*.py")):
        if GENERATED in path.parents:
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef | ast.FunctionDef):
                names = [node.name]
            elif isinstance(node, ast.Assign):
                names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                names = [node.target.id]
            else:
                continue
            for name in names:
                if not name.startswith("_") and name not in SHARED_NAMES:
                    owners.setdefault(name, []).append(str(path.relative_to(PKG)))
    assert {name: paths for name, paths in owners.items() if len(paths) > 1} == {}


# The switches a user sets, read once by cli/ and passed down typed (docs/architecture.md).
# PYIMG_SECRET_<id> is not one: the sandbox sets it for a command, nothing reads it.
_NOT_SWITCHES = ("PYIMG_SECRET_",)


def _environ_reads(path: Path) -> list[str]:
    """Each `PYIMG_*` name that `path` reads from the process environment: `os.environ[...]`,
    `.get()`/`.pop()`, `in os.environ`, `os.getenv()`, also through a module constant holding the
    name, an f-string starting with it, or a local name bound to `os.environ`."""
    tree = ast.parse(path.read_text())
    constants = {
        t.id: n.value.value
        for n in tree.body if isinstance(n, ast.Assign)
        and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
        for t in n.targets if isinstance(t, ast.Name)
    }

    def is_os_environ(node: ast.AST) -> bool:
        return (isinstance(node, ast.Attribute) and node.attr in ("environ", "environb")
                and isinstance(node.value, ast.Name) and node.value.id == "os")

    aliases = {
        a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
        and n.module == "os" for a in n.names if a.name in ("environ", "environb")}
    for n in ast.walk(tree):
        if isinstance(n, ast.Assign) and any(is_os_environ(x) for x in ast.walk(n.value)):
            aliases |= {t.id for t in n.targets if isinstance(t, ast.Name)}

    def is_environ(node: ast.AST) -> bool:
        return is_os_environ(node) or isinstance(node, ast.Name) and node.id in aliases

    def name(key: ast.AST) -> str | None:
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            return key.value
        if isinstance(key, ast.Name):
            return constants.get(key.id)
        if isinstance(key, ast.JoinedStr) and key.values:
            return name(key.values[0])
        return None

    keys: list[ast.AST] = []
    for n in ast.walk(tree):
        if isinstance(n, ast.Subscript) and is_environ(n.value):
            keys.append(n.slice)
        elif isinstance(n, ast.Call) and n.args:
            f = n.func
            if (isinstance(f, ast.Attribute) and f.attr in ("get", "pop") and is_environ(f.value)
                    or isinstance(f, ast.Attribute) and f.attr == "getenv"
                    or isinstance(f, ast.Name) and f.id == "getenv"):
                keys.append(n.args[0])
        elif isinstance(n, ast.Compare) and any(isinstance(op, ast.In | ast.NotIn) for op in n.ops):
            if any(is_environ(c) for c in n.comparators):
                keys.append(n.left)
    found = [k for k in map(name, keys) if k is not None]
    return [k for k in found if k.startswith("PYIMG_") and not k.startswith(_NOT_SWITCHES)]


def _switch_readers(root: Path) -> list[str]:
    return [
        f"{p.relative_to(root)} reads {name}"
        for p in sorted(root.rglob("*.py")) if p.relative_to(root).parts[0] != "cli"
        for name in _environ_reads(p)
    ]


def test_only_cli_reads_pyimg_switches():
    assert _switch_readers(PKG) == []


def test_the_switch_check_sees_every_form_of_read(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "m.py").write_text(
        "import os\nfrom os import environ as env, getenv\nSEED = 'PYIMG_SEED'\n"
        "e = os.environ\n"
        "a = os.environ.get('PYIMG_A')\nb = env['PYIMG_B']\nc = 'PYIMG_C' in os.environ\n"
        "d = getenv('PYIMG_D')\nx = os.environ.get(SEED)\nf = e.get(f'PYIMG_F{a}')\n"
        "g = os.environ.get('HOME')\nh = {'PYIMG_SECRET_x': 1}\ni = os.environ['PYIMG_SECRET_y']\n")
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "main.py").write_text("import os\nos.environ.get('PYIMG_OK')\n")
    assert sorted(_switch_readers(tmp_path)) == [
        f"core/m.py reads PYIMG_{n}" for n in ["A", "B", "C", "D", "F", "SEED"]]
