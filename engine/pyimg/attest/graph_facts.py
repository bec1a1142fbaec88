"""What the action graph knows of an image: which target made each layer, and which pinned
external inputs went into it (the `facts` the SBOM writer in actions/sbom.py takes)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyimg.actions.sbom import (
    deb_package,
    file_package,
    layer_paths,
    npm_packages,
    oci_package,
    wheel_package,
)
from pyimg.core.action import Action
from pyimg.core.digest import Digest
from pyimg.core.scheduler import ActionGraph
from pyimg.external.repositories import Repositories
from pyimg.loading.module_file import DebIndex, HttpFile, NpmLock, OciPull, PipLock
from pyimg.oci.deb import DebCache

__all__ = ["REPOSITORY_PACKAGES", "ExternalInput", "LayerWriter", "external_inputs",
           "image_facts"]

EXTERNAL = "external/"


@dataclass(frozen=True)
class ExternalInput:
    """One file of an external repository that an action read, with its digest."""

    repository: str
    exec_path: str
    sha256: str


def external_inputs(paths: Iterable[str], digests: Mapping[str, str]) -> list[ExternalInput]:
    """The inputs among `paths` that come from external repositories (`external/<name>/...`)."""
    out = []
    for p in sorted(set(paths)):
        if p.startswith(EXTERNAL) and p.count("/") >= 2:
            # An executable input's digest carries "+x" in the action key; the content's is without.
            digest = digests.get(p, "").removeprefix("sha256:").removesuffix("+x")
            out.append(ExternalInput(p.split("/", 2)[1], p, digest))
    return out


def _deb_urls(repos: Repositories, name: str) -> dict[str, str]:
    """file name -> URL of every .deb pyimg.lock pins for the deb_index `name`."""
    from pyimg.external.deb import entry_pins

    decl = repos.declaration(name)
    entry = repos.lock.get(name)
    if not isinstance(decl, DebIndex) or entry is None:
        return {}
    return {pin.file_name(): pin.url for pins in entry_pins(decl, entry).values() for pin in pins}


@dataclass(frozen=True)
class LayerWriter:
    """Which builtin wrote the layer's tar (oci_layer's `tar_writer`) and its params."""

    name: str
    params: Mapping[str, Any]


# (repositories, the repository's inputs the layer read, exec path -> host path, scratch
# directory, the layer's writer) -> the SBOM packages.
PackageMaker = Callable[[Repositories, list[ExternalInput], Callable[[str], Path], Path,
                         LayerWriter], list[dict[str, Any]]]


def _deb_packages(repos: Repositories, inputs: list[ExternalInput],
                  host_path: Callable[[str], Path], scratch: Path,
                  writer: LayerWriter) -> list[dict[str, Any]]:
    urls = _deb_urls(repos, inputs[0].repository)
    debs = DebCache(repos.cas)
    out = []
    for i in inputs:
        if not i.exec_path.endswith(".deb"):
            continue
        # The decoded entry `pyimg fetch` left (oci/deb.py), so no package is decompressed again.
        p = deb_package(host_path(i.exec_path), scratch, i.exec_path, debs,
                        Digest.from_hex(i.sha256))
        p.update(id=f"deb:{p['purl']}", sha256=i.sha256,
                 download_url=urls.get(i.exec_path.rsplit("/", 1)[-1], ""))
        out.append(p)
    return out


def _http_packages(repos: Repositories, inputs: list[ExternalInput],
                   host_path: Callable[[str], Path], scratch: Path,
                   writer: LayerWriter) -> list[dict[str, Any]]:
    # One package per file read, as the oci_sbom rule lists them; an http_file's file is the
    # download itself, so it has the URL (an archive's URL and sha256 are in the provenance).
    decl = repos.declaration(inputs[0].repository)
    url = decl.urls[0] if isinstance(decl, HttpFile) else ""  # an npm_lock's: none
    return [file_package(i.exec_path, i.sha256, url) for i in inputs]


def _oci_packages(repos: Repositories, inputs: list[ExternalInput],
                  host_path: Callable[[str], Path], scratch: Path,
                  writer: LayerWriter) -> list[dict[str, Any]]:
    # The pulled image's own package is made where its layers are known (`image_facts`).
    return []


def _wheel_urls(repos: Repositories, name: str) -> dict[str, str]:
    """file name -> URL of every wheel pyimg.lock pins for the pip_lock `name`."""
    from pyimg.external.python_lock import pip_entry_pins

    decl = repos.declaration(name)
    entry = repos.lock.get(name)
    if not isinstance(decl, PipLock) or entry is None:
        return {}
    return {pin.filename: pin.url for pins in pip_entry_pins(decl, entry).values()
            for pin in pins}


def _pip_packages(repos: Repositories, inputs: list[ExternalInput],
                  host_path: Callable[[str], Path], scratch: Path,
                  writer: LayerWriter) -> list[dict[str, Any]]:
    # A wheel py_layer installed has its installed files; one packed as a file has none.
    urls = _wheel_urls(repos, inputs[0].repository)
    spec = writer.params if writer.name == "py_layer" else None
    out = []
    for i in inputs:
        if not i.exec_path.endswith(".whl"):
            continue
        p = wheel_package(host_path(i.exec_path), i.exec_path, i.sha256, spec)
        p["download_url"] = urls.get(i.exec_path.rsplit("/", 1)[-1], "")
        out.append(p)
    return out


def _npm_urls(repos: Repositories, name: str) -> dict[str, str]:
    """lock path (node_modules/...) -> `resolved` URL of the npm_lock `name`'s package-lock."""
    from pyimg.external.npm_lock import check_lock

    decl = repos.declaration(name)
    if not isinstance(decl, NpmLock):
        return {}
    workspace = repos.session.workspace
    try:
        tree = check_lock(decl, (workspace / decl.lock).read_bytes(),
                          (workspace / decl.package_json).read_bytes())
    except OSError:
        return {}
    return {p.path: p.url for p in tree.packages if p.url}


