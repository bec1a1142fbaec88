"""Loading: finds the workspace, evaluates BUILD and .bzl files, and records targets with origins.

Each .bzl file is evaluated once per build and shared frozen (so provider identities are stable).
BUILD files see the prelude's builtins and the rules of `rules/defs.bzl` without a `load()`.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import starlark as sl

from pyimg.core.confinement import Confinement
from pyimg.core.digest import digest_bytes
from pyimg.core.workspace import find_workspace
from pyimg.errors import SourceLinkError, UserInputError
from pyimg.labels import Label, LabelError, Pattern, check_rule_name, parse_label
from pyimg.loading._eval import (
    Frame,
    SourceFile,
    edge_frame,
    evaluate,
    export_alias,
    parse_stack,
    prepare_source,
    render_error,
)
from pyimg.loading.inputs import LoadingRecord, find_build_file, find_packages, glob_package
from pyimg.loading.limits import decode_source

__all__ = [
    "Loader",
    "argument_origin_on_disk",
    "Package",
    "RuleClass",
    "Target",
    "find_workspace",
    "package_key",
    "rules_dir",
]

PRELUDE = "@pyimg//:prelude.bzl"
RULES_DEFS = "@pyimg//rules:defs.bzl"
PRELUDE_BUILTINS = [
    "DefaultInfo", "Label", "attr", "depset", "exports_files", "existing_rules", "glob", "native",
    "package", "package_name", "provider", "pyimg_attr__", "repository_name", "rule", "select",
]  # fmt: skip
# The rules every BUILD file sees; a unit test checks that rules/defs.bzl exports each.
BUILD_RULES = [
    "filegroup", "genrule", "host_tool", "oci_image", "oci_image_index", "oci_layout",
    "oci_load", "oci_push", "pkg_tar",
]  # fmt: skip
COMMON_ATTRS = {"visibility", "tags", "testonly", "features", "deprecation", "compatible_with",
                "target_compatible_with", "exec_compatible_with", "licenses"}  # fmt: skip


def rules_dir() -> Path:
    """The bundled Starlark rules: `pyimg/_rules` when installed from a wheel, else `rules/` of
    the source checkout (an editable install)."""
    here = Path(__file__).resolve()
    installed = here.parents[1] / "_rules"
    # The wheel's copy first: an installed pyimg must never pick up a `rules/` that happens to
    # sit a few directories above its site-packages.
    if (installed / "defs.bzl").is_file():
        return installed
    return here.parents[3] / "rules"


@dataclass
class RuleClass:
    rid: str  # "<file label>%<name>"
    name: str
    module: str  # the load() string of the defining file
    attrs: dict[str, dict[str, Any]]
    doc: str
    origin: str
    # Configuration fragments the implementation reads: ("platform",) for a rule whose analysis
    # depends on the target platform (analysis/configuration.py).
    fragments: tuple[str, ...] = ()


@dataclass
class Target:
    label: Label
    rule: RuleClass
    attrs: dict[str, Any]  # normalized: labels as strings (absolute)
    origin: str  # BUILD file:line of the call
    visibility: list[str]
    attr_origins: dict[str, str] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.rule.name.lstrip("_")


@dataclass
class Package:
    name: str
    build_file: Path
    build_display: str
    targets: dict[str, Target] = field(default_factory=dict)
    default_visibility: list[str] | None = None
    repo: str = ""  # "" for the main workspace, else the external repository's name


def _split_origin(origin: str) -> tuple[str, int, int] | None:
    """("file", line, col) of "file:line:col", or None for another form ("<unknown>")."""
    parts = origin.rsplit(":", 2)
    if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
        return parts[0], int(parts[1]), int(parts[2])
    return None


def argument_origin_on_disk(workspace: Path, call_origin: str, name: str) -> str:
    """`Loader.argument_origin` for a BUILD file this process has not loaded (its analysis came
    from the cache): the file is read from the workspace; the call's origin when it cannot be."""
    split = _split_origin(call_origin)
    if split is None:
        return call_origin
    file, line, col = split
    try:
        text = (workspace / file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return call_origin
    at = SourceFile(file, text).argument_position(line, col, name)
    return f"{file}:{at[0]}:{at[1]}" if at else call_origin


def package_key(repo: str, package: str) -> str:
    """The key of `Loader.packages`: the plain package name in the main workspace (so existing
    callers keep working), `@repo//package` in an external repository."""
    return f"@{repo}//{package}" if repo else package


class _Abort(Exception):
    """Raised inside a Python callable after recording a user error, to unwind Starlark."""


class Loader:
    """Loads packages of one workspace. Not thread-safe: Starlark evaluation is sequential."""

    def __init__(
        self, workspace: Path, repositories: Callable[[str, str | None], Path] | None = None
    ) -> None:
        self.workspace = workspace
        # External repository name (and the origin asking) -> its materialized root directory.
        self._repositories = repositories
        self._repo_roots: dict[str, Path] = {}
        self.rules_root = rules_dir()
        self.sources: dict[str, SourceFile] = {}
        self.modules: dict[str, sl.FrozenModule] = {}
        # (load() string, id of the module evaluating it) -> what `_resolve_module` resolved it
        # to: every analysis evaluation loads the prelude, its rule's and its providers' files.
        self._resolved: dict[tuple[str, str], tuple[str, Path, str]] = {}
        self.packages: dict[str, Package] = {}
        self.rules: dict[str, RuleClass] = {}
        self.providers: dict[str, tuple[str, str]] = {}  # pid -> (module, exported alias)
        self.read_files: dict[str, str] = {}  # display name -> sha256 (for the analysis cache)
        self.read_paths: dict[str, Path] = {}  # display name -> the file on disk
        # (package, include, exclude, result) of each glob() in the workspace (not in external
        # repositories): the persisted loading and analysis re-run them to validate.
        self.globs: list[tuple[str, tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = []
        # Sources must resolve inside the workspace; the workspace files checked so far (the
        # analysis cache checks them again before it is reused).
        self.confinement = Confinement(workspace)
        self.source_files: set[str] = set()
        self._eval_stack: list[tuple[str, str]] = []  # (module id, display name)
        # Display name of a file evaluated -> every .bzl file it loaded, directly or not (an
        # ordered set): what a persisted package depends on (loading/package_store.py).
        self.loaded_by: dict[str, dict[str, None]] = {}
        self._package: Package | None = None
        self._pending: UserInputError | None = None
        self.on_analysis_call: dict[str, Callable[..., Any]] = {}
        self._loader = sl.FileLoader(self._load_for_starlark)

    # -- files -------------------------------------------------------------------------------

    def _resolve_module(self, module: str) -> tuple[str, Path, str]:
        """A load() string -> (canonical module id, file path, display name)."""
        key = (module, self._eval_stack[-1][0] if self._eval_stack else "")
        resolved = self._resolved.get(key)
        if resolved is None:
            resolved = self._resolved[key] = self._resolve_module_uncached(module)
        return resolved

    def _resolve_module_uncached(self, module: str) -> tuple[str, Path, str]:
        if module == PRELUDE:
            path = Path(__file__).with_name("prelude.bzl")
            return PRELUDE, path, "@pyimg/prelude.bzl"
        current_repo = ""
        current_pkg = ""
        if self._eval_stack:
            current_id = self._eval_stack[-1][0]
            if current_id.startswith("@"):
                current_repo, _, rest = current_id[1:].partition("//")
                current_pkg = rest.split(":")[0]
            else:
                current_pkg = current_id[2:].split(":")[0]
        try:
            label = parse_label(module, current_pkg, current_repo)
        except LabelError as e:
            raise self._fail(str(e), module) from None
        if not label.name.endswith(".bzl"):
            raise self._fail(f"load() of '{module}': only .bzl files can be loaded", module)
        if label.repo == "pyimg":
            rel = Path(label.package) / label.name
            if label.package != "rules" and not label.package.startswith("rules/"):
                raise self._fail(f"load() of '{module}': @pyimg has only //rules/...", module)
            path = self.rules_root / rel.relative_to("rules")
            return f"@pyimg//{label.package}:{label.name}", path, f"@pyimg/{rel.as_posix()}"
        rel = Path(label.package) / label.name
        if label.repo:
            try:
                root = self.repo_root(label.repo, self._load_origin(module))
            except UserInputError as e:
                raise self._fail(f"load() of '{module}': {e.message}", module) from None
            display = f"external/{label.repo}/{rel.as_posix()}"
            return f"@{label.repo}//{label.package}:{label.name}", root / rel, display
        return f"//{label.package}:{label.name}", self.workspace / rel, rel.as_posix()

    def _fail(self, message: str, module: str) -> UserInputError:
        return UserInputError(message, origin=self._load_origin(module))

    def _load_origin(self, module: str) -> str | None:
        """file:line:col of the load() of `module` in the file being evaluated (the file alone
        when the statement cannot be found)."""
        if not self._eval_stack:
            return None
        display = self._eval_stack[-1][1]
        src = self.sources.get(display)
        at = src.load_position(module) if src is not None else None
        return f"{display}:{at[0]}:{at[1]}" if at else display

    def _load_for_starlark(self, module: str) -> sl.FrozenModule:
        """`_load` as Starlark's file loader: an error of a nested load reaches the outermost
        evaluation as it was raised, instead of wrapped in each loading file's error."""
        try:
            return self._load(module)
        except UserInputError as e:
            self._pending = e
            raise _Abort() from None

    def _load(self, module: str) -> sl.FrozenModule:
        module_id, path, display = self._resolve_module(module)
        hit = self.modules.get(module_id)
        if hit is not None:
            self._note_load(display)
            return hit
        if any(m == module_id for m, _ in self._eval_stack):
            chain = " -> ".join([d for _, d in self._eval_stack] + [display])
            self._pending = UserInputError(f"load cycle: {chain}", origin=self._load_origin(module))
            raise _Abort()
        try:
            text = decode_source(path.read_bytes(), display)
        except FileNotFoundError:
            self._pending = UserInputError(
                f"load() of '{module}': file {display} does not exist",
                origin=self._load_origin(module),
            )
            raise _Abort() from None
        loads: list[tuple[str, list[str]]] = []
        if module_id != PRELUDE:
            loads.append((PRELUDE, PRELUDE_BUILTINS))
        module_obj = sl.Module()
        if module_id == PRELUDE:
            self._add_callables(module_obj)
        frozen = self._eval(module_id, display, text, loads, module_obj, path)
        self.modules[module_id] = frozen
        self._note_load(display)
        return frozen

    def _note_load(self, display: str) -> None:
        """The file being evaluated loaded `display` (and so all that `display` loaded)."""
        if self._eval_stack:
            deps = self.loaded_by.setdefault(self._eval_stack[-1][1], {})
            deps[display] = None
            deps.update(self.loaded_by.get(display, {}))

    def _eval(
        self,
        module_id: str,
        display: str,
        text: str,
        loads: list[tuple[str, list[str]]],
        module_obj: sl.Module,
        path: Path,
    ) -> sl.FrozenModule:
        src = prepare_source(display, text, loads)
        self.sources[display] = src
        self.read_files[display] = digest_bytes(text.encode()).hex
        self.read_paths[display] = path
        self._eval_stack.append((module_id, display))
        try:
            evaluate(display, src.evaluated, module_obj, self._loader)
        except sl.StarlarkError as e:
            pending, self._pending = self._pending, None
            if pending is not None:
                raise pending from None
            raise render_error(e, self.sources) from None
        finally:
            self._eval_stack.pop()
        return module_obj.freeze()

    def source_text(self, display: str) -> str | None:
        """The text of a BUILD or .bzl file that loading read, by display name (None if unread)."""
        src = self.sources.get(display)
        return src.text if src is not None else None

    # -- packages ----------------------------------------------------------------------------

    def repo_root(self, repo: str, origin: str | None = None) -> Path:
        """The directory of a repository: the workspace, or an external repository (materialized
        on first use by the resolver the build passed in)."""
        if not repo:
            return self.workspace
        root = self._repo_roots.get(repo)
        if root is None:
            if self._repositories is None:
                raise UserInputError(f"unknown repository '@{repo}'", origin=origin)
            root = self._repositories(repo, origin)
            self._repo_roots[repo] = root
        return root

    def build_file(self, package: str, repo: str = "") -> Path | None:
        path = find_build_file(self.repo_root(repo), package)
        return Path(path) if path is not None else None

    def package_of(self, label: Label, origin: str | None = None) -> Package:
        return self.package(label.package, origin, label.repo)

    def package(self, name: str, origin: str | None = None, repo: str = "") -> Package:
        key = package_key(repo, name)
        pkg = self.packages.get(key)
        if pkg is not None:
            return pkg
        root = self.repo_root(repo, origin)
        build = self.build_file(name, repo)
        if build is None:
            shown = f"@{repo}//{name}" if repo else name
            raise UserInputError(f"no such package '{shown}': no BUILD.pyimg or BUILD file in "
                                 f"'{name or '.'}'", origin=origin)
        display = build.relative_to(root).as_posix()
        if repo:
            display = f"external/{repo}/{display}"
        pkg = Package(name, build, display, repo=repo)
        if repo:
            # External repositories are inputs the whole workspace uses: public unless they say.
            pkg.default_visibility = ["//visibility:public"]
        self.packages[key] = pkg
        try:
            text = decode_source(build.read_bytes(), display)
        except UserInputError:
            del self.packages[key]
            raise
        self._package = pkg
        try:
            self._eval(
                f"{'@' + repo if repo else ''}//{name}:{build.name}",
                display,
                text,
                [(PRELUDE, PRELUDE_BUILTINS), (RULES_DEFS, BUILD_RULES)],
                sl.Module(),
                build,
            )
        except BaseException:
            del self.packages[key]
            raise
        finally:
            self._package = None
        return pkg

    def loading_record(self, patterns: Sequence[Pattern] = ()) -> LoadingRecord:
        """What loading read so far, for a cache to persist (`inputs.loading_inputs`)."""
        return LoadingRecord(
            files=tuple(
                (name, str(self.read_paths[name]), digest)
                for name, digest in sorted(self.read_files.items())
            ),
            globs=tuple(self.globs),
            packages=tuple(
                (str(p), tuple(self.iter_packages(p.package))) for p in patterns if p.recursive
            ),
            build_files=tuple(
                (name, str(pkg.build_file))
                for name, pkg in sorted(self.packages.items())
                if not pkg.repo
            ),
        )

    def iter_packages(self, under: str = "") -> Iterator[str]:
        """Packages at or below `under`, sorted; never descends into pyimg-out or dot dirs."""
        return iter(find_packages(self.workspace, under))

    def expand_patterns(self, patterns: list[Pattern]) -> list[Label]:
        labels: set[Label] = set()
        for p in patterns:
            if p.recursive:
                pkgs = list(self.iter_packages(p.package))
                if not pkgs:
                    raise UserInputError(f"no packages found for pattern '{p}'")
                for name in pkgs:
                    labels.update(t.label for t in self.package(name).targets.values())
            elif p.name is None:
                labels.update(t.label for t in self.package(p.package, None, p.repo).targets.values())
            else:
                pkg = self.package(p.package, None, p.repo)
                if p.name not in pkg.targets:
                    raise UserInputError(self._no_such_target(pkg, p.name))
                labels.add(pkg.targets[p.name].label)
        return sorted(labels)

    def _no_such_target(self, pkg: Package, name: str) -> str:
        repo = f"@{pkg.repo}" if pkg.repo else ""
        msg = f"no such target '{repo}//{pkg.name}:{name}' in {pkg.build_display}"
        close = difflib.get_close_matches(name, list(pkg.targets), n=1)
        return msg + (f" (did you mean ':{close[0]}'?)" if close else "")

    def target(self, label: Label, origin: str | None = None) -> Target | None:
        """The target at `label`, or None when the label names a source file."""
        pkg = self.package(label.package, origin, label.repo)
        t = pkg.targets.get(label.name)
        if t is not None:
            return t
        # os.path, not pathlib: query and analysis ask this for thousands of source files.
        root = str(self.repo_root(label.repo))
        is_file = os.path.isfile(os.path.join(root, label.package, label.name))
        if not label.repo:
            # An external repository's links were checked when it was unpacked.
            rel = f"{label.package}/{label.name}" if label.package else label.name
            problem = self.confinement.check(rel)
            if problem is not None:
                raise SourceLinkError(f"source file '{label}': {problem}", origin=origin)
            if is_file:
                self.source_files.add(rel)
        if is_file:
            return None
        raise UserInputError(
            self._no_such_target(pkg, label.name).replace("no such target", "no such target or file"),
            origin=origin,
        )

    # -- callables for the prelude ----------------------------------------------------------

    def _add_callables(self, module: sl.Module) -> None:
        def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
            def call(*args: Any, **kwargs: Any) -> Any:
                try:
                    return fn(*args, **kwargs)
                except UserInputError as e:
                    self._pending = e
                    raise _Abort() from None

            return call

        loading_callables: dict[str, Callable[..., Any]] = {
            "_pyimg_new_rule": self._new_rule,
            "_pyimg_new_provider": self._new_provider,
            "_pyimg_register_target": self._register_target,
            "_pyimg_glob": self._glob,
            "_pyimg_package": self._package_fn,
            "_pyimg_package_name": self._package_name,
            "_pyimg_existing_rules": self._existing_rules,
            "_pyimg_label": self._label_fn,
            "_pyimg_select": self._select,
        }
        for name, fn in loading_callables.items():
            module.add_callable(name, wrap(fn))
        # Analysis-time callables are looked up at call time (set by the analyzer).
        for name in ("_pyimg_ctx_data", "_pyimg_declare", "_pyimg_action", "_pyimg_expand"):
            module.add_callable(name, wrap(self._dispatch(name)))

    def _dispatch(self, name: str) -> Callable[..., Any]:
        def call(**kwargs: Any) -> Any:
            fn = self.on_analysis_call.get(name)
            if fn is None:
                raise UserInputError(f"{name[7:]}() is only available in a rule implementation")
            return fn(**kwargs)

        return call

    def frames(self, stack: str) -> list[Frame]:
        return parse_stack(stack, self.sources)

    def user_origin(self, stack: str, outermost: bool = False, callee: str | None = None) -> str:
        """file:line:col of the innermost (or outermost) frame outside pyimg's bundled prelude;
        the column is that of the call to `callee` when it is on that line."""
        f = edge_frame(stack, self.sources, "@pyimg/prelude.bzl", outermost)
        if f is None:
            return "<unknown>"
        return self.position(f.file, f.line, callee)

    def position(self, file: str, line: int, callee: str | None = None) -> str:
        src = self.sources.get(file)
        col = src.call_column(line, callee) if src is not None else 1
        return f"{file}:{line}:{col}"

    def argument_origin(self, call_origin: str, name: str) -> str:
        """Where attribute `name` is passed in the call at `call_origin` (file:line:col); the
        call's own origin when it is not there literally (a default, or set by a macro)."""
        split = _split_origin(call_origin)
        if split is None:
            return call_origin
        file, line, col = split
        src = self.sources.get(file)
        if src is None:  # a package served from the package store: its file is as loaded
            return argument_origin_on_disk(self.workspace, call_origin, name)
        at = src.argument_position(line, col, name)
        return f"{file}:{at[0]}:{at[1]}" if at else call_origin

    def _definition_site(self, stack: str, what: str) -> tuple[str, str, str]:
        """(module id, exported name, origin) of a top-level `NAME = rule(...)` / provider."""
        # The innermost frame is rule()/provider() itself, in the prelude; its caller is the
        # frame before it (which may be the prelude too: it defines DefaultInfo).
        frames = self.frames(stack)
        caller = frames[-2] if len(frames) >= 2 else frames[-1]
        src = self.sources.get(caller.file)
        name = src.exports.get(caller.line) if src else None
        origin = self.position(caller.file, caller.line, what)
        if name is None:
            raise UserInputError(
                f"{what}() must be assigned to a top-level name, like `my_{what} = {what}(...)`",
                origin=origin,
            )
        module_id = next((m for m, d in self._eval_stack if d == caller.file), None)
        if module_id is None:
            raise UserInputError(f"{what}() can only be called while a .bzl file loads", origin=origin)
        return module_id, name, origin

    def _new_rule(self, attrs: Any, doc: str, executable: bool, stack: str,
                  fragments: Any = ()) -> str:
        module_id, name, origin = self._definition_site(stack, "rule")
        if not isinstance(fragments, list | tuple) or not set(fragments) <= {"platform"}:
            raise UserInputError(
                f'rule(fragments = ...) must be a list of "platform", got {fragments!r}',
                origin=origin)
        if not isinstance(attrs, dict):
            raise UserInputError("rule(attrs = ...) must be a dict of attr.*() values", origin=origin)
        for attr_name, spec in attrs.items():
            if not isinstance(spec, dict) or "type" not in spec:
                raise UserInputError(
                    f"rule attribute '{attr_name}' must be declared with attr.*()", origin=origin
                )
            if attr_name in ("name", *COMMON_ATTRS):
                raise UserInputError(f"rule attribute '{attr_name}' is reserved", origin=origin)
        rid = f"{module_id}%{name}"
        self.rules[rid] = RuleClass(rid, name, module_id, attrs, doc or "", origin,
                                    tuple(fragments))
        return rid

    def _new_provider(self, doc: str, fields: Any, stack: str) -> str:
        module_id, name, _ = self._definition_site(stack, "provider")
        pid = f"{module_id}%{name}"
        self.providers[pid] = (module_id, export_alias(name))
        return pid

    def provider_load(self, pid: str) -> tuple[str, str]:
        """(module, exported alias) of a provider id. The id says both (`_new_provider`), so a
        provider of a .bzl file that this build did not evaluate (its packages came from the
        package store) is found too."""
        hit = self.providers.get(pid)
        if hit is not None:
            return hit
        module, sep, name = pid.rpartition("%")
        if not sep:
            raise KeyError(pid)
        return module, export_alias(name)

    def rule_load(self, rule: RuleClass) -> tuple[str, str]:
        return rule.module, export_alias(rule.name)

    # -- targets -----------------------------------------------------------------------------

    def _current_package(self, what: str) -> Package:
        if self._package is None:
            raise UserInputError(f"{what} can only be used in a BUILD file (or a macro it calls)")
        return self._package

    def _register_target(self, rule: str, name: Any, attrs: str, stack: str) -> None:
        self._register(rule, name, json.loads(attrs), stack)  # JSON: see the prelude's docstring

    def _register(self, rule: str, name: Any, attrs: dict[str, Any], stack: str) -> None:
        pkg = self._current_package("calling a rule")
        rule_class = self.rules[rule]
        kind = rule_class.name.lstrip("_")
        origin = self.user_origin(stack, outermost=True, callee=kind)
        if not isinstance(name, str) or not name:
            raise UserInputError(f"{kind}: attribute 'name' must be a non-empty string", origin=origin)
        try:
            check_rule_name(name)
            label = parse_label(f":{name}", pkg.name, pkg.repo)
        except LabelError as e:
            raise UserInputError(f"{kind}: {e}", origin=self.argument_origin(origin, "name")) from None
        if name in pkg.targets:
            raise UserInputError(
                f"{kind} {pkg.repo and '@' + pkg.repo}//{pkg.name}:{name}: a target named '{name}' is already declared "
                f"at {pkg.targets[name].origin}",
                origin=origin,
            )
        what = f"{kind} {label}"
        normalized: dict[str, Any] = {}
        for key, value in attrs.items():
            if key in COMMON_ATTRS:
                continue
            spec = rule_class.attrs.get(key)
            if spec is None:
                close = difflib.get_close_matches(key, list(rule_class.attrs), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise UserInputError(f"{what}: no attribute '{key}'{hint}",
                                     origin=self.argument_origin(origin, key))
            try:
                # Interned: each target's JSON decodes its own copy of every attribute name.
                normalized[sys.intern(key)] = _check_attr(what, key, spec, value, pkg.name,
                                                          origin, pkg.repo)
            except UserInputError as e:
                # Point at the attribute the user wrote, not only at the call.
                raise UserInputError(e.message, origin=self.argument_origin(origin, key)) from None
        for key, spec in rule_class.attrs.items():
            if key in normalized:
                continue
            if spec.get("mandatory"):
                raise UserInputError(f"{what}: missing mandatory attribute '{key}'", origin=origin)
            normalized[key] = _check_attr(
                what, key, spec, spec.get("default"), pkg.name, origin, pkg.repo
            )
        visibility = attrs.get("visibility")
        if visibility is None:
            visibility = pkg.default_visibility or ["//visibility:private"]
        if not isinstance(visibility, list) or not all(isinstance(v, str) for v in visibility):
            raise UserInputError(f"{what}: attribute 'visibility' must be a list of labels", origin=origin)
        pkg.targets[name] = Target(label, rule_class, normalized, origin, list(visibility))

    def _glob(self, include: Any, exclude: Any, allow_empty: bool, stack: str) -> str:
        pkg = self._current_package("glob()")
        origin = self.user_origin(stack, callee="glob")
        if origin.startswith("@pyimg/"):
            origin = self.user_origin(stack, outermost=True)  # a bundled macro's: the user's call
        for what, value in (("include", include), ("exclude", exclude)):
            if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
                raise UserInputError(f"glob(): '{what}' must be a list of strings", origin=origin)
        try:
            result = glob_package(
                self.repo_root(pkg.repo), pkg.name, include, exclude,
                lambda p: self.build_file(p, pkg.repo),
                None if pkg.repo else self.confinement,
            )
        except UserInputError as e:  # a link leaving the workspace, or a name glob() refuses
            raise type(e)(f"glob({include}): {e.message}", origin=origin) from None
        if not pkg.repo:
            # An external repository's files are fixed by pyimg.lock: its globs need no re-run
            # (and re-running one against the workspace would be wrong).
            self.globs.append((pkg.name, tuple(include), tuple(exclude), tuple(result)))
        if not result and not allow_empty:
            raise UserInputError(f"glob({include}) matched no files", origin=origin)
        # As labels, `@x` would name a repository and `:x` the file `x`: the ':' keeps them files.
        return json.dumps([":" + f if f[0] in "@:" else f for f in result])

    def _package_fn(self, default_visibility: Any, stack: str) -> None:
        pkg = self._current_package("package()")
        if pkg.targets:
            raise UserInputError("package() must come before any target",
                                 origin=self.user_origin(stack, callee="package"))
        if default_visibility is not None:
            pkg.default_visibility = list(default_visibility)

    def _package_name(self) -> str:
        return self._current_package("package_name()").name

    def _existing_rules(self) -> dict[str, Any]:
        pkg = self._current_package("existing_rules()")
        return {n: {"name": n, "kind": t.kind, **t.attrs} for n, t in pkg.targets.items()}

    def _label_fn(self, text: str, stack: str) -> str:
        pkg = self._package.name if self._package else ""
        repo = self._package.repo if self._package else ""
        try:
            return str(parse_label(text, pkg, repo))
        except LabelError as e:
            raise UserInputError(str(e), origin=self.user_origin(stack, callee="Label")) from None

    def _select(self, conditions: Any, no_match_error: str, stack: str) -> Any:
        origin = self.user_origin(stack, callee="select")
        if not isinstance(conditions, dict) or not conditions:
            raise UserInputError("select() takes a non-empty dict", origin=origin)
        return {"__select__": conditions, "origin": origin, "no_match_error": no_match_error}


# -- attribute checking ------------------------------------------------------------------------

_TYPE_NAMES = {"label": "a label", "label_list": "a list of labels", "string": "a string",
               "string_list": "a list of strings", "string_dict": "a dict of strings",
               "int": "an integer", "bool": "a boolean", "label_keyed_string_dict":
               "a dict from labels to strings", "string_list_dict": "a dict of string lists"}  # fmt: skip


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict) and "__select__" in value:
        return "select(...)"
    return repr(value)


def _check_attr(
    what: str, key: str, spec: dict[str, Any], value: Any, package: str, origin: str, repo: str = ""
) -> Any:
    t = spec["type"]

    def bad() -> UserInputError:
        return UserInputError(
            f"{what}: attribute '{key}' must be {_TYPE_NAMES.get(t, t)}, got {_describe(value)}",
            origin=origin,
        )

    def label(v: Any) -> str:
        if not isinstance(v, str):
            raise bad()
        try:
            return str(parse_label(v, package, repo))
        except LabelError as e:
            raise UserInputError(f"{what}: attribute '{key}': {e}", origin=origin) from None

    if isinstance(value, dict) and "__select__" in value:
        return {"__select__": {k: _check_attr(what, key, spec, v, package, origin, repo)
                               for k, v in value["__select__"].items()}}
    if value is None:
        if t in ("label",):
            return None
        value = {"label_list": [], "string_list": [], "string_dict": {}, "string": "",
                 "int": 0, "bool": False, "label_keyed_string_dict": {},
                 "string_list_dict": {}}.get(t)  # fmt: skip
    if t == "label":
        return label(value)
    if t == "label_list":
        if not isinstance(value, list):
            raise bad()
        out = [label(v) for v in value]
        dupes = sorted(v for v, n in Counter(out).items() if n > 1)
        if dupes:
            raise UserInputError(f"{what}: attribute '{key}' lists {dupes[0]} twice", origin=origin)
        return out
    if t == "string":
        if not isinstance(value, str):
            raise bad()
        values = spec.get("values")
        if values and value not in values:
            raise UserInputError(
                f"{what}: attribute '{key}' must be one of {', '.join(map(repr, values))}, "
                f"got {_describe(value)}",
                origin=origin,
            )
        return value
    if t == "string_list":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad()
        return list(value)
    if t == "string_dict":
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            raise bad()
        return dict(value)
    if t == "string_list_dict":
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(x, str) for x in v)
            for k, v in value.items()
        ):
            raise bad()
        return dict(value)
    if t == "label_keyed_string_dict":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise bad()
        return {label(k): v for k, v in value.items()}
    if t == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if t == "bool":
        if not isinstance(value, bool):
            raise bad()
        return value
    raise UserInputError(f"{what}: attribute '{key}' has unknown type {t}", origin=origin)
