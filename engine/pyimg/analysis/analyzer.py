"""Analysis: runs rule implementations over the target graph and collects their actions.

For each target the analyzer evaluates a tiny synthetic Starlark module that loads the target's
rule and the providers its dependencies carry, then calls the prelude's `analyze()`. The rule
implementation sees a Bazel-like `ctx` built from JSON that this module hands out, and declares
files and actions through Python callables. Results are JSON: providers by id, and Actions.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import starlark as sl

from pyimg.analysis.configuration import (
    Configuration,
    default_configuration,
    requested_configuration,
)
from pyimg.analysis.target_cache import TargetCache
from pyimg.core.action import KIND_BUILTIN, KIND_RUN, KIND_WRITE, Action
from pyimg.core.workspace import EXTERNAL_DIR
from pyimg.errors import UserInputError
from pyimg.labels import Label, LabelError, parse_label
from pyimg.loading._eval import evaluate, render_error
from pyimg.loading.loader import PRELUDE, Loader, Target

__all__ = ["AnalysisResult", "Analyzer", "DEFAULT_INFO", "EXTERNAL_DIR", "OUT_DIR", "TargetResult"]

OUT_DIR = "pyimg-out"
DEFAULT_INFO = f"{PRELUDE}%DefaultInfo"
# `fail("attribute 'x': ...")` in a rule implementation: the error points at where x is set.
_NAMED_ATTRIBUTE = re.compile(r"attribute '([A-Za-z_][A-Za-z0-9_]*)'")


def file_json(path: str, owner: str, is_source: bool, is_directory: bool = False) -> dict[str, Any]:
    """A File as it crosses into Starlark; `_file()` in the prelude derives basename, dirname,
    extension and short_path from `path` (fewer bytes per file: a pkg_tar may have 10,000)."""
    return {"_file": True, "path": path, "is_source": is_source, "is_directory": is_directory,
            "owner": owner}


@dataclass
class TargetResult:
    label: str
    kind: str
    origin: str
    providers: dict[str, Any]  # pid -> fields (JSON)
    actions: list[Action] = field(default_factory=list)
    # The platform of the requested configuration it was analysed in ("" for the default one).
    configuration: str = ""
    # The digest of `providers` (see `providers_digest`), when known without computing it.
    known_digest: str = ""
    # `actions` as `action_to_json` writes them, when the target cache has them already.
    actions_json: list[Any] | None = None

    @property
    def providers_digest(self) -> str:
        """What a dependent's target-cache key holds of this target: a digest of all that the
        dependent's implementation can see of it (its providers), computed once."""
        if not self.known_digest:
            self.known_digest = hashlib.sha256(json.dumps(self.providers).encode()).hexdigest()
        return self.known_digest

    @property
    def key(self) -> str:
        """The configured target's name: `Configuration.key` of its label."""
        return f"{self.label} [{self.configuration}]" if self.configuration else self.label

    @property
    def default_files(self) -> list[dict[str, Any]]:
        info = self.providers.get(DEFAULT_INFO) or {}
        return list(info.get("files") or [])


@dataclass
class AnalysisResult:
    # By TargetResult.key, for every analyzed (configured) target and source file.
    targets: dict[str, TargetResult]
    top_level: list[str]  # TargetResult keys
    files: list[str] = field(default_factory=list)  # every BUILD/.bzl file loading read (paths)

    def actions(self) -> list[Action]:
        """Every action once: a shared action (two targets, one identical action, as the layer
        several images use) is listed by each of its targets."""
        out: list[Action] = []
        seen: set[str] = set()
        for t in self.targets.values():
            for a in t.actions:
                if a.all_outputs[0] not in seen:
                    seen.add(a.all_outputs[0])
                    out.append(a)
        return out