def _npm_packages(repos: Repositories, inputs: list[ExternalInput],
                  host_path: Callable[[str], Path], scratch: Path,
                  writer: LayerWriter) -> list[dict[str, Any]]:
    # npm_layer's choice of packages (platform, dev) is read again from its params; tarballs
    # that went into a layer otherwise are files of it.
    layout = str(writer.params.get("layout") or "")
    if writer.name != "npm_layer" or layout not in {i.exec_path for i in inputs}:
        return _http_packages(repos, inputs, host_path, scratch, writer)
    digests = {i.exec_path: i.sha256 for i in inputs}
    packages = npm_packages(host_path(layout), layout, writer.params, host_path,
                            lambda path: digests.get(path, ""))
    urls = _npm_urls(repos, inputs[0].repository)
    prefix = str(writer.params.get("path") or "").strip("/")
    for p in packages:
        # The lock path of its (first) directory: <path>/a/node_modules/b -> node_modules/a/...
        first = str(p["directories"][0])
        lock_path = "node_modules" + (first[len(prefix):] if prefix else "/" + first)
        p["download_url"] = urls.get(lock_path, "")
    return packages


# Per declaration kind: the SBOM packages of the files a layer read from such a repository
# (docs/supply-chain.md).
REPOSITORY_PACKAGES: dict[str, PackageMaker] = {
    "deb_index": _deb_packages,
    "http_file": _http_packages,
    "http_archive": _http_packages,
    "oci_pull": _oci_packages,
    "pip_lock": _pip_packages,
    "npm_lock": _npm_packages,
}


def _oci_base_package(repos: Repositories, action: Action) -> dict[str, Any] | None:
    """The pulled image an oci_layout_import of `external/<repo>/layout` imports, as a package."""
    path = str((action.params or {}).get("path") or "")
    if not path.startswith(EXTERNAL):
        return None
    decl = repos.declaration(path.split("/", 2)[1])
    if not isinstance(decl, OciPull):
        return None
    return oci_package(decl.image, str(action.params["digest"]))


