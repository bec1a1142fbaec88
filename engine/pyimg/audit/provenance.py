"""Tracing a difference in an output back to the action, and the source entry, that made it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyimg.core.digest import Digest

__all__ = ["ActionRef", "Provenance"]

@dataclass(frozen=True)
class ActionRef:
    """An action named in an explanation: what role it played and where the user declared it."""

    role: str  # e.g. "image", "layer blob", "layer tar", "file source"
    label: str
    mnemonic: str
    origin: str
    output: str
    detail: str = ""

    def describe(self) -> str:
        extra = f" [{self.detail}]" if self.detail else ""
        return f"{self.role}: {self.mnemonic} {self.label} ({self.origin}) -> {self.output}{extra}"

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "label": self.label,
            "mnemonic": self.mnemonic,
            "origin": self.origin,
            "output": self.output,
            "detail": self.detail,
        }


class Provenance:
    """Which action of a run produced which output path and which bytes, from the run's build
    record (key components per action) and its action cache (output digests)."""

    def __init__(self, output_base: Path, cache_root: Path) -> None:
        from pyimg.build.build_record import load_build_records
        from pyimg.core.action_cache import ActionCache
        from pyimg.core.cas import ContentStore

        try:
            data, _ = load_build_records(output_base)
        except ValueError:
            data = {}
        cache = ActionCache(cache_root, ContentStore(cache_root))
        self.records: list[dict[str, Any]] = []
        self.by_path: dict[str, dict[str, Any]] = {}
        self.by_digest: dict[str, tuple[dict[str, Any], str]] = {}
        in_dirs: list[tuple[str, tuple[dict[str, Any], str]]] = []
        for name, rec in sorted(data.items()):
            label, mnemonic, _ = name.split(" ", 2)
            comp = rec.get("components") or {}
            entry = {
                "label": label,
                "mnemonic": mnemonic,
                "origin": rec.get("origin", ""),
                "outputs": list(comp.get("outputs") or []) + list(comp.get("output_dirs") or []),
                "inputs": list((comp.get("inputs") or {}).keys()),
                "params": comp.get("params"),
            }
            self.records.append(entry)
            for p in entry["outputs"]:
                self.by_path[p] = entry
            result = cache.get(Digest.parse(rec["key"])) if rec.get("key") else None
            if result is None:
                continue
            for p, f in result.files.items():
                self.by_digest.setdefault(str(f.digest), (entry, p))
            for d, tree in result.dirs.items():
                in_dirs += [(str(f.digest), (entry, f"{d}/{rel}")) for rel, f in tree.items()]
        # A blob is attributed to the action that wrote it as a file (the oci_layer action), not
        # to an image layout that links it in; a directory only when no file action wrote it.
        for digest, hit in in_dirs:
            self.by_digest.setdefault(digest, hit)

    @staticmethod
    def ref(role: str, rec: dict[str, Any], output: str, detail: str = "") -> ActionRef:
        return ActionRef(role, rec["label"], rec["mnemonic"], rec["origin"], output, detail)

    def producer(self, path: str) -> dict[str, Any] | None:
        rec = self.by_path.get(path)
        if rec is not None:
            return rec
        # A file inside an output directory.
        for p, r in self.by_path.items():
            if path.startswith(p + "/"):
                return r
        return None

    def for_output(self, path: str, role: str) -> list[ActionRef]:
        rec = self.producer(path)
        return [self.ref(role, rec, path)] if rec else []

    def for_layer(self, digests: tuple[str, ...], entry: str | None) -> list[ActionRef]:
        """The action that wrote the layer blob, the tar it compressed, and (following pkg_tar's
        entries from in-layer path to source) the action that produced the differing file."""
        hit = next((self.by_digest[d] for d in digests if d in self.by_digest), None)
        if hit is None:
            return []
        rec, blob = hit
        refs = [self.ref("layer blob", rec, blob)]
        if rec["mnemonic"] != "OciLayer":
            return refs  # e.g. a base image's layer, imported as is
        params = rec["params"] if isinstance(rec["params"], dict) else {}
        if isinstance(params.get("tar_spec"), dict):
            # The layer streamed a pkg_tar's tar from its spec: follow the entry from there.
            return refs + self.trace_entry(params["tar_spec"], rec, blob, entry, depth=0)
        for tar in rec["inputs"]:
            refs += self.trace_tar(tar, entry, depth=0)
        return refs

    def trace_tar(self, tar: str, entry: str | None, depth: int = 0) -> list[ActionRef]:
        rec = self.producer(tar)
        if rec is None:
            return [ActionRef("layer tar", "(source file)", "", "", tar)]
        refs = [self.ref("layer tar", rec, tar)]
        if not isinstance(rec["params"], dict):
            return refs
        more = self.trace_entry(rec["params"], rec, tar, entry, depth)
        if more and more[0].role == "layer tar":
            return more  # the tar made the entry itself: that one line says it all
        return refs + more

    def trace_entry(self, params: dict[str, Any], rec: dict[str, Any], tar: str,
                    entry: str | None, depth: int) -> list[ActionRef]:
        """From pkg_tar `params` (written by `rec`), the action that produced `entry`'s bytes."""
        refs: list[ActionRef] = []
        if entry is None or depth > 8:
            return refs
        src = _entry_source(params, entry)
        if src is None:
            return refs
        kind, value = src
        if kind == "tars":  # the entry came in through a merged tar (`deps`): find which
            traced = [self.trace_tar(t, entry, depth + 1) for t in value.split("\0")]
            best = max(traced, key=len)
            return refs + best
        if kind == "self":
            return [
                ActionRef("layer tar", rec["label"], rec["mnemonic"], rec["origin"], tar, value)
            ]
        producer = self.producer(value)
        if producer is None:
            return refs + [ActionRef("file source", "(source file)", "", "", value, entry)]
        return refs + [self.ref("file source", producer, value, entry)]


def _entry_source(params: dict[str, Any], entry: str) -> tuple[str, str] | None:
    """Where pkg_tar took an in-layer path from: ("src", exec path) for a file or a directory
    input holding it, ("self", why) when pkg_tar made it itself, ("tars", NUL-joined paths) when
    it can only have come from one of the merged tars (`deps`)."""
    entry = entry.strip("/")
    for spec in params.get("entries") or []:
        if not isinstance(spec, dict):
            continue
        path = str(spec.get("path", "")).strip("/")
        if path == entry or entry.startswith(path + "/"):
            if spec.get("src"):
                return "src", str(spec["src"])
            return "self", f"{spec.get('type', 'entry')} {path}"
    for name in ("symlinks", "empty_dirs", "opaque_dirs"):
        value = params.get(name) or {}
        if entry in value:
            return "self", f"{name} {entry}"
    deps = [str(d) for d in params.get("deps") or []]
    return ("tars", "\0".join(deps)) if deps else None