@dataclass
class _Current:
    target: Target
    data: str  # the ctx data as JSON: what the implementation is given, and the reuse key's part
    configuration: Configuration
    declared: dict[str, bool] = field(default_factory=dict)  # exec path -> is directory
    actions: list[Action] = field(default_factory=list)
    deps: dict[str, TargetResult] = field(default_factory=dict)  # by label, own configuration
    # Declared beside another target's output: may be shared with that target's identical
    # action (the compressed layer of a pkg_tar that several images use).
    shared: set[str] = field(default_factory=set)


class Analyzer:
    def __init__(self, loader: Loader, default: Configuration | None = None,
                 reuse: TargetCache | None = None) -> None:
        """`default`: the default configuration (the running machine's platform unless a test
        says otherwise). `reuse`: earlier analyses of targets, served where a target's inputs
        are the same."""
        from pyimg.oci.platforms import host_platform

        self.loader = loader
        self.default = default or default_configuration()
        # The running machine's platform, which rules read as
        # `ctx.fragments.platform.host_platform` (oci_load picks it from an index).
        self.host = str(host_platform())
        self.reuse = reuse
        self.results: dict[str, TargetResult] = {}  # by TargetResult.key
        # Configuration.key(label) -> its result, which is the default configuration's when
        # the target's analysis does not depend on the platform.
        self._memo: dict[str, TargetResult] = {}
        self._stack: list[str] = []
        self._outputs: dict[str, str] = {}  # exec path -> owning configured target
        self._producers: dict[str, Action] = {}  # exec path -> the action that writes it
        self._current: _Current | None = None
        loader.on_analysis_call.update(
            {
                "_pyimg_ctx_data": self._ctx_data,
                "_pyimg_declare": self._declare,
                "_pyimg_action": self._action,
                "_pyimg_expand": self._expand,
            }
        )

    def analyze(self, labels: list[Label],
                configurations: list[Configuration] | None = None) -> AnalysisResult:
        """Analyse `labels` in each of `configurations` (default: the default configuration).
        The top-level keys name each configured target once, in that order."""
        top: dict[str, None] = {}  # ordered, and a set: `//...` names 10,000 targets
        for config in configurations or [self.default]:
            for label in labels:
                top.setdefault(self._analyze(label, config, None).key)
        return AnalysisResult(self.results, list(top))

    # -- per target ---------------------------------------------------------------------------

    def _analyze(self, label: Label, config: Configuration, origin: str | None) -> TargetResult:
        key = config.key(str(label))
        hit = self._memo.get(key)
        if hit is not None:
            return hit
        if key in self._stack:
            cycle = self._stack[self._stack.index(key) :] + [key]
            first_label = parse_label(cycle[0].split(" [", 1)[0])
            first = self.loader.package_of(first_label).targets[first_label.name]
            raise UserInputError(
                "dependency cycle: " + " -> ".join(cycle), origin=first.origin
            )
        target = self.loader.target(label, origin)
        if target is None:
            result = self._source_file(label)
            self.results[result.key] = self._memo[key] = result
            return result
        self._stack.append(key)
        try:
            deps: dict[str, TargetResult] = {}  # by label: those in this configuration
            split: dict[str, list[TargetResult]] = {}  # cfg = "platforms" attributes' targets
            configured = config.requested and (
                "platform" in target.rule.fragments
                or any(_has_select(v) for v in target.attrs.values()))
            for attr_name, value in target.attrs.items():
                spec = target.rule.attrs[attr_name]
                labels = _labels_of(spec["type"], self._select(target, attr_name, value, config))
                if spec.get("cfg") == "platforms":
                    dep_configs = self._dep_configurations(target, config)
                    # Platform-major: an index lists every image of its first platform first.
                    split[attr_name] = [
                        self._dependency(target, attr_name, dep, dep_config)
                        for dep_config in dep_configs or [config]
                        for dep in labels
                    ]
                    if not dep_configs:  # no platforms listed: in this configuration
                        configured = configured or any(r.configuration for r in split[attr_name])
                    continue
                for dep in labels:
                    deps[dep] = self._dependency(target, attr_name, dep, config)
                    # A dependency that depends on the platform makes this target depend on it
                    # too (one reached through a transition does not).
                    configured = configured or bool(deps[dep].configuration)
            if config.requested and not configured:
                # The same in every configuration: analysed once, in the default one.
                config = self.default
            own = config.key(str(label))
            result = self._memo.get(own) or self._run_implementation(target, deps, split, config)
        finally:
            self._stack.pop()
        self.results[result.key] = self._memo[key] = self._memo[own] = result
        return result

    def _dependency(self, target: Target, attr_name: str, dep: str,
                    config: Configuration) -> TargetResult:
        dep_label = parse_label(dep)
        try:
            result = self._analyze(dep_label, config, target.origin)
        except UserInputError as e:
            if e.origin != target.origin:
                raise  # an error inside the dependency: it says where
            # The dependency itself is missing: point at the attribute naming it.
            raise UserInputError(
                e.message, origin=self.loader.argument_origin(target.origin, attr_name)
            ) from None
        self._check_visibility(target, dep_label, attr_name)
        return result

    def _dep_configurations(self, target: Target, config: Configuration) -> list[Configuration]:
        """The configurations of a `cfg = "platforms"` attribute's dependencies: one per
        platform of the target's `platforms` attribute (a split transition), in its order;
        none listed (then the dependencies are in the target's own configuration): empty."""
        texts = self._select(target, "platforms", target.attrs.get("platforms") or [], config)
        what = f"{target.kind} {target.label}: attribute 'platforms'"
        out: list[Configuration] = []
        for text in texts:
            try:
                dep_config = requested_configuration(text, what)
            except UserInputError as e:
                raise UserInputError(
                    e.message, origin=self.loader.argument_origin(target.origin, "platforms")
                ) from None
            if dep_config in out:
                raise UserInputError(
                    f"{what}: '{text}' is listed twice",
                    origin=self.loader.argument_origin(target.origin, "platforms"))
            out.append(dep_config)
        return out

    def _source_file(self, label: Label) -> TargetResult:
        path = f"{label.package}/{label.name}" if label.package else label.name
        if label.repo:
            # An external repository's files: BuildContext.source_root finds them on disk.
            path = f"{EXTERNAL_DIR}/{label.repo}/{path}"
        f = file_json(path, str(label), is_source=True)
        # Its providers are a function of the label: so is their digest (none computed).
        return TargetResult(str(label), "source file", "",
                            {DEFAULT_INFO: {"files": [f], "_provider": DEFAULT_INFO}},
                            known_digest=f"source file {label}")

    def _select(self, target: Target, attr_name: str, value: Any, config: Configuration) -> Any:
        if not (isinstance(value, dict) and "__select__" in value):
            return value
        choice = select_choice(value["__select__"], config.platform.os,
                               config.platform.architecture, config.platform.variant)
        if choice is not None:
            return choice[1]
        raise UserInputError(
            f"{target.kind} {target.label}: attribute '{attr_name}': no select() condition "
            f"matches platform {config.platform}",
            origin=self.loader.argument_origin(target.origin, attr_name),
        )

    def _check_visibility(self, target: Target, dep: Label, attr_name: str) -> None:
        if (dep.repo, dep.package) == (target.label.repo, target.label.package):
            return
        dep_target = self.loader.package_of(dep).targets.get(dep.name)
        if dep_target is None:
            return  # source files are visible to everyone
        for v in dep_target.visibility:
            if v == "//visibility:public":
                return
            try:
                vl = parse_label(v, dep.package)
            except LabelError:
                continue
            if vl.name == "__pkg__" and vl.package == target.label.package:
                return
            if vl.name == "__subpackages__" and (
                target.label.package == vl.package
                or target.label.package.startswith(vl.package + "/")
                or vl.package == ""
            ):
                return
        raise UserInputError(
            f"{target.kind} {target.label}: attribute '{attr_name}': target '{dep}' is not "
            f"visible from package '//{target.label.package}' (its visibility is "
            f"{dep_target.visibility}, declared at {dep_target.origin})",
            origin=self.loader.argument_origin(target.origin, attr_name),
        )

    def _ctx_dict(self, target: Target, deps: dict[str, TargetResult],
                  split: dict[str, list[TargetResult]], config: Configuration,
                  encode: Callable[[TargetResult], Any]) -> dict[str, Any]:
        """What the implementation is given (as `_pyimg_ctx_data`), each dependency written by
        `encode`: `_target_json` for the implementation itself, `_target_reference` for the
        target cache's key, which then needs no dependency's providers serialised."""
        # `files` maps each label attribute to its kind; Starlark derives ctx.files / ctx.file
        # from the targets themselves, so that every File crosses (and exists) only once.
        attrs: dict[str, Any] = {}
        files: dict[str, str] = {}
        single: list[str] = []
        for name, value in target.attrs.items():
            spec = target.rule.attrs[name]
            value = self._select(target, name, value, config)
            t = spec["type"]
            if name in split:
                attrs[name] = [encode(r) for r in split[name]]
                files[name] = "label_list"
                continue
            if t == "label":
                attrs[name] = encode(deps[value]) if value else None
                dep_files = deps[value].default_files if value else []
                files[name] = t
                if spec.get("single_file") or spec.get("executable"):
                    if value and len(dep_files) != 1:
                        raise UserInputError(
                            f"{target.kind} {target.label}: attribute '{name}' must name exactly "
                            f"one file, but '{value}' provides {len(dep_files)}",
                            origin=self.loader.argument_origin(target.origin, name),
                        )
                    single.append(name)
            elif t == "label_list":
                attrs[name] = [encode(deps[v]) for v in value]
                files[name] = t
            elif t == "label_keyed_string_dict":
                # Targets are dicts, which Starlark cannot hash: the pairs cross as a list and
                # the prelude gives the implementation a value with items(), keys(), values().
                attrs[name] = [[encode(deps[k]), v] for k, v in value.items()]
                files[name] = t
            else:
                attrs[name] = value
        ctx_data: dict[str, Any] = {
            "label": str(target.label),  # a canonical string; the prelude gives it Label's fields
            "attrs": attrs,
            "files": files,
            "file": single,
            "host_platform": self.host,
            # Where its outputs go: also what keeps configurations apart in the target cache.
            "out_subdir": config.out_subdir,
        }
        if "platform" in target.rule.fragments:
            ctx_data["platform"] = str(config.platform)
            ctx_data["platform_requested"] = config.requested
        return ctx_data

    def _run_implementation(self, target: Target, deps: dict[str, TargetResult],
                            split: dict[str, list[TargetResult]],
                            config: Configuration) -> TargetResult:
        """`deps`: the dependencies in the target's configuration, by label; `split`: those of
        `cfg = "platforms"` attributes, which the implementation gets as one list each."""
        label = target.label
        module, alias = self.loader.rule_load(target.rule)
        reuse_key = None
        if self.reuse is not None:
            # Keyed by the dependencies' provider digests: an unchanged target costs the
            # serialisation of its own attributes, not of everything its dependencies provide.
            key_data = self._ctx_dict(target, deps, split, config, _target_reference)
            reuse_key = self.reuse.key(target.kind, target.origin, (module, alias),
                                       json.dumps(key_data))
            reused = self._reused(target, reuse_key, config)
            if reused is not None:
                return reused
        data = json.dumps(self._ctx_dict(target, deps, split, config, _target_json))
        current = _Current(target, data, config, deps=deps)
        every = [*deps.values(), *(r for rs in split.values() for r in rs)]
        pids = sorted({pid for d in every for pid in d.providers} | {DEFAULT_INFO})
        lines = [f'load("{PRELUDE}", "analyze")', f'load("{module}", pyimg_rule = "{alias}")']
        mapping = []
        for i, pid in enumerate(pids):
            p_module, p_alias = self.loader.provider_load(pid)
            lines.append(f'load("{p_module}", pyimg_p{i} = "{p_alias}")')
            mapping.append(f'"{pid}": pyimg_p{i}')
        lines.append("analyze(pyimg_rule, {" + ", ".join(mapping) + "})")
        source = "\n".join(lines) + "\n"
        self._current = current
        try:
            returned = evaluate(f"<analysis of {label}>", source, sl.Module(), self.loader._loader)
        except sl.StarlarkError as e:
            pending, self.loader._pending = self.loader._pending, None
            if pending is not None:
                raise pending from None
            raise self._implementation_error(target, render_error(e, self.loader.sources)) from None
        finally:
            self._current = None
        providers: dict[str, Any] = {}
        assert isinstance(returned, list)  # the prelude's _analyze always returns a list
        for item in returned:
            if not isinstance(item, dict) or "_provider" not in item:
                raise UserInputError(
                    f"{target.kind} {label}: the rule implementation must return a list of "
                    f"providers, got {item!r}",
                    origin=target.rule.origin,
                )
            providers[item["_provider"]] = item
        if DEFAULT_INFO not in providers:
            outs = [file_json(p, str(label), False, d) for p, d in sorted(current.declared.items())]
            providers[DEFAULT_INFO] = {"_provider": DEFAULT_INFO, "files": outs}
        undeclared = [p for p in current.declared if p not in {o for a in current.actions for o in a.all_outputs}]
        if undeclared:
            raise UserInputError(
                f"{target.kind} {label}: declared output '{undeclared[0]}' is not created by any action",
                origin=target.rule.origin,
            )
        result = TargetResult(str(label), target.kind, target.origin, providers, current.actions,
                              str(config.platform) if config.requested else "")
        if reuse_key is not None:
            assert self.reuse is not None
            result.actions_json = self.reuse.put(reuse_key, providers, current.actions,
                                                 result.providers_digest)
        return result

    def _implementation_error(self, target: Target, err: UserInputError) -> UserInputError:
        """A failure inside a rule implementation, reported at the target's BUILD line, or at
        the attribute when the message names one (`fail("attribute 'x': ...")`)."""
        first, _, rest = err.message.partition("\n")
        attr = _NAMED_ATTRIBUTE.match(first)
        origin = target.origin
        if attr is not None and attr.group(1) in target.rule.attrs:
            origin = self.loader.argument_origin(target.origin, attr.group(1))
        if (err.origin or "").startswith("@pyimg/"):
            # pyimg's own rules: the user cannot edit them, so their lines would only distract.
            return UserInputError(f"{target.kind} {target.label}: {first}", origin=origin)
        # A rule of the workspace: keep where in the rule the failure happened, which matters to
        # whoever writes the rule.
        where = f" (in the rule implementation at {err.origin})" if err.origin else ""
        rest = "\n".join(ln for ln in rest.splitlines() if "<analysis of" not in ln)
        return UserInputError(
            f"{target.kind} {target.label}: {first}{where}" + (f"\n{rest}" if rest else ""),
            origin=origin,
        )

    def _reused(self, target: Target, key: str, config: Configuration) -> TargetResult | None:
        """The earlier analysis of `target` with the same inputs, its outputs claimed as the
        implementation's declarations would; None to run the implementation (also when an output
        is another target's: running it reports the conflict as it always does)."""
        assert self.reuse is not None
        hit = self.reuse.get(key)
        if hit is None:
            return None
        providers, actions, digest, actions_json = hit
        label = str(target.label)
        owner = config.key(label)
        outputs = [o for a in actions for o in a.all_outputs]
        if any(self._outputs.get(o, owner) != owner for o in outputs):
            return None
        for a in actions:
            for o in a.all_outputs:
                self._outputs[o] = owner
                self._producers[o] = a
        return TargetResult(label, target.kind, target.origin, providers, actions,
                            str(config.platform) if config.requested else "", digest,
                            actions_json)

    # -- callables the prelude reaches during an implementation ---------------------------------

    def _cur(self) -> _Current:
        if self._current is None:
            raise UserInputError("this function is only available in a rule implementation")
        return self._current

    def _user_origin(self, stack: str, callee: str | None = None) -> str:
        """Where a call made by a rule implementation is, in a file the user can edit: the line
        of a workspace .bzl, or for pyimg's own rules the target's line in its BUILD file."""
        origin = self.loader.user_origin(stack, callee=callee)
        if origin.startswith(("@pyimg/", "<")):
            return self._cur().target.origin
        return origin

    def _ctx_data(self) -> str:
        return self._cur().data  # one string: see the prelude's docstring

    def _declare(self, filename: str, directory: bool, sibling: Any, stack: str) -> dict[str, Any]:
        cur = self._cur()

        def origin() -> str:  # only an error needs it: finding it is a third of this call
            return self._user_origin(stack, "declare_directory" if directory else "declare_file")

        if not isinstance(filename, str) or not filename or filename.startswith("/") or ".." in filename.split("/"):
            raise UserInputError(f"declare_file(): invalid file name {filename!r}", origin=origin())
        package = cur.target.label.package
        if cur.target.label.repo:
            # Outputs of external targets get their own tree: never a workspace package's.
            package = "/".join(p for p in (EXTERNAL_DIR, cur.target.label.repo, package) if p)
        me = cur.configuration.key(str(cur.target.label))
        if sibling is not None:
            base = posixpath.dirname(sibling["path"])
            path = posixpath.join(base, filename)
        else:
            path = posixpath.join(OUT_DIR, cur.configuration.out_subdir, package, filename)
        owner = self._outputs.get(path)
        if (sibling is not None and owner is not None and owner != me
                and path not in cur.declared and path.startswith(OUT_DIR + "/")):
            # Beside another target's output, which that target's action may already write:
            # shared when this target's action is the same (checked in _declare_action).
            cur.shared.add(path)
            cur.declared[path] = directory
            return file_json(path, str(cur.target.label), False, directory)
        if owner is not None and owner != me or path in cur.declared:
            other = self.results.get(owner or "")
            raise UserInputError(
                f"{cur.target.kind} {cur.target.label}: output path conflict: '{path}' is also "
                f"declared by {owner or 'this target'}" + (f" ({other.origin})" if other else ""),
                origin=origin(),
            )
        self._outputs[path] = me
        cur.declared[path] = directory
        return file_json(path, str(cur.target.label), False, directory)

    def _paths(self, what: str, values: Any, origin: str) -> tuple[str, ...]:
        if values is None:
            return ()
        if not isinstance(values, list):
            values = [values]
        out = []
        for v in values:
            if isinstance(v, dict) and "path" in v:
                out.append(v["path"])
            elif isinstance(v, str):
                out.append(v)
            else:
                raise UserInputError(f"{what} must be Files, got {v!r}", origin=origin)
        return tuple(out)

    def _action(self, spec: str, stack: str) -> None:
        self._declare_action(stack=stack, **json.loads(spec))

    def _declare_action(self, kind: str, stack: str, outputs: Any, inputs: Any = None, executable: Any = None,
                tools: Any = None, arguments: Any = None, env: Any = None, mnemonic: str = "Action",
                progress_message: Any = None, params: Any = None, builtin: str = "",
                cache_dirs: Any = None, secrets: Any = None, host_tools: Any = None,
                remote_cache_secrets: Any = False) -> None:
        cur = self._cur()
        origin = self._user_origin(stack)
        label = str(cur.target.label)
        outs = self._paths("outputs", outputs, origin)
        if not outs:
            raise UserInputError("an action must have at least one output", origin=origin)
        for o in outs:
            if o not in cur.declared:
                raise UserInputError(
                    f"output '{o}' was not declared by this target (use ctx.actions.declare_file)",
                    origin=origin,
                )
            if any(o in a.all_outputs for a in cur.actions):
                raise UserInputError(f"output '{o}' is created by two actions", origin=origin)
        files = tuple(o for o in outs if not cur.declared[o])
        dirs = tuple(o for o in outs if cur.declared[o])
        ins = self._paths("inputs", inputs, origin)
        tls = self._paths("tools", tools, origin)
        host = list(self._paths("host_tools", host_tools, origin))
        # A host_tool's HostToolInfo (a dict here) carries its identity mode and data too.
        specs = sorted({(t["path"], t.get("identity") or "auto", tuple(t.get("data") or ()))
                        for t in (host_tools or []) if isinstance(t, dict)
                        if t.get("data") or t.get("identity", "auto") != "auto"})
        for (path, *_), (other, *_) in zip(specs, specs[1:], strict=False):
            if path == other:
                raise UserInputError(f"host tool '{path}' is declared twice with different data "
                                     "or identity: use one host_tool target", origin=origin)
        argv: list[str] = []
        if kind == KIND_RUN:
            if executable is None:
                raise UserInputError("ctx.actions.run() needs an executable", origin=origin)
            exe = self._paths("executable", executable, origin)[0]
            if exe.startswith("/"):
                host.append(exe)
            elif exe not in tls and exe not in ins:
                tls = tls + (exe,)
            argv = [exe] + [str(a) if not isinstance(a, dict) else a.get("path", "") for a in (arguments or [])]
        if kind == "builtin" and isinstance(params, dict):
            self._check_platform_params(cur.target, params)
        if env is not None and not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
            raise UserInputError("env must be a dict of strings", origin=origin)
        action = Action(
            kind={"run": KIND_RUN, "write": KIND_WRITE, "builtin": KIND_BUILTIN}[kind],
            outputs=tuple(sorted(files)),
            output_dirs=tuple(sorted(dirs)),
            inputs=tuple(sorted(set(ins) - set(tls))),
            tools=tuple(sorted(set(tls))),
            argv=tuple(argv),
            env=tuple(sorted((env or {}).items())),
            params=params,
            builtin=builtin or "",
            cache_dirs=tuple(sorted((cache_dirs or {}).items())),
            secrets=tuple(sorted(secrets or [])),
            remote_cache_secrets=bool(remote_cache_secrets),
            host_tools=tuple(sorted(set(host))),
            host_tool_specs=tuple(specs),
            owner=label,
            # Failures are reported at the target's BUILD line: that is the file the user owns.
            origin=cur.target.origin,
            mnemonic=mnemonic or "Action",
            progress_message=progress_message or f"{mnemonic} {label}",
        )
        shared = [o for o in action.all_outputs if o in cur.shared]
        if shared:
            other = self._producers.get(shared[0])
            if other != action or set(other.all_outputs) != set(action.all_outputs):
                raise UserInputError(
                    f"{cur.target.kind} {label}: output path conflict: '{shared[0]}' is also "
                    f"declared by {self._outputs.get(shared[0])}, by another action"
                    + (f" ({other.origin})" if other is not None else ""),
                    origin=origin,
                )
        for o in action.all_outputs:
            self._producers[o] = action
        cur.actions.append(action)

    def _check_platform_params(self, target: Target, params: dict[str, Any]) -> None:
        """Builtin params named os, architecture, variant and platform hold OCI platform values
        (oci/platforms.py): checked here, where the error can point at the attribute that set
        them, rather than when the action runs."""
        from pyimg.oci.platforms import platform_problem, platform_text_problem

        def text(name: str) -> str | None:
            value = params.get(name)
            return value if isinstance(value, str) and value else None

        problem = platform_problem(text("os"), text("architecture"), text("variant"))
        if problem is None and text("platform") is not None:
            problem = platform_text_problem(params["platform"])
            if problem is not None:
                problem = ("platform", f"attribute 'platform': {problem[1]}")
        if problem is not None:
            raise UserInputError(
                f"{target.kind} {target.label}: {problem[1]}",
                origin=self.loader.argument_origin(target.origin, problem[0]),
            )

    # The label may hold balanced parentheses (`$(location f(1).txt)`): file names do.
    _MAKE_VAR = re.compile(
        r"\$\((location|locations|execpath|execpaths|rootpath|rootpaths)\s+((?:[^()]|\([^()]*\))+)\)"
    )

    def _expand(self, text: str, stack: str, extra: Any = None) -> str:
        """`$(location L)` and friends for labels among the current target's dependencies."""
        cur = self._cur()

        def repl(m: re.Match[str]) -> str:
            # `$$` is the command's escape for `$`, in a label as anywhere else in it.
            fn, raw = m.group(1), m.group(2).strip().replace("$$", "$")
            try:
                label = str(parse_label(raw, cur.target.label.package))
            except LabelError as e:
                raise UserInputError(f"$({fn} {raw}): {e}", origin=cur.target.origin) from None
            dep = cur.deps.get(label)
            own = parse_label(label)
            own_path = posixpath.join(OUT_DIR, own.package, own.name)
            if dep is None and own.package == cur.target.label.package and own_path in cur.declared:
                return shlex.quote(own_path)  # one of this target's own outputs (genrule outs)
            if dep is None:
                raise UserInputError(
                    f"{cur.target.kind} {cur.target.label}: $({fn} {raw}): '{label}' is not a "
                    f"dependency of this target (add it to srcs or tools)",
                    origin=cur.target.origin,
                )
            paths = [host_tool_name(dep) or f["path"] for f in dep.default_files]
            if fn in ("location", "execpath", "rootpath") and len(paths) != 1:
                raise UserInputError(
                    f"{cur.target.kind} {cur.target.label}: $({fn} {raw}) expands to "
                    f"{len(paths)} files; use $({fn}s {raw})",
                    origin=cur.target.origin,
                )
            return " ".join(shlex.quote(p) for p in paths)

        text = self._MAKE_VAR.sub(repl, text)
        for k, v in (extra or {}).items():
            text = text.replace(f"$({k})", v)
        return text


