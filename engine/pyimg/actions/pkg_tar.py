"""The `pkg_tar` builtin: a canonical, uncompressed layer tar from files, links, dirs and tars."""

from __future__ import annotations

import os
import posixpath
import stat
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from pyimg.actions._common import (
    input_path,
    layer_mtime,
    params_dict,
    parse_mode,
    parse_owner,
    write_tar_output,
)
from pyimg.actions.builtins import builtin
from pyimg.core.builtin import BuiltinCall
from pyimg.core.streams import ByteWriter
from pyimg.errors import UserInputError
from pyimg.oci.tar import (
    TarEntry,
    entries_from_tar,
    normalize_path,
    opaque_whiteout,
    whiteout,
    write_tar,
)

__all__ = ["pkg_tar", "write_layer_tar"]

_PARAMS = {
    "entries",
    "mode",
    "modes",
    "owner",
    "mtime",
    "deps",
    "deps_dir",
    "remove",
    "opaque_dirs",
    "empty_dirs",
    "symlinks",
}
_ENTRY_KEYS = {"path", "src", "type", "target", "mode", "owner"}


def _tree(root: Path, dest: str, owner: tuple[int, int] | None) -> Iterator[TarEntry]:
    """A directory input, recursively: files (exec bit kept), directories, symlinks as such."""
    uid, gid = owner if owner else (None, None)
    yield TarEntry(dest, "dir", uid=uid, gid=gid)
    with os.scandir(root) as it:
        children = sorted(it, key=lambda e: e.name)
    for child in children:
        path = posixpath.join(dest, child.name)
        st = child.stat(follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            yield TarEntry(path, "symlink", target=os.readlink(child.path), uid=uid, gid=gid)
        elif stat.S_ISDIR(st.st_mode):
            yield from _tree(Path(child.path), path, owner)
        elif stat.S_ISREG(st.st_mode):
            yield TarEntry(
                path,
                "file",
                src=Path(child.path),
                size=st.st_size,
                executable=bool(st.st_mode & 0o111),
                uid=uid,
                gid=gid,
            )
        else:
            raise UserInputError(f"{child.path}: not a file, directory or symlink")


def _entry(call: BuiltinCall, i: int, spec: Any) -> list[TarEntry]:
    what = f"pkg_tar: entries[{i}]"
    if not isinstance(spec, dict):
        raise UserInputError(f"{what}: expected an object, got {spec!r}")
    unknown = sorted(set(spec) - _ENTRY_KEYS)
    if unknown:
        raise UserInputError(f"{what}: unknown keys {unknown} (known: {sorted(_ENTRY_KEYS)})")
    path = normalize_path(spec.get("path", ""), f"{what}.path")
    what = f"pkg_tar: entries[{i}] ({path})"
    kind = spec.get("type") or ("file" if "src" in spec else None)
    mode = parse_mode(spec["mode"], f"{what}.mode") if spec.get("mode") is not None else None
    owner = parse_owner(spec["owner"], f"{what}.owner") if spec.get("owner") is not None else None
    uid, gid = owner if owner else (None, None)
    if kind == "file":
        src = input_path(call, spec.get("src"), f"{what}.src")
        if src.is_dir():
            if mode is not None:
                raise UserInputError(f"{what}: mode applies to files; use modes for a directory")
            return list(_tree(src, path, owner))
        try:
            st = os.stat(src)
        except FileNotFoundError:
            raise UserInputError(f"{what}: input {spec['src']!r} does not exist") from None
        return [
            TarEntry(
                path,
                "file",
                mode=mode,
                uid=uid,
                gid=gid,
                src=src,
                size=st.st_size,
                executable=bool(st.st_mode & 0o111),
            )
        ]
    if kind == "dir":
        return [TarEntry(path, "dir", mode=mode, uid=uid, gid=gid)]
    if kind in ("symlink", "hardlink"):
        target = spec.get("target")
        if not isinstance(target, str) or not target:
            raise UserInputError(f"{what}: a {kind} needs a 'target'")
        return [TarEntry(path, kind, mode=mode, uid=uid, gid=gid, target=target)]
    raise UserInputError(
        f"{what}: 'type' must be file (with 'src'), dir, symlink or hardlink, got {kind!r}"
    )


@builtin("pkg_tar")
def pkg_tar(call: BuiltinCall) -> None:
    """Write one uncompressed canonical layer tar to the single output.

    params (JSON object; every key optional):
      entries: list of objects, each one of
        {"path": P, "src": EXEC_PATH}             a file from a declared input; an input that is a
                                                  directory adds its whole tree under P (files,
                                                  sub-directories, symlinks kept as symlinks)
        {"path": P, "type": "dir"}                a directory
        {"path": P, "type": "symlink", "target": T}   T stored verbatim (absolute or relative)
        {"path": P, "type": "hardlink", "target": Q}  Q is another in-layer path of a file
        each may also carry "mode" (int or octal string, e.g. "0755") and "owner" ("uid.gid").
        P is the final in-layer path (no leading '/', no '..'; a leading './' is dropped).
      mode: int | octal string | null. Mode of every file without its own mode (also the files
            of a directory input; not deps, dirs or links). Default:
            0755 for inputs with any exec bit set, else 0644.
      modes: {in-layer path: mode}. Overrides any entry's mode (files, dirs, links, and implied
             parent directories). A path that is not in the layer is an error.
      owner: "uid.gid", default "0.0": owner of every entry without its own owner (entries
             merged from deps keep theirs). User and group names are always empty.
      mtime: int seconds since the epoch (the rule resolves its `mtime` attr or
             SOURCE_DATE_EPOCH), default 0; every entry gets it.
      deps: [EXEC_PATH]: tars (plain, gzip or zstd) whose entries are merged in (modes, owners and
            link targets kept; mtimes replaced). Order does not matter.
      deps_dir: in-layer directory | null: where the deps' entries land (their paths and hard
            link targets are prefixed with it; symlink targets are kept verbatim).
      remove: [in-layer path]: written as whiteouts `dir/.wh.name`.
      opaque_dirs: [in-layer dir]: written as opaque whiteouts `dir/.wh..wh..opq`.
      empty_dirs: [in-layer path]: directories (default mode 0755).
      symlinks: {in-layer path: target}: symlinks (same as entries of type symlink).

    Rules: entries are written sorted bytewise by path; missing parent directories are added
    (0755); a path declared twice is an error naming it, except a directory declared twice with
    the same mode and owner. Hard links are stored as links: the bytewise-first path of a group
    carries the content. Output: exactly one declared output, the `.tar`.
    """
    params = params_dict(call, _PARAMS, "pkg_tar")
    write_tar_output(call, "pkg_tar", lambda sink, scratch: write_layer_tar(call, params, sink, scratch))


def write_layer_tar(call: BuiltinCall, params: dict[str, Any], out: ByteWriter, scratch: Path,
                    what: str = "pkg_tar") -> None:
    """Write the canonical tar that pkg_tar `params` describe to `out` (the one definition of
    those bytes: `oci_layer` streams the same tar straight into its compressor)."""
    mtime = layer_mtime(params, what)
    uid, gid = parse_owner(params.get("owner") or "0.0", f"{what}: owner")
    default_mode = (
        parse_mode(params["mode"], f"{what}: mode") if params.get("mode") is not None else None
    )

    entries: list[TarEntry] = []
    specs = params.get("entries") or []
    if not isinstance(specs, list):
        raise UserInputError(f"{what}: entries must be a list")
    for i, spec in enumerate(specs):
        call.check_cancelled()
        for entry in _entry(call, i, spec):
            if entry.kind == "file" and entry.mode is None and default_mode is not None:
                entry = replace(entry, mode=default_mode)
            entries.append(entry)
    for path in params.get("empty_dirs") or []:
        entries.append(TarEntry(normalize_path(path, f"{what}: empty_dirs"), "dir"))
    symlinks = params.get("symlinks") or {}
    if not isinstance(symlinks, dict):
        raise UserInputError(f"{what}: symlinks must be a dict of path to target")
    for path, target in sorted(symlinks.items()):
        if not isinstance(target, str) or not target:
            raise UserInputError(f"{what}: symlinks[{path!r}]: target must be a non-empty string")
        entries.append(
            TarEntry(normalize_path(path, f"{what}: symlinks"), "symlink", target=target)
        )
    for path in params.get("remove") or []:
        entries.append(whiteout(path))
    for path in params.get("opaque_dirs") or []:
        entries.append(opaque_whiteout(path))
    deps_dir = params.get("deps_dir")
    if deps_dir is not None:
        deps_dir = normalize_path(deps_dir, f"{what}: deps_dir")
    for i, dep in enumerate(params.get("deps") or []):
        call.check_cancelled()
        src = input_path(call, dep, f"{what}: deps[{i}]")
        merged = entries_from_tar(src, scratch, what=f"{what}: deps[{i}] ({dep})")
        if deps_dir is not None:
            merged = [_under(deps_dir, e) for e in merged]
        entries.extend(merged)
    modes = params.get("modes") or {}
    if not isinstance(modes, dict):
        raise UserInputError(f"{what}: modes must be a dict of path to mode")
    if modes:
        entries = _apply_modes(entries, modes)
    write_tar(out, entries, mtime=mtime, uid=uid, gid=gid, check_cancelled=call.check_cancelled)


def _under(directory: str, entry: TarEntry) -> TarEntry:
    """`entry` moved under `directory`; a hard link's target is an in-layer path, so it moves
    too."""
    path = posixpath.join(directory, normalize_path(entry.path))
    if entry.kind == "hardlink":
        return replace(entry, path=path, target=posixpath.join(directory, normalize_path(entry.target)))
    return replace(entry, path=path)


def _apply_modes(entries: list[TarEntry], modes: dict[str, Any]) -> list[TarEntry]:
    wanted = {
        normalize_path(p, "pkg_tar: modes"): parse_mode(m, f"pkg_tar: modes[{p!r}]")
        for p, m in modes.items()
    }
    out: list[TarEntry] = []
    used: set[str] = set()
    parents: set[str] = set()
    for entry in entries:
        path = normalize_path(entry.path)
        parent = posixpath.dirname(path)
        while parent:
            parents.add(parent)
            parent = posixpath.dirname(parent)
        if path in wanted:
            used.add(path)
            entry = replace(entry, mode=wanted[path])
        out.append(entry)
    for path in sorted(set(wanted) - used):
        if path not in parents:
            raise UserInputError(f"pkg_tar: modes: {path!r} is not a path in the layer")
        out.append(TarEntry(path, "dir", mode=wanted[path]))
    return out
