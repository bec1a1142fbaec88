"""External repositories: pins from MODULE.pyimg and pyimg.lock, the repository cache, fetching,
and materializing each repository as a directory with a generated BUILD file
(docs/external-inputs.md).

Every download goes through the shared content store (`<cache_root>/cas`), verified against its
digest before it is kept: so a second workspace of the same user downloads nothing, and
`--offline` needs only the store. A repository is materialized under
`<output_base>/external/<name>/` (files hard-linked from the store); its source files have exec
paths `external/<name>/<path>`.

Base image layers are lazy (docs/external-inputs.md): an oci_pull repository holds the manifests and
configs only, and `PulledBlobs` fetches a layer when an output needs its bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from pyimg.core import json_input
from pyimg.core.cas import ContentStore, atomic_write_bytes, remove_tree
from pyimg.core.digest import CHUNK, Digest, canonical_json
from pyimg.core.session import Session
from pyimg.core.workspace import EXTERNAL_DIR, MODULE_FILE
from pyimg.errors import IntegrityError, PyimgError, UnpinnedInputError, UserInputError
from pyimg.external.options import RegistryOptions
from pyimg.external.pulled import MARKER_VERSION
from pyimg.loading.module_file import (
    DebIndex,
    Declaration,
    HttpArchive,
    HttpFile,
    ModuleFile,
    NpmLock,
    OciPull,
    PipLock,
    evaluate_module,
)
from pyimg.oci import media_types as mt

if TYPE_CHECKING:
    from pyimg.core.sri import Sri
    from pyimg.external.deb import DebPin
    from pyimg.external.npm_lock import NpmPackage, NpmTree
    from pyimg.external.python_lock import WheelPin
    from pyimg.oci.model import Descriptor
    from pyimg.registry.client import RegistryClient
    from pyimg.registry.reference import Reference

__all__ = [
    "DEFAULT_PLATFORM",
    "LOCK_FILE",
    "MissingInputError",
    "Repositories",
    "read_lock",
    "write_lock",
]

LOCK_FILE = "pyimg.lock"
LOCK_VERSION = 1
DEFAULT_PLATFORM = "linux/amd64"


class MissingInputError(PyimgError):
    """--offline and the repository cache lacks something a build needs."""


# -- the lock file ---------------------------------------------------------------------------


def read_lock(workspace: Path) -> dict[str, dict[str, Any]]:
    path = workspace / LOCK_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json_input.loads(text)
    except ValueError as e:
        raise UserInputError(f"{LOCK_FILE} is not valid JSON ({e}); run `pyimg lock`") from None
    repos = data.get("repositories") if isinstance(data, dict) else None
    if not isinstance(repos, dict):
        raise UserInputError(f"{LOCK_FILE}: no 'repositories' object; run `pyimg lock`")
    return repos


def write_lock(workspace: Path, entries: dict[str, dict[str, Any]]) -> None:
    """Sorted keys, one repository per line: two branches that lock different inputs merge."""
    lines = [f"    {json.dumps(name)}: {_render_entry(entries[name])}" for name in sorted(entries)]
    body = ",\n".join(lines)
    text = '{\n  "repositories": {\n' + body + ("\n" if lines else "") + "  },\n"
    text += f'  "version": {LOCK_VERSION}\n}}\n'
    atomic_write_bytes(workspace / LOCK_FILE, text.encode())


def _render_entry(entry: dict[str, Any]) -> str:
    if entry.get("kind") == DebIndex.kind and isinstance(entry.get("debs"), dict):
        from pyimg.external.deb import render_entry

        return render_entry(entry)
    if entry.get("kind") == PipLock.kind and isinstance(entry.get("wheels"), dict):
        from pyimg.external import python_lock

        return python_lock.render_pip_entry(entry)
    return json.dumps(entry, sort_keys=True)


def lock_covers(decl: Declaration, entry: dict[str, Any] | None,
                workspace: Path | None = None) -> bool:
    """Does the lock entry still describe this declaration (same image and tag, same URLs,
    same sources, architectures and packages; for npm_lock, the same package-lock.json, read
    from `workspace`)?"""
    if not entry or entry.get("kind") != decl.kind:
        return False
    if isinstance(decl, NpmLock):
        from pyimg.external.npm_lock import npm_entry_covers as npm_covers

        return workspace is not None and npm_covers(decl, entry, _read_or_none(workspace / decl.lock))
    if isinstance(decl, DebIndex):
        from pyimg.external.deb import entry_covers

        return entry_covers(decl, entry)
    if isinstance(decl, PipLock):
        from pyimg.external import python_lock

        return python_lock.pip_entry_covers(decl, entry)
    if isinstance(decl, OciPull):
        return (
            entry.get("image") == decl.image
            and entry.get("tag") == decl.tag
            and isinstance(entry.get("digest"), str)
        )
    return entry.get("urls") == list(decl.urls) and isinstance(entry.get("sha256"), str)


# -- repositories ----------------------------------------------------------------------------


@dataclass
class _Pulled:
    """What an oci_pull fetched: the top manifest and the image manifests picked per platform."""

    top: Digest
    top_type: str
    images: list[tuple[str, Descriptor]]  # (platform text or "", the image manifest)
    blobs: list[Digest] = field(default_factory=list)  # manifests, indexes, configs: in the store
    layers: dict[str, int] = field(default_factory=dict)  # digest -> size, fetched only on demand
    available: list[str] = field(default_factory=list)  # the platforms of the index, if one
    single_platform: str = ""  # of a single image (no index): the platform its config says


class Repositories:
    """The external repositories of one workspace, for one command.

    `resolve(name, origin)` is the Loader's callback: it fetches (unless cached) and materializes
    the repository, then returns its directory. Nothing is fetched for a repository no build
    target uses.
    """

    def __init__(
        self,
        session: Session,
        *,
        registry: RegistryOptions | None = None,
        module: ModuleFile | None = None,
        out: TextIO | None = None,
    ) -> None:
        self.session = session
        self.registry = registry or RegistryOptions()
        self.offline = self.registry.offline
        self.module = module or evaluate_module(session.workspace)
        self.lock = read_lock(session.workspace)
        self.root = session.output_base / EXTERNAL_DIR
        self.cas = ContentStore(session.cache_root)
        self.out = out or sys.stderr
        self.downloads = 0  # blobs and files downloaded by this command (tests assert on it)
        self._client: RegistryClient | None = None
        self._client_lock = threading.Lock()
        self._done: dict[str, Path] = {}
        self._source_lock = threading.Lock()  # source_path() runs on executor threads
        self._npm: dict[str, NpmTree] = {}  # npm_lock name -> its checked lock

    # -- plumbing

    def client(self) -> RegistryClient:
        with self._client_lock:  # lazy layers are fetched from several actions at once
            if self._client is None:
                self._client = self.registry.client()
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def declaration(self, name: str, origin: str | None = None) -> Declaration:
        decl = self.module.get(name)
        if decl is None:
            import difflib

            close = difflib.get_close_matches(name, self.module.names, n=1)
            hint = f" (did you mean '@{close[0]}'?)" if close else ""
            raise UserInputError(
                f"no repository '@{name}' is declared in {MODULE_FILE}{hint}", origin=origin
            )
        return decl

    def pin(self, decl: Declaration) -> str:
        """The digest (oci_pull) or sha256 (http_*) the declaration is pinned to; an SRI string
        (`sha512-…`) for an http_* pinned by `integrity`."""
        if isinstance(decl, OciPull) and decl.digest:
            return decl.digest
        if isinstance(decl, (HttpFile, HttpArchive)) and (decl.sha256 or decl.integrity):
            return decl.sha256 or str(decl.integrity)
        entry = self.lock.get(decl.name)
        if lock_covers(decl, entry, self.session.workspace):
            assert entry is not None
            if isinstance(decl, NpmLock):
                self._npm_packages(decl)  # package.json may have moved on without the lock
            return str(entry["digest"] if isinstance(decl, (OciPull, DebIndex, PipLock, NpmLock))
                       else entry["sha256"])
        if isinstance(decl, NpmLock):
            if decl.name in self.lock:
                raise UnpinnedInputError(
                    f"npm_lock '{decl.name}': {decl.lock} is not the one {LOCK_FILE} recorded "
                    "(it changed, or is missing): run `pyimg lock` to check and record it",
                    origin=decl.origin,
                )
            what, why = f"{decl.lock}", "is checked and recorded only by the lock"
        elif isinstance(decl, DebIndex):
            what, why = "its packages", "is resolved only by the lock"
        elif isinstance(decl, PipLock):
            what, why = f"the wheels of {decl.source}", "is resolved only by the lock"
        elif isinstance(decl, OciPull):
            what, why = f"tag '{decl.tag}' of {decl.image}", "has no digest"
        else:
            what, why = "its download", "has no sha256"
        stale = " (its pyimg.lock entry is for other values)" if decl.name in self.lock else ""
        raise UnpinnedInputError(
            f"{decl.kind} '{decl.name}' {why} and {LOCK_FILE} does not pin {what}{stale}: "
            f"run `pyimg lock` to record it",
            origin=decl.origin,
        )

    def check_pinned(self) -> None:
        """Nothing unpinned enters a build: every declaration must have a digest or a lock entry."""
        for decl in self.module.declarations:
            self.pin(decl)

    def source_path(self, exec_path: str) -> Path:
        """BuildContext.source_root: `external/<name>/...` lives under the output base."""
        if exec_path.startswith(EXTERNAL_DIR + "/"):
            name = exec_path.split("/", 2)[1]
            if self.module.get(name) is not None:
                if name not in self._done:
                    # Once per build, also when the analysis came from its cache (and nothing
                    # resolved the repository): one made from a blob the store dropped as
                    # corrupt is made again before any of its files is read.
                    with self._source_lock:
                        self.resolve(name)
                return self.session.output_base / exec_path
        return self.session.workspace / exec_path

    # -- the Loader's callback

    def resolve(self, name: str, origin: str | None = None) -> Path:
        hit = self._done.get(name)
        if hit is not None:
            return hit
        decl = self.declaration(name, origin)
        pin = self.pin(decl)
        try:
            path = self.materialize(decl, pin)
        except PyimgError as e:
            if e.origin is None:
                raise type(e)(f"@{name}: {e.message}", origin=decl.origin) from None
            raise
        self._done[name] = path
        return path

    def fetch(self, decl: Declaration) -> None:
        """Bring everything the declaration pins into the repository cache."""
        pin = self.pin(decl)
        if isinstance(decl, OciPull):
            pulled = self._fetch_oci(decl, Digest.parse(pin))
            for digest, size in pulled.layers.items():  # for --offline builds: the layers too
                self.blob(decl, digest, size)
        elif isinstance(decl, DebIndex):
            for arch_pins in self._deb_pins(decl).values():
                for deb in arch_pins:
                    self._decode_deb(decl, deb, self._fetch_deb(decl, deb))
        elif isinstance(decl, PipLock):
            for platform_pins in self._wheel_pins(decl).values():
                for wheel in platform_pins:
                    self._fetch_wheel(decl, wheel.url, wheel.sha256)
        elif isinstance(decl, NpmLock):
            headers = self._npm_headers(decl)
            for pkg in self._npm_packages(decl).packages:
                self._fetch_npm(decl, pkg, headers)
        else:
            self._fetch_http(decl, pin)

    def materialize(self, decl: Declaration, pin: str) -> Path:
        dest = self.root / decl.name
        marker = self.root / f"{decl.name}.marker"
        want = {"v": MARKER_VERSION, "kind": decl.kind, "pin": pin, "decl": _decl_json(decl)}
        try:
            have = json.loads(marker.read_text())
        except (FileNotFoundError, ValueError):
            have = None
        if (have is not None and {k: have.get(k) for k in want} == want and dest.is_dir()
                and self._links_intact(decl, pin, dest)):
            return dest
        if isinstance(decl, OciPull):
            pulled = self._fetch_oci(decl, Digest.parse(pin))
            extra = self._write_oci_repo(decl, pulled, dest)
        elif isinstance(decl, DebIndex):
            extra = self._write_deb_repo(decl, dest)
        elif isinstance(decl, PipLock):
            extra = self._write_pip_repo(decl, dest)
        elif isinstance(decl, NpmLock):
            extra = self._write_npm_repo(decl, dest)
        elif isinstance(decl, HttpFile):
            digest = self._fetch_http(decl, pin)
            extra = self._write_http_file_repo(decl, digest, dest)
        else:
            digest = self._fetch_http(decl, pin)
            extra = self._write_http_archive_repo(decl, digest, dest)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(marker, canonical_json({**want, **extra}))
        return dest

    def _links_intact(self, decl: Declaration, pin: str, dest: Path) -> bool:
        """Whether every store blob a materialized repository links (an http_file's file, an
        oci_pull's manifests and configs) is still in the store with the same size: a blob
        dropped as corrupt (`pyimg cache verify`, materialization) is emptied and removed, and
        the repository must then be made again from a verified blob rather than read as it is."""
        linked: list[tuple[Path, Digest, bool]] = []
        if isinstance(decl, HttpFile):
            sha = self._sri_sha256(pin) if "-" in pin else pin
            if sha is None:
                return False
            linked.append((dest / "file" / decl.file_name, Digest("sha256", sha), decl.executable))
        elif isinstance(decl, OciPull):
            linked += [(p, Digest("sha256", p.name), False)
                       for p in dest.glob("layout/blobs/sha256/*")]
        elif isinstance(decl, DebIndex):
            linked += [(dest / arch / deb.file_name(), Digest("sha256", deb.sha256), False)
                       for arch, pins in self._deb_pins(decl).items() for deb in pins]
        elif isinstance(decl, PipLock):
            linked += [(dest / "wheels" / w.filename, Digest("sha256", w.sha256), False)
                       for pins in self._wheel_pins(decl).values() for w in pins]
        elif isinstance(decl, NpmLock):
            for pkg in self._npm_packages(decl).packages:
                file, sri = pkg.tarball(), pkg.integrity
                if file is None or sri is None:
                    continue
                sha = self._sri_sha256(str(sri))
                if sha is None:
                    return False
                linked.append((dest / file, Digest("sha256", sha), False))
        for path, digest, executable in linked:
            try:
                if path.stat().st_size != os.stat(self.cas.path_str(digest, executable)).st_size:
                    return False
            except FileNotFoundError:
                return False
        return True

    # -- oci_pull

    def _reference(self, decl: OciPull) -> Reference:
        from pyimg.registry.reference import parse_reference

        try:
            return parse_reference(decl.image)
        except PyimgError as e:
            raise UserInputError(
                f"oci_pull '{decl.name}': {e.message}", origin=decl.origin
            ) from None

    def _manifest(self, decl: OciPull, digest: Digest) -> bytes:
        if self.cas.verify(digest):
            return self.cas.path(digest).read_bytes()
        self._online(decl, f"manifest {digest}")
        ref = self._reference(decl).with_digest(digest)
        fetched = self.client().get_manifest(ref)  # verified against the digest
        self.downloads += 1
        self.cas.put_bytes(fetched.data)
        return fetched.data

    def blob(self, decl: OciPull, digest_text: str, size: int) -> Digest:
        """The blob in the repository cache (downloaded and verified unless it is there)."""
        digest = Digest.parse(digest_text)
        if self.cas.verify(digest):
            return digest
        self._online(decl, f"blob {digest}")
        tmp_dir = self.session.cache_root / "repos" / "tmp"
        tmp_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=tmp_dir)) / "blob"
        try:
            ref = self._reference(decl)
            self.client().fetch_blob(ref, digest, tmp, size)  # verified while streaming
            self.downloads += 1
            self.cas.put_file(tmp, known=digest, link=True)
        finally:
            shutil.rmtree(tmp.parent, ignore_errors=True)
        return digest

    def fetch_layer(self, repository: str, digest: Digest, size: int) -> Path:
        """A lazy layer of the pulled image `repository` (a `LayerFetcher`, core/builtin.py)."""
        decl = self.module.get(repository)
        if not isinstance(decl, OciPull):
            raise UserInputError(
                f"layer {digest} came from @{repository}, which MODULE.pyimg no longer declares "
                "as an oci_pull"
            )
        try:
            self.blob(decl, str(digest), size)
        except PyimgError as e:
            if e.origin is not None:
                raise
            # Name the declaration: the error surfaces far from MODULE.pyimg (a push).
            raise type(e)(f"@{repository}: {e.message}", origin=decl.origin) from None
        return self.cas.path(digest)

    def _online(self, decl: Declaration, what: str) -> None:
        if self.offline:
            raise MissingInputError(
                f"{decl.kind} '{decl.name}': {what} is not in the repository cache and --offline "
                "forbids downloading it (run `pyimg fetch` while online)",
                origin=decl.origin,
            )

    def platforms(self, decl: OciPull) -> list[str]:
        return list(decl.platforms) or [DEFAULT_PLATFORM]

    def _fetch_oci(self, decl: OciPull, digest: Digest) -> _Pulled:
        # Only when pulling: a build on materialized repositories needs none of this.
        from pyimg.oci.model import (
            Descriptor,
            load_json,
            parse_index,
            parse_manifest,
            sniff_media_type,
        )
        from pyimg.oci.platforms import first_platform_match, parse_platform

        what = f"oci_pull '{decl.name}'"
        data = self._manifest(decl, digest)
        top_type = sniff_media_type(load_json(data, f"{what}: manifest {digest}"))
        images: list[tuple[str, Descriptor]] = []
        if top_type in mt.INDEXES:
            entries = parse_index(data, f"{what}: index {digest}").manifests
            for text in self.platforms(decl):
                entry = first_platform_match(entries, parse_platform(text, f"{what}: platform"))
                if entry is None:
                    available = sorted(str(d.platform) for d in entries if d.platform is not None)
                    raise UserInputError(
                        f"{what}: index {digest} has no image for platform "
                        f"{text} (it has: {', '.join(available) or 'none'})",
                        origin=decl.origin,
                    )
                images.append((text, entry))
        elif top_type in mt.MANIFESTS:
            images.append(("", Descriptor(top_type, digest, len(data))))
        else:
            raise UserInputError(
                f"{what}: {digest} is {top_type!r}, not an image or index", origin=decl.origin
            )
        pulled = _Pulled(digest, top_type, [])
        if top_type in mt.INDEXES:
            pulled.available = sorted(
                {str(d.platform) for d in entries if d.platform is not None} - {"unknown/unknown"}
            )
        for platform, entry in images:
            mdigest = entry.digest
            mdata = self._manifest(decl, mdigest) if mdigest != digest else data
            where = f"{what}: manifest {mdigest}"
            mtype = sniff_media_type(load_json(mdata, where))
            if mtype not in mt.MANIFESTS:
                raise UserInputError(
                    f"{what}: {mdigest} is {mtype!r}, not an image manifest", origin=decl.origin
                )
            m = parse_manifest(mdata, where)
            # The config now (building needs it); layers when an output needs their bytes.
            config = self.blob(decl, str(m.config.digest), m.config.size)
            pulled.blobs.append(config)
            if entry.platform is None and not platform:
                # A single image: its config says its platform, which a build for another
                # platform is then checked against at analysis (rules/private/pull.bzl).
                from pyimg.oci.config import config_platform

                try:
                    found = config_platform(load_json(self.cas.read_bytes(config), where))
                    if found.os and found.architecture:
                        pulled.single_platform = str(found)
                except (PyimgError, ValueError, TypeError):
                    pass  # no platform to check against: the builtin's check remains
            for layer in m.layers:
                pulled.layers[str(layer.digest)] = layer.size
            pulled.images.append(
                (platform, Descriptor(mtype, mdigest, len(mdata), platform=entry.platform))
            )
            pulled.blobs.append(mdigest)
        if top_type in mt.INDEXES:
            pulled.blobs.append(digest)
        return pulled

    def _write_oci_repo(self, decl: OciPull, pulled: _Pulled, dest: Path) -> dict[str, Any]:
        from pyimg.oci.layout import REF_NAME, LayoutWriter

        tmp = self._fresh(dest)
        layout = LayoutWriter(tmp / "layout")
        for d in dict.fromkeys(pulled.blobs):
            self.cas.link_to(d, layout.blob_path(d))
        # Each image is named by its platform (the only one, by "latest").
        layout.finish([
            desc.with_annotations({REF_NAME: platform or "latest"})
            for platform, desc in pulled.images
        ])
        lines = [
            f'"""Generated by pyimg from {decl.origin}: oci_pull(name = "{decl.name}")."""',
            "",
            'load("@pyimg//rules/private:pull.bzl", "oci_pulled_image")',
            "",
        ]
        targets = [(decl.name, pulled.images[0][1].digest)]
        for platform, desc in pulled.images:
            if platform:
                targets.append((platform.replace("/", "_"), desc.digest))
        # `@x` itself, built for a requested platform, takes that platform's image, and names
        # the declaration when it pulled none for it (rules/private/pull.bzl).
        pulled_platforms = {
            str(desc.platform) if desc.platform is not None else text: str(desc.digest)
            for text, desc in pulled.images if text
        }
        if pulled.single_platform:
            pulled_platforms = {pulled.single_platform: str(pulled.images[0][1].digest)}
        by_platform = (
            f", platforms = {json.dumps(pulled_platforms)}, available = "
            f"{json.dumps(pulled.available)}, origin = {json.dumps(decl.origin or '')}"
        ) if pulled_platforms else ""
        for name, mdigest in dict.fromkeys(targets):
            lines.append(
                f'oci_pulled_image(name = "{name}", digest = "{mdigest}", '
                f'image = "{decl.image}", srcs = glob(["layout/**"])'
                + (by_platform if name == decl.name else "") + ")"
            )
        (tmp / "BUILD.pyimg").write_text("\n".join(lines) + "\n")
        self._swap(tmp, dest)
        ref = self._reference(decl)
        return {
            "registry": ref.registry,
            "repository": ref.repository,
            "blobs": sorted({str(d) for d in pulled.blobs} | set(pulled.layers)),
            "layers": dict(sorted(pulled.layers.items())),
        }

    # -- http_file / http_archive

    def _fetch_http(self, decl: HttpFile | HttpArchive, sha256: str | None) -> Digest:
        """Download (unless cached) and return the verified digest; `sha256=None`: trust on
        first use (only `pyimg lock` does that, to record the digest)."""
        executable = isinstance(decl, HttpFile) and decl.executable
        if sha256 is not None and "-" in sha256:
            from pyimg.core.sri import parse_sri

            return self._fetch_sri(decl, list(decl.urls), parse_sri(sha256), executable)
        if sha256 is not None:
            digest = Digest("sha256", sha256)
            if self.cas.verify(digest, executable):
                return digest
            if executable and self.cas.verify(digest):
                # The same bytes, cached by a non-executable declaration: add the +x variant.
                return self._store(self.cas.path(digest), digest, executable)
        self._online(decl, f"{decl.urls[0]} (sha256 {sha256})")
        errors = []
        for url in decl.urls:
            tmp_dir = Path(tempfile.mkdtemp(dir=self._tmp_root()))
            try:
                tmp = tmp_dir / "download"
                try:
                    got = _download(url, tmp)
                except OSError as e:
                    errors.append(f"{url}: {e}")
                    continue
                self.downloads += 1
                if sha256 is not None and got != sha256:
                    raise IntegrityError(
                        f"{decl.kind} '{decl.name}': {url} has sha256 {got}, but the declaration "
                        f"pins {sha256}",
                        origin=decl.origin,
                    )
                return self._store(tmp, Digest("sha256", got), executable)
            finally:
                shutil.rmtree(tmp_dir, ignore_errors=True)
        raise PyimgError(
            f"{decl.kind} '{decl.name}': download failed from every URL:\n  " + "\n  ".join(errors),
            origin=decl.origin,
        )

    def _sri_sha256(self, pin: str) -> str | None:
        """The sha256 of the blob pinned by the SRI string `pin`, when the cache has it."""
        from pyimg.core.sri import SriIndex, parse_sri

        return SriIndex(self.session.cache_root).get(parse_sri(pin))

    def _fetch_sri(self, decl: Declaration, urls: list[str], sri: Sri, executable: bool,
                   what: str = "", headers: Callable[[str], dict[str, str]] | None = None,
                   pinned_by: str = "the declaration") -> Digest:
        """The blob pinned by `sri` in the store: from the cache through the SRI index
        (core/sri.py), else downloaded from the first URL that answers and verified against the
        pin before anything keeps it. `headers(url)` gives credentials, never logged or kept."""
        from pyimg.core.sri import SriIndex, hash_file_by

        index = SriIndex(self.session.cache_root)
        known = index.get(sri)
        if known is not None:
            digest = Digest("sha256", known)
            if self.cas.verify(digest, executable):
                return digest
            if executable and self.cas.verify(digest):
                return self._store(self.cas.path(digest), digest, executable)
        label = f"{decl.kind} '{decl.name}'" + (f": {what}" if what else "")
        self._online(decl, f"{what + ' from ' if what else ''}{urls[0]} ({sri})")
        errors = []
        for url in urls:
            tmp_dir = Path(tempfile.mkdtemp(dir=self._tmp_root()))
            try:
                tmp = tmp_dir / "download"
                try:
                    _download(url, tmp, headers(url) if headers else None)
                except OSError as e:
                    errors.append(f"{url}: {e}")
                    continue
                self.downloads += 1
                got = hash_file_by(tmp, tuple(dict.fromkeys(("sha256", sri.algorithm))))
                if got[sri.algorithm] != sri.hex:
                    from pyimg.core.sri import Sri as _Sri

                    raise IntegrityError(
                        f"{label}: {url} has integrity {_Sri(sri.algorithm, got[sri.algorithm])}, "
                        f"but {pinned_by} pins {sri}: refused",
                        origin=decl.origin,
                    )
                digest = self._store(tmp, Digest("sha256", got["sha256"]), executable)
                index.record(sri, got["sha256"])
                return digest
            finally:
                shutil.rmtree(tmp_dir, ignore_errors=True)
        raise PyimgError(
            f"{label}: download failed from every URL:\n  " + "\n  ".join(errors),
            origin=decl.origin,
        )

    def _store(self, src: Path, digest: Digest, executable: bool) -> Digest:
        """Put verified bytes into the store (the +x variant for executable http_files)."""
        tmp_dir = Path(tempfile.mkdtemp(dir=self._tmp_root()))
        try:
            tmp = tmp_dir / "blob"
            shutil.copyfile(src, tmp)  # never chmod `src`: it may be a read-only store blob
            os.chmod(tmp, 0o755 if executable else 0o644)
            self.cas.put_file(tmp, known=digest, link=True)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
        return digest

    def _tmp_root(self) -> Path:
        d = self.session.cache_root / "repos" / "tmp"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _write_http_file_repo(self, decl: HttpFile, digest: Digest, dest: Path) -> dict[str, Any]:
        tmp = self._fresh(dest)
        name = decl.file_name
        self.cas.link_to(digest, tmp / "file" / name, decl.executable)
        header = (
            f'"""Generated by pyimg from {decl.origin}: http_file(name = "{decl.name}")."""\n\n'
        )
        (tmp / "file" / "BUILD.pyimg").write_text(
            header + f'filegroup(name = "file", srcs = [{json.dumps(name)}])\n'
        )
        (tmp / "BUILD.pyimg").write_text(
            header + f'filegroup(name = "{decl.name}", srcs = ["//file"])\n'
        )
        self._swap(tmp, dest)
        return {}

    def _write_http_archive_repo(
        self, decl: HttpArchive, digest: Digest, dest: Path
    ) -> dict[str, Any]:
        tmp = self._fresh(dest)
        tmp.rmdir()
        from pyimg.external import archive  # only when an archive is unpacked

        archive.extract_archive(
            self.cas.path(digest), tmp, decl.urls[0], decl.strip_prefix,
            max_bytes=decl.max_unpacked_bytes or archive.MAX_UNPACKED_BYTES,
            max_files=decl.max_unpacked_files or archive.MAX_UNPACKED_FILES,
        )
        if decl.build_file_content is not None:
            for name in ("BUILD", "BUILD.pyimg"):
                (tmp / name).unlink(missing_ok=True)
            (tmp / "BUILD.pyimg").write_text(decl.build_file_content)
        elif not any((tmp / n).is_file() for n in ("BUILD", "BUILD.pyimg")):
            (tmp / "BUILD.pyimg").write_text(
                f'filegroup(name = "{decl.name}", srcs = glob(["**"]))\n'
            )
        self._swap(tmp, dest)
        return {}

    # -- deb_index

    def _deb_pins(self, decl: DebIndex) -> dict[str, list[DebPin]]:
        from pyimg.external.deb import entry_pins

        self.pin(decl)
        return entry_pins(decl, self.lock[decl.name])

    def _fetch_deb(self, decl: DebIndex, deb: DebPin) -> Digest:
        """The pinned .deb in the repository cache, downloaded and verified unless it is there."""
        digest = Digest("sha256", deb.sha256)
        if self.cas.verify(digest):
            return digest
        what = f"{deb.name} {deb.version} ({deb.architecture})"
        self._online(decl, f"package {what} from {deb.url}")
        tmp_dir = Path(tempfile.mkdtemp(dir=self._tmp_root()))
        try:
            tmp = tmp_dir / "download"
            try:
                got = _download(deb.url, tmp)
            except OSError as e:
                raise PyimgError(f"deb_index '{decl.name}': download of {what} failed: "
                                 f"{deb.url}: {e}", origin=decl.origin) from None
            self.downloads += 1
            size = tmp.stat().st_size
            if got != deb.sha256 or size != deb.size:
                raise IntegrityError(
                    f"deb_index '{decl.name}': package {what} from {deb.url} has sha256 {got} "
                    f"({size} bytes), but {LOCK_FILE} pins {deb.sha256} ({deb.size} bytes): "
                    "refused",
                    origin=decl.origin,
                )
            return self._store(tmp, digest, False)
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    def _decode_deb(self, decl: DebIndex, deb: DebPin, digest: Digest) -> None:
        """Decode the fetched .deb into the repository cache once (oci/deb.py), so that no
        build decompresses it again. A package that does not decode is left to the build that
        uses it, whose error names the target and the package."""
        from pyimg.oci.deb import DebCache

        try:
            DebCache(self.cas).read(self.cas.path(digest), digest, f"{deb.file_name()}")
        except UserInputError:
            pass

    def _write_deb_repo(self, decl: DebIndex, dest: Path) -> dict[str, Any]:
        from pyimg.external.deb import write_repo

        pins = self._deb_pins(decl)
        tmp = self._fresh(dest)

        def link(deb: DebPin, path: Path) -> None:
            self.cas.link_to(self._fetch_deb(decl, deb), path)

        write_repo(decl, pins, tmp, link)
        self._swap(tmp, dest)
        return {}

    def _deb_lock_entry(self, decl: DebIndex) -> dict[str, Any]:
        from pyimg.external.deb import lock_entry

        if self.offline:
            raise MissingInputError("`pyimg lock` resolves Debian packages and needs the network")
        try:
            keyring = (self.session.workspace / decl.keyring).read_bytes()
        except OSError as e:
            raise UserInputError(
                f"deb_index '{decl.name}': cannot read keyring '{decl.keyring}': "
                f"{e.strerror or e}", origin=decl.origin) from None

        def fetch(url: str) -> bytes:
            tmp_dir = Path(tempfile.mkdtemp(dir=self._tmp_root()))
            try:
                try:
                    _download(url, tmp_dir / "download")
                except OSError as e:
                    raise PyimgError(f"deb_index '{decl.name}': cannot fetch {url}: {e}",
                                     origin=decl.origin) from None
                self.downloads += 1
                return (tmp_dir / "download").read_bytes()
            finally:
                shutil.rmtree(tmp_dir, ignore_errors=True)

        return lock_entry(decl, keyring, fetch, lambda text: print(text, file=self.out))

    # -- pip_lock

    def _wheel_pins(self, decl: PipLock) -> dict[str, list[WheelPin]]:
        from pyimg.external.python_lock import pip_entry_pins

        self.pin(decl)
        return pip_entry_pins(decl, self.lock[decl.name])

    def _fetch_wheel(self, decl: PipLock, url: str, sha256: str) -> Path:
        """The wheel in the repository cache, downloaded unless it is there; verified against
        `sha256` when it is known (always, once locked)."""
        if sha256:
            digest = Digest("sha256", sha256)
            if self.cas.verify(digest):
                return self.cas.path(digest)
        self._online(decl, f"wheel {url}")
        tmp_dir = Path(tempfile.mkdtemp(dir=self._tmp_root()))
        try:
            tmp = tmp_dir / "download"
            try:
                got = _download(url, tmp)
            except OSError as e:
                raise PyimgError(f"pip_lock '{decl.name}': download of {url} failed: {e}",
                                 origin=decl.origin) from None
            self.downloads += 1
            if sha256 and got != sha256:
                raise IntegrityError(
                    f"pip_lock '{decl.name}': {url} has sha256 {got}, but {LOCK_FILE} pins "
                    f"{sha256}: refused", origin=decl.origin)
            return self.cas.path(self._store(tmp, Digest("sha256", got), False))
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)

    def _write_pip_repo(self, decl: PipLock, dest: Path) -> dict[str, Any]:
        from pyimg.external.python_lock import write_pip_repo

        pins = self._wheel_pins(decl)
        tmp = self._fresh(dest)

        def link(wheel: WheelPin, path: Path) -> None:
            self._fetch_wheel(decl, wheel.url, wheel.sha256)
            self.cas.link_to(Digest("sha256", wheel.sha256), path)

        write_pip_repo(decl, pins, tmp, link)
        self._swap(tmp, dest)
        return {}

    def _pip_lock_entry(self, decl: PipLock) -> dict[str, Any]:
        from pyimg.external.python_index import get_page
        from pyimg.external.python_lock import pip_lock_entry

        if self.offline:
            raise MissingInputError("`pyimg lock` reads Python package indexes and needs the "
                                    "network")

        def page(url: str, accept: str) -> tuple[bytes, str, str]:
            self.downloads += 1
            return get_page(url, accept)

        return pip_lock_entry(decl, self.session.workspace, page,
                          lambda url, sha: self._fetch_wheel(decl, url, sha))

    # -- npm_lock

    def _npm_packages(self, decl: NpmLock) -> NpmTree:
        """The declaration's package-lock.json, checked (once per command)."""
        from pyimg.external.npm_lock import check_lock

        if decl.name not in self._npm:
            lock, manifest = self._npm_files(decl)
            self._npm[decl.name] = check_lock(decl, lock, manifest)
        return self._npm[decl.name]

    def _npm_files(self, decl: NpmLock) -> tuple[bytes, bytes]:
        found = []
        for rel in decl.workspace_files:
            try:
                found.append((self.session.workspace / rel).read_bytes())
            except OSError as e:
                raise UserInputError(f"npm_lock '{decl.name}': cannot read '{rel}': "
                                     f"{e.strerror or e}", origin=decl.origin) from None
        return found[0], found[1]

    def _npm_headers(self, decl: NpmLock) -> Callable[[str], dict[str, str]]:
        from pyimg.external.npm_lock import auth_header, environment, npmrc_texts, read_npmrc

        env = environment()
        settings = read_npmrc(npmrc_texts(self.session.workspace, decl, env), env)

        def headers(url: str) -> dict[str, str]:
            value = auth_header(url, settings)
            return {"Authorization": value} if value else {}

        return headers

    def _fetch_npm(self, decl: NpmLock, pkg: NpmPackage,
                   headers: Callable[[str], dict[str, str]] | None = None) -> Digest | None:
        if pkg.integrity is None or pkg.url is None:
            return None  # bundled: its files are in its parent's tarball
        return self._fetch_sri(decl, [pkg.url], pkg.integrity, False,
                               f"package '{pkg.path}' ({pkg.name}@{pkg.version})",
                               headers or self._npm_headers(decl), decl.lock)

    def _write_npm_repo(self, decl: NpmLock, dest: Path) -> dict[str, Any]:
        from pyimg.external.npm_lock import write_npm_repo

        tree = self._npm_packages(decl)
        headers = self._npm_headers(decl)
        tmp = self._fresh(dest)

        def link(pkg: NpmPackage, path: Path) -> None:
            digest = self._fetch_npm(decl, pkg, headers)
            assert digest is not None
            self.cas.link_to(digest, path)

        write_npm_repo(decl, tree, tmp, link)
        self._swap(tmp, dest)
        return {}

    def _fresh(self, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".tmp-{os.getpid()}-{dest.name}"
        _rmtree(tmp)
        tmp.mkdir()
        return tmp

    def _swap(self, tmp: Path, dest: Path) -> None:
        old = dest.parent / f".old-{os.getpid()}-{dest.name}"
        if dest.exists() or dest.is_symlink():
            os.rename(dest, old)
        os.rename(tmp, dest)
        _rmtree(old)

    # -- pyimg lock

    def lock_entry(self, decl: Declaration) -> dict[str, Any] | None:
        """Resolve what the declaration leaves open (a tag, a missing sha256) into a lock entry;
        None when the declaration pins itself."""
        if isinstance(decl, DebIndex):
            return self._deb_lock_entry(decl)
        if isinstance(decl, PipLock):
            return self._pip_lock_entry(decl)
        if isinstance(decl, NpmLock):
            from pyimg.external.npm_lock import npm_lock_entry

            npm_entry = npm_lock_entry(decl, *self._npm_files(decl))
            scripts = sorted({p.name for p in self._npm_packages(decl).packages
                              if p.has_install_script})
            if scripts:
                print(f"{decl.origin}: warning: npm_lock '{decl.name}': {len(scripts)} "
                      f"package{'s' * (len(scripts) != 1)} with install scripts, which npm_layer "
                      f"does not run (docs/node.md): {', '.join(scripts)}", file=self.out)
            return npm_entry
        if isinstance(decl, OciPull):
            if decl.digest:
                return None
            if self.offline:
                raise MissingInputError("`pyimg lock` resolves tags and needs the network")
            ref = self._reference(decl).with_tag(decl.tag or "latest")
            top = self.client().get_manifest(ref)
            self.cas.put_bytes(top.data)
            entry: dict[str, Any] = {
                "digest": str(top.digest),
                "image": decl.image,
                "kind": decl.kind,
                "media_type": top.media_type,
                "tag": decl.tag,
            }
            if top.is_index:
                platforms = {}
                for d in top.index().manifests:
                    key = str(d.platform) if d.platform is not None else ""
                    if key and key != "unknown/unknown":  # attestation manifests
                        platforms[key] = str(d.digest)
                entry["platforms"] = dict(sorted(platforms.items()))
            return entry
        if decl.sha256 or decl.integrity:
            return None
        digest = self._fetch_http(decl, None)
        return {"kind": decl.kind, "sha256": digest.hex, "urls": list(decl.urls)}


def _decl_json(decl: Declaration) -> dict[str, Any]:
    d = asdict(decl)
    d.pop("origin", None)  # moving a line in MODULE.pyimg must not redo a repository
    d.pop("max_unpacked_bytes", None)  # bounds on unpacking never change what was unpacked
    d.pop("max_unpacked_files", None)
    return d


def _read_or_none(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def _download(url: str, dest: Path, headers: dict[str, str] | None = None) -> str:
    """Stream `url` to `dest`, returning the sha256 hex of what arrived."""
    h = hashlib.sha256()
    if url.startswith("file://"):
        src = urllib.parse.urlsplit(url).path
        with open(src, "rb") as s, open(dest, "wb") as f:
            while chunk := s.read(CHUNK):
                h.update(chunk)
                f.write(chunk)
        return h.hexdigest()
    import requests

    try:
        with requests.get(url, stream=True, timeout=(10, 120), headers=headers) as resp:
            if resp.status_code != 200:
                raise OSError(f"HTTP {resp.status_code}")
            with open(dest, "wb") as f:
                for chunk in resp.iter_content(CHUNK):
                    h.update(chunk)
                    f.write(chunk)
    except requests.RequestException as e:
        raise OSError(str(e)) from None
    return h.hexdigest()


def _rmtree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        remove_tree(path)