def host_tool_name(dep: TargetResult) -> str | None:
    for pid, fields in dep.providers.items():
        if pid.endswith("%HostToolInfo"):
            return posixpath.basename(fields["path"])
    return None



def _has_select(value: Any) -> bool:
    return isinstance(value, dict) and "__select__" in value


def select_choice(conditions: dict[str, Any], os_: str, architecture: str,
                  variant: str | None) -> tuple[str, Any] | None:
    """(condition, value) of the select() branch for a platform, or None when none matches.

    A condition matches by its name (what follows the last `:`): the os (`linux`), the
    architecture (`arm64`), `<os>_<arch>` or `<os>_<arch>_<variant>` (`linux_arm64_v8`). The
    most specific match wins (in that order, the os least), then the first written;
    `//conditions:default` matches last.
    """
    names = {os_: 1, architecture: 2, f"{os_}_{architecture}": 3}
    if variant:
        names[f"{os_}_{architecture}_{variant}"] = 4
    best: tuple[int, str, Any] | None = None
    for key, value in conditions.items():
        rank = names.get(key.rsplit(":", 1)[-1], 0)
        if rank and (best is None or rank > best[0]):
            best = (rank, key, value)
    if best is not None:
        return best[1], best[2]
    if "//conditions:default" in conditions:
        return "//conditions:default", conditions["//conditions:default"]
    return None


def _labels_of(t: str, value: Any) -> list[str]:
    if t == "label":
        return [value] if value else []
    if t == "label_list":
        return list(value)
    if t == "label_keyed_string_dict":
        return list(value)
    return []


def _target_json(result: TargetResult) -> dict[str, Any]:
    return {"_target": result.label, "providers": result.providers}


def _target_reference(result: TargetResult) -> list[str]:
    """A dependency as the target cache's key holds it: `_target_json` up to its digest."""
    return [result.label, result.providers_digest]

