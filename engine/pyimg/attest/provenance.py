"""The provenance of a build: an in-toto Statement v1 with an SLSA provenance v1 predicate.

Reproducible by default: everything in it follows from the sources, the pins and pyimg's version.
What only this run knows (when, on which host) goes into `runDetails.metadata` and
`runDetails.byproducts` only when asked (`include_run_details`). docs/supply-chain.md documents
the build type.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any, TextIO

from pyimg.attest.built import Built, LastBuild, build_for_attestation, image_layout_path
from pyimg.attest.graph_facts import EXTERNAL, external_inputs
from pyimg.build.request import BuildRequest
from pyimg.core.session import Session
from pyimg.external.repositories import Repositories
from pyimg.loading.module_file import DebIndex, HttpArchive, HttpFile, OciPull
from pyimg.signing.formats import STATEMENT_TYPE

__all__ = ["BUILD_TYPE", "BUILDER_ID", "built_provenance", "provenance_bytes", "source_identity"]

PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://pyimg.dev/buildtypes/build/v1"
BUILDER_ID = "https://pyimg.dev/builder/local/v1"


def _git(workspace: Path, *args: str) -> str | None:
    try:
        r = subprocess.run(["git", "-C", str(workspace), *args], capture_output=True, text=True,
                           timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return r.stdout if r.returncode == 0 else None


def source_identity(workspace: Path, source_digests: dict[str, str]) -> dict[str, Any]:
    """Which sources were built: the digest of every workspace file the build read (path ->
    sha256, as canonical JSON), and in a git checkout the commit and whether the tree is clean."""
    tree = hashlib.sha256(
        json.dumps(source_digests, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    out: dict[str, Any] = {"digest": {"sha256": tree}}
    top = _git(workspace, "rev-parse", "--show-toplevel")
    commit = _git(workspace, "rev-parse", "HEAD") if top else None
    if commit:
        status = _git(workspace, "status", "--porcelain", "--untracked-files=normal", "--", ".")
        out["git"] = {"commit": commit.strip(),
                      "treeState": "clean" if status == "" else "dirty"}
    return out


def _dependency(repos: Repositories, name: str, files: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """The resolvedDependencies entries of repository `name` of which the build read `files`
    ((exec path, sha256) pairs): one per pulled image or download, one per .deb."""
    decl = repos.declaration(name)
    pin = repos.pin(decl)
    if isinstance(decl, OciPull):
        from pyimg.registry.reference import parse_reference

        ref = parse_reference(decl.image)
        algo, _, hex_ = pin.partition(":")
        return [{"name": name, "uri": f"oci://{ref.registry}/{ref.repository}@{pin}",
                 "digest": {algo: hex_}}]
    if isinstance(decl, (HttpFile, HttpArchive)):
        return [{"name": name, "uri": decl.urls[0], "digest": {"sha256": pin}}]
    if isinstance(decl, DebIndex):
        from pyimg.external.deb import entry_pins

        pins = {p.file_name(): p for ps in entry_pins(decl, repos.lock[name]).values() for p in ps}
        out = []
        for path, sha256 in files:
            p = pins.get(path.rsplit("/", 1)[-1])
            if p is not None:
                out.append({"name": f"{name}:{p.name}={p.version}:{p.architecture}",
                            "uri": p.url, "digest": {"sha256": p.sha256}})
            elif path.endswith(".deb"):
                out.append({"name": f"{name}:{path}", "uri": path, "digest": {"sha256": sha256}})
        return out
    # Another kind (pypi, npm: the lock-file branches) lists each file it read by digest.
    return [{"name": f"{name}:{path}", "uri": path, "digest": {"sha256": sha256}}
            for path, sha256 in files]


def built_provenance(built: Built, include_run_details: bool = False,
                     run_details: dict[str, Any] | None = None) -> bytes:
    """The statement of `built`: its subjects are the images and indexes it made."""
    from pyimg import __version__

    workspace = built.session.workspace
    subjects: list[dict[str, Any]] = []
    for target in built.top_level:
        if image_layout_path(target) is None:
            continue
        digest_file = next((f["path"] for f in target.default_files
                            if str(f["path"]).endswith(".digest")), None)
        if digest_file is None:
            continue
        algo, _, hex_ = (workspace / digest_file).read_text().strip().partition(":")
        subjects.append({"name": target.label, "digest": {algo: hex_}})
    if not subjects:
        from pyimg.errors import UsageError

        raise UsageError(f"{' '.join(built.request.patterns)}: no image or index among the "
                         "targets: a provenance statement needs at least one subject")
    read = {p for a in built.actions for p in a.inputs + a.tools if p in built.digests}
    sources = {p: built.digests[p].removeprefix("sha256:") for p in sorted(read)
               if not p.startswith((EXTERNAL, "pyimg-out/"))}
    # The BUILD and .bzl files, MODULE.pyimg and pyimg.lock: what loading read of the workspace.
    for host in built.analysis_files:
        path = Path(host)
        if path.is_file() and path.is_relative_to(workspace):
            sources[path.relative_to(workspace).as_posix()] = _sha256_file(path)
    by_repo: dict[str, list[tuple[str, str]]] = {}
    for i in external_inputs(read, built.digests):
        by_repo.setdefault(i.repository, []).append((i.exec_path, i.sha256))
    deps: list[dict[str, Any]] = []
    for name in sorted(by_repo):
        deps.extend(_dependency(built.repos, name, by_repo[name]))
    deps.sort(key=lambda d: (d["name"], d["uri"]))
    run: dict[str, Any] = {"builder": {"id": BUILDER_ID, "version": {"pyimg": __version__}}}
    if include_run_details:
        details = dict(run_details or {})
        run["metadata"] = {k: details.pop(k) for k in ("invocationId", "startedOn", "finishedOn")
                           if k in details}
        run["byproducts"] = [{"name": "host", "content": _b64(json.dumps(details, sort_keys=True))}]
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": sorted(subjects, key=lambda s: str(s["name"])),
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "targets": list(built.request.patterns),
                    "source": source_identity(workspace, sources),
                },
                "internalParameters": {
                    # What changes outputs besides sources and pins: the format of pyimg's
                    # outputs (its version and pinned libraries) and the target platforms
                    # (--platforms, else the default configuration's: this machine's).
                    "outputFormat": built.format_version,
                    "platforms": _platforms(built.request.platforms),
                },
                "resolvedDependencies": deps,
            },
            "runDetails": run,
        },
    }
    return json.dumps(statement, sort_keys=True, separators=(",", ":")).encode() + b"\n"


def _sha256_file(path: Path) -> str:
    from pyimg.core.digest import digest_file

    return digest_file(path)[0].hex


def _platforms(requested: tuple[str, ...]) -> list[str]:
    from pyimg.analysis.configuration import default_configuration

    return list(requested) or [str(default_configuration().platform)]


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def provenance_bytes(session: Session, request: BuildRequest, include_run_details: bool = False,
                     run_details: dict[str, Any] | None = None,
                     out: TextIO | None = None, last: LastBuild | None = None) -> bytes:
    """Build `request` (or take it from `last`, the record of that build, unchanged since) and
    return its provenance statement (in-toto v1, SLSA provenance v1)."""
    built = build_for_attestation(session, request, out, last)
    try:
        return built_provenance(built, include_run_details, run_details)
    finally:
        built.close()