class _Walker:
    def __init__(self, actions: list[Action], repos: Repositories, digests: Mapping[str, str],
                 host_path: Callable[[str], Path], scratch: Path) -> None:
        self.graph = ActionGraph(actions)
        self.repos, self.digests, self.host_path, self.scratch = repos, digests, host_path, scratch
        self.packages: dict[str, dict[str, Any]] = {}

    def _writer_owner(self, layer: Action) -> str | None:
        """The target whose pkg_tar/deb_layer action has the spec this oci_layer streams."""
        params = layer.params or {}
        spec = params.get("tar_spec")
        if spec is None:
            producers = [self.graph.producer[i] for i in layer.inputs if i in self.graph.producer]
            return producers[0].owner if producers else (layer.inputs[0] if layer.inputs else None)
        writer = params.get("tar_writer") or "pkg_tar"
        for a in self.graph.actions:
            if a.builtin == writer and a.params == spec:
                return a.owner
        return None

    def _layer_packages(self, layer: Action) -> tuple[list[str], dict[str, Any]]:
        """The ids of the packages the layer holds, and where it installed each (`paths`: a
        package in several layers may be at other paths in each)."""
        reads = set(layer.inputs)
        for a in self.graph.closure(p for p in layer.inputs if p in self.graph.producer):
            reads.update(a.inputs)
        by_repo: dict[str, list[ExternalInput]] = {}
        for i in external_inputs(reads, self.digests):
            by_repo.setdefault(i.repository, []).append(i)
        ids: list[str] = []
        paths: dict[str, Any] = {}
        # A .deb of the workspace itself (not of a deb_index) is a package too.
        for path in sorted(reads):
            if path.endswith(".deb") and not path.startswith(EXTERNAL) and path in self.digests:
                p = deb_package(self.host_path(path), self.scratch, path)
                sha256 = self.digests[path].removeprefix("sha256:").removesuffix("+x")
                p.update(id=f"deb:{p['purl']}", sha256=sha256)
                self._add(p, ids, paths)
        params = layer.params or {}
        writer = LayerWriter(str(params.get("tar_writer") or "pkg_tar"),
                             params.get("tar_spec") or {})
        for name, inputs in sorted(by_repo.items()):
            maker = REPOSITORY_PACKAGES.get(self.repos.declaration(name).kind)
            made = maker(self.repos, inputs, self.host_path, self.scratch, writer) if maker else []
            for p in made:
                self._add(p, ids, paths)
        return ids, paths

    def _add(self, package: dict[str, Any], ids: list[str], paths: dict[str, Any]) -> None:
        self.packages.setdefault(package["id"], package)
        ids.append(package["id"])
        placed = layer_paths(package)
        if placed:
            paths[package["id"]] = placed

    def layers(self, layout_path: str, count: int) -> list[dict[str, Any]]:
        """The facts of the `count` layers of the image produced at `layout_path`, lowest first."""
        action = self.graph.producer.get(layout_path)
        if action is None:
            return [{"target": None, "packages": []}] * count
        if action.builtin != "oci_image":
            package = _oci_base_package(self.repos, action)
            ids = []
            if package is not None:
                self.packages.setdefault(package["id"], package)
                ids = [package["id"]]
            return [{"target": action.owner, "packages": ids}] * count
        params = action.params or {}
        own = []
        for desc in params.get("layers") or []:
            layer = self.graph.producer[desc]
            ids, paths = self._layer_packages(layer)
            fact: dict[str, Any] = {"target": self._writer_owner(layer), "packages": ids}
            if paths:
                fact["paths"] = paths
            own.append(fact)
        base: list[dict[str, Any]] = []
        if params.get("base"):
            base = self.layers(params["base"], max(count - len(own), 0))
        return base + own


def image_facts(label: str, layout_path: str, layer_count: int, actions: list[Action],
                repos: Repositories, digests: Mapping[str, str],
                host_path: Callable[[str], Path],
                targets: list[str | None] | None = None) -> dict[str, Any]:
    """The facts of the image `label` built at `layout_path` (exec path) with `layer_count`
    layers: `digests` maps exec paths to `sha256:` digests of the inputs the build read,
    `host_path` an input's exec path to where it is on this machine, `targets` the target that
    made each layer (else found among `actions`: then they must be all of the analysis')."""
    with tempfile.TemporaryDirectory() as scratch:
        walker = _Walker(actions, repos, digests, host_path, Path(scratch))
        layers = walker.layers(layout_path, layer_count)
    if targets is not None and len(targets) == len(layers):
        # What the image's providers say made each layer (as the oci_sbom rule reads it).
        layers = [{**layer, "target": t} for layer, t in zip(layers, targets, strict=True)]
    return {"image": label, "layers": layers,
            "packages": [walker.packages[k] for k in sorted(walker.packages)]}
