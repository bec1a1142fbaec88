"""What the dynamic loader would load for an ELF program: its interpreter and shared libraries.

Read from the file alone (PT_INTERP, DT_NEEDED, DT_RUNPATH/DT_RPATH) and resolved the way ld.so
does for a scrubbed environment (no LD_LIBRARY_PATH): RPATH when there is no RUNPATH, then RUNPATH,
then /etc/ld.so.cache, then the default directories. Nothing is run. What a program opens with
dlopen() (NSS modules, plugins, Python extension modules) is not visible here: tools/identity
documents that limit (docs/concepts.md, "Tools are inputs").
"""

from __future__ import annotations

import functools
import mmap
import os
import struct
from dataclasses import dataclass

__all__ = ["ElfInfo", "library_closure", "read_elf"]

_PT_LOAD, _PT_DYNAMIC, _PT_INTERP = 1, 2, 3
_DT_NULL, _DT_NEEDED, _DT_STRTAB, _DT_RPATH, _DT_RUNPATH = 0, 1, 5, 15, 29
_LD_SO_CACHE = "/etc/ld.so.cache"
_CACHE_MAGIC = b"glibc-ld.so.cache1.1"
_DEFAULT_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
                 "/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib")
_MAX_LIBRARIES = 512  # a bound on the closure walk, far above any real program's


@dataclass(frozen=True)
class ElfInfo:
    """The dynamic-linking facts of one ELF file; `machine` pairs a library with its program."""

    bits: int  # 32 or 64
    little_endian: bool
    machine: int
    interpreter: str | None
    needed: tuple[str, ...]
    search_path: tuple[str, ...]  # RPATH/RUNPATH entries with $ORIGIN expanded, in ld.so's order


def read_elf(path: str) -> ElfInfo | None:
    """The ELF facts of `path`, or None when it is not an ELF file (a script, say) or is damaged."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != b"\x7fELF":
                return None
            # Mapped, not read: only the headers and the dynamic strings are touched.
            with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as data:
                return _parse(data, path)
    except (OSError, struct.error, IndexError, ValueError):
        return None


def _parse(data: mmap.mmap, path: str) -> ElfInfo | None:
    bits = {1: 32, 2: 64}.get(data[4])
    if bits is None:
        return None
    end = "<" if data[5] == 1 else ">"
    machine = struct.unpack_from(end + "H", data, 18)[0]
    if bits == 64:
        phoff, = struct.unpack_from(end + "Q", data, 32)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 54)
    else:
        phoff, = struct.unpack_from(end + "I", data, 28)
        phentsize, phnum = struct.unpack_from(end + "HH", data, 42)
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    interp: str | None = None
    dynamic: tuple[int, int] | None = None
    for i in range(phnum):
        at = phoff + i * phentsize
        if bits == 64:
            p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(end + "IIQQQQ", data, at)
        else:
            p_type, p_offset, p_vaddr, _, p_filesz = struct.unpack_from(end + "IIIII", data, at)
        if p_type == _PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == _PT_INTERP:
            interp = data[p_offset:p_offset + p_filesz].split(b"\0", 1)[0].decode()
        elif p_type == _PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    needed: list[int] = []
    rpath = runpath = None
    strtab = None
    if dynamic is not None:
        size = 16 if bits == 64 else 8
        fmt = end + ("qQ" if bits == 64 else "iI")
        for at in range(dynamic[0], dynamic[0] + dynamic[1], size):
            tag, value = struct.unpack_from(fmt, data, at)
            if tag == _DT_NULL:
                break
            if tag == _DT_NEEDED:
                needed.append(value)
            elif tag == _DT_STRTAB:
                strtab = value
            elif tag == _DT_RPATH:
                rpath = value
            elif tag == _DT_RUNPATH:
                runpath = value
    names: tuple[str, ...] = ()
    search: list[str] = []
    if strtab is not None:
        base = next((off + strtab - vaddr for vaddr, off, size in loads
                     if vaddr <= strtab < vaddr + size), None)
        if base is not None:
            def text(offset: int) -> str:
                return data[base + offset:data.find(b"\0", base + offset)].decode(errors="replace")

            names = tuple(text(n) for n in needed)
            origin = os.path.dirname(os.path.realpath(path))
            # ld.so reads DT_RPATH only when the object has no DT_RUNPATH.
            for entry in ([text(rpath)] if rpath is not None and runpath is None else []) + (
                    [text(runpath)] if runpath is not None else []):
                for d in entry.split(":"):
                    if d:
                        search.append(d.replace("$ORIGIN", origin).replace("${ORIGIN}", origin))
    return ElfInfo(bits, end == "<", machine, interp, names, tuple(search))


@functools.cache
def _ld_so_cache() -> tuple[tuple[str, str], ...]:
    """(soname, path) pairs of /etc/ld.so.cache in its order (ld.so takes the first that fits)."""
    try:
        with open(_LD_SO_CACHE, "rb") as f:
            data = f.read()
    except OSError:
        return ()
    start = data.find(_CACHE_MAGIC)
    if start < 0:
        return ()
    try:
        nlibs, = struct.unpack_from("<I", data, start + 20)
        out = []
        for i in range(nlibs):
            _, key, value = struct.unpack_from("<iII", data, start + 48 + 24 * i)

            def text(offset: int) -> str:
                return data[start + offset:data.index(b"\0", start + offset)].decode(errors="replace")

            out.append((text(key), text(value)))
        return tuple(out)
    except (struct.error, ValueError):
        return ()


def _fits(path: str, program: ElfInfo) -> bool:
    info = read_elf(path)
    return info is not None and (info.bits, info.machine) == (program.bits, program.machine)


def _resolve(name: str, requester: ElfInfo, program: ElfInfo) -> str | None:
    if "/" in name:
        return name if os.path.exists(name) else None
    for d in requester.search_path:
        candidate = os.path.join(d, name)
        if os.path.exists(candidate) and _fits(candidate, program):
            return candidate
    for soname, candidate in _ld_so_cache():
        if soname == name and os.path.exists(candidate) and _fits(candidate, program):
            return candidate
    for d in _DEFAULT_DIRS:
        candidate = os.path.join(d, name)
        if os.path.exists(candidate) and _fits(candidate, program):
            return candidate
    return None


def library_closure(path: str) -> tuple[str | None, dict[str, str | None]]:
    """The interpreter of the ELF program at `path` and every shared library it loads at start,
    transitively: {soname: resolved path, None when ld.so would not find it}. ((None, {}) for a
    file that is not ELF, or is linked statically.)"""
    program = read_elf(path)
    if program is None:
        return None, {}
    found: dict[str, str | None] = {}
    queue: list[tuple[str, ElfInfo]] = [(n, program) for n in program.needed]
    while queue and len(found) < _MAX_LIBRARIES:
        name, requester = queue.pop(0)
        if name in found:
            continue
        where = _resolve(name, requester, program)
        found[name] = where
        info = read_elf(where) if where is not None else None
        if info is not None:
            queue.extend((n, info) for n in info.needed if n not in found)
    return program.interpreter, found
