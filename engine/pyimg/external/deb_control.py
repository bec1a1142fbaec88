"""Debian control data without the network: deb822 paragraphs, version comparison, relation
fields, and the dependency resolver that picks a closure of packages from in-memory indexes.

Written here rather than taken from python-debian: the part pyimg needs (paragraphs, one
comparison, one relation grammar) is small, and python-debian would add a dependency (and its
chardet import) to every `pyimg lock` for a few dozen lines.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property, cmp_to_key

from pyimg.errors import UserInputError

__all__ = [
    "DebPackage",
    "PackageIndex",
    "Relation",
    "ResolutionError",
    "compare_versions",
    "parse_paragraphs",
    "parse_relations",
    "resolve",
]


class ResolutionError(UserInputError):
    """The requested packages have no closure in the archive (the message names the chain)."""


# -- deb822 paragraphs ----------------------------------------------------------------------


def parse_paragraphs(text: str) -> Iterator[dict[str, str]]:
    """The paragraphs of a Packages or Release file: field names as written, continuation
    lines joined with newlines (their leading space dropped)."""
    fields: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, key = {}, None
        elif line.startswith("#"):
            continue
        elif line[0] in " \t":
            if key is not None:
                fields[key] += "\n" + line[1:]
        elif ":" in line:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    if fields:
        yield fields


# -- versions -------------------------------------------------------------------------------

def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isdigit():
        return 0
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _compare_part(a: str, b: str) -> int:
    """dpkg's verrevcmp: alternate non-digit runs (by _order) and digit runs (numerically)."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return -1 if ac < bc else 1
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return -1 if first_diff < 0 else 1
    return 0


def _split_version(v: str) -> tuple[int, str, str]:
    epoch, rest = (v.split(":", 1) if ":" in v else ("0", v))
    upstream, _, revision = rest.rpartition("-") if "-" in rest else (rest, "", "")
    return int(epoch or "0") if epoch.isdigit() else 0, upstream, revision


def compare_versions(a: str, b: str) -> int:
    """-1, 0 or 1 as Debian orders versions `a` and `b` (epoch, upstream, revision; `~` sorts
    before anything, even the end of the string)."""
    ea, ua, ra = _split_version(a)
    eb, ub, rb = _split_version(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _compare_part(ua, ub) or _compare_part(ra, rb)


_OPS = {
    "<<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    "=": lambda c: c == 0,
    ">=": lambda c: c >= 0,
    ">>": lambda c: c > 0,
    "<": lambda c: c <= 0,  # obsolete forms, still read by dpkg
    ">": lambda c: c >= 0,
}


# -- relations ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Relation:
    """One alternative of a dependency: `name (op version)`, the arch qualifier dropped."""

    name: str
    op: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.name} ({self.op} {self.version})" if self.op else self.name

    def allows(self, version: str | None) -> bool:
        if self.op is None or self.version is None:
            return True
        if version is None:  # an unversioned Provides satisfies no versioned dependency
            return False
        return bool(_OPS[self.op](compare_versions(version, self.version)))


_RELATION = re.compile(
    r"^\s*([a-z0-9][a-z0-9+.\-]*)(?::[a-z0-9\-]+)?\s*"
    r"(?:\(\s*(<<|<=|>=|>>|=|<|>)\s*([^\s)]+)\s*\))?\s*(?:\[[^\]]*\])?\s*(?:<[^>]*>\s*)*$"
)


def parse_relations(text: str, where: str) -> list[list[Relation]]:
    """A Depends-like field: groups separated by ',', alternatives by '|'."""
    groups: list[list[Relation]] = []
    for group in text.split(","):
        if not group.strip():
            continue
        alternatives = []
        for alt in group.split("|"):
            m = _RELATION.match(alt)
            if m is None:
                raise UserInputError(f"{where}: cannot read the relation {alt.strip()!r}")
            alternatives.append(Relation(m.group(1), m.group(2), m.group(3)))
        groups.append(alternatives)
    return groups


# -- packages and indexes -------------------------------------------------------------------


@dataclass(frozen=True)
class DebPackage:
    """One binary package of an archive's Packages index, with where its .deb lives."""

    name: str
    version: str
    architecture: str  # the package's own: an index's arch, or "all"
    depends_text: tuple[str, str] = ("", "")  # Pre-Depends, Depends: read when followed
    provides: tuple[Relation, ...] = ()
    multi_arch: str = ""
    filename: str = ""  # relative to the source's base URL
    base_url: str = ""
    sha256: str = ""
    size: int = 0
    where: str = ""  # the index it came from, for errors
    conflicts_text: tuple[str, str] = ("", "")  # Conflicts, Breaks: read when a choice is checked
    priority: str = ""  # required, important, standard, optional, extra: ranks providers

    @cached_property
    def conflicts(self) -> tuple[tuple[str, Relation], ...]:
        """(field, relation) of Conflicts and Breaks. Breaks is refused like Conflicts: with no
        maintainer scripts and one version per package there is no upgrade for it to order."""
        here = f"{self.where}: package {self.name}"
        return tuple(
            (name, rel)
            for name, text in zip(("Conflicts", "Breaks"), self.conflicts_text, strict=True)
            for group in parse_relations(text, f"{here} {name}") for rel in group
        )

    def matches(self, rel: Relation) -> bool:
        """Whether this package is what `rel` names: itself at an allowed version, or a
        virtual package it provides (a versioned relation needs a versioned Provides)."""
        if rel.name == self.name and rel.allows(self.version):
            return True
        return any(prov.name == rel.name and rel.allows(prov.version) for prov in self.provides)

    @cached_property
    def depends(self) -> tuple[tuple[Relation, ...], ...]:
        """Pre-Depends, then Depends: parsed only for the packages the resolver visits (an
        archive's index lists tens of thousands)."""
        pre, plain = self.depends_text
        here = f"{self.where}: package {self.name}"
        return tuple(tuple(g) for g in parse_relations(pre, f"{here} Pre-Depends")
                     + parse_relations(plain, f"{here} Depends"))

    @property
    def url(self) -> str:
        return f"{self.base_url.rstrip('/')}/{self.filename}"

    @staticmethod
    def from_paragraph(fields: dict[str, str], base_url: str, where: str) -> DebPackage:
        name = fields.get("Package", "")
        version = fields.get("Version", "")
        if not name or not version:
            raise UserInputError(f"{where}: a paragraph without Package or Version")
        here = f"{where}: package {name}"
        provides = [
            g[0] for g in parse_relations(fields.get("Provides", ""), f"{here} Provides")
        ]
        try:
            size = int(fields.get("Size", "0"))
        except ValueError:
            raise UserInputError(f"{here}: Size {fields.get('Size')!r} is not a number") from None
        return DebPackage(
            name, version, fields.get("Architecture", ""),
            (fields.get("Pre-Depends", ""), fields.get("Depends", "")), tuple(provides),
            fields.get("Multi-Arch", ""), fields.get("Filename", ""), base_url,
            fields.get("SHA256", "").lower(), size, where,
            (fields.get("Conflicts", ""), fields.get("Breaks", "")),
            fields.get("Priority", ""),
        )


def _newer_first(a: DebPackage, b: DebPackage) -> int:
    return compare_versions(b.version, a.version)


def _newest_first(packages: Iterable[DebPackage]) -> list[DebPackage]:
    return sorted(packages, key=cmp_to_key(_newer_first))


_PRIORITIES = ("required", "important", "standard", "optional", "extra")


def _providers_first(packages: Iterable[DebPackage]) -> list[DebPackage]:
    """Providers of one virtual package in the order they are tried: by Priority (`awk` is
    mawk, `Priority: required`, as on every Debian system, not gawk), then newest first."""
    def rank(p: DebPackage) -> int:
        return _PRIORITIES.index(p.priority) if p.priority in _PRIORITIES else len(_PRIORITIES)

    return sorted(_newest_first(packages), key=rank)


@dataclass
class PackageIndex:
    """Every package of one architecture (its own and `Architecture: all`), from all sources."""

    architecture: str
    by_name: dict[str, list[DebPackage]] = field(default_factory=dict)
    providers: dict[str, list[tuple[DebPackage, Relation]]] = field(default_factory=dict)

    def add(self, pkg: DebPackage) -> None:
        versions = self.by_name.setdefault(pkg.name, [])
        if any(p.version == pkg.version for p in versions):
            return  # the first source listing a version wins, as apt's pinning does by default
        versions.append(pkg)
        versions[:] = _newest_first(versions)
        for prov in pkg.provides:
            self.providers.setdefault(prov.name, []).append((pkg, prov))

    def candidates(self, rel: Relation) -> list[DebPackage]:
        """Packages that satisfy `rel`: real ones first (newest first), then providers (by
        Priority, then newest)."""
        real = [p for p in self.by_name.get(rel.name, []) if rel.allows(p.version)]
        provided = [
            p for p, prov in self.providers.get(rel.name, [])
            if rel.allows(prov.version) and p not in real
        ]
        return real + _providers_first(provided)


# -- the resolver ---------------------------------------------------------------------------


def resolve(
    index: PackageIndex, wanted: list[str], other_arches: dict[str, PackageIndex] | None = None
) -> list[DebPackage]:
    """The closure of `wanted` in `index`, sorted by name: for each dependency group the first
    alternative that a chosen package already satisfies, else the first that can be satisfied
    (its newest version, real packages before virtual providers) without a Conflicts or Breaks
    against a chosen package. Recommends and Suggests are not followed. One version per
    package: a later constraint that the chosen version does not meet, or two packages that
    conflict with no alternative left, is an error naming the chain."""
    chosen: dict[str, DebPackage] = {}
    chains: dict[str, list[str]] = {}  # why each package was chosen: the requests down to it
    arch = index.architecture
    others: dict[str, PackageIndex] = other_arches or {}

    def satisfied(rel: Relation) -> DebPackage | None:
        pkg = chosen.get(rel.name)
        if pkg is not None and rel.allows(pkg.version):
            return pkg
        for p in chosen.values():
            if any(prov.name == rel.name and rel.allows(prov.version) for prov in p.provides):
                return p
        return None

    def clash(candidate: DebPackage) -> str | None:
        """Why `candidate` cannot join the chosen packages (a Conflicts or Breaks either way,
        naming both and how the chosen one came in), or None. A package may conflict with a
        virtual package it provides itself: only other packages are checked."""
        for other in chosen.values():
            if other.name == candidate.name:
                continue
            for a, b in ((candidate, other), (other, candidate)):
                for field_name, rel in a.conflicts:
                    if b.matches(rel):
                        via = " -> ".join(chains[other.name]) or "requested"
                        return (f"{candidate.name} {candidate.version} and {other.name} "
                                f"{other.version} cannot be installed together ({a.name} "
                                f"{field_name}: {rel}); {other.name} comes from: {via}")
        return None

    def why_not(rel: Relation, chain: list[str]) -> str:
        path = " -> ".join([*chain, str(rel)])
        pkg = chosen.get(rel.name)
        if pkg is not None:
            return f"{path}: {rel.name} {pkg.version} is already chosen"
        versions = [p.version for p in index.by_name.get(rel.name, [])]
        if versions:
            return f"{path}: the archive has only {', '.join(versions)} for {arch}"
        if rel.name in index.providers:
            return f"{path}: no provider of {rel.name} offers a matching version for {arch}"
        return f"{path}: no package or provider named {rel.name} for {arch}"

    def pick(rel: Relation, chain: list[str]) -> DebPackage | str:
        """The package to add for `rel`, or why there is none."""
        options = [p for p in index.candidates(rel) if p.name not in chosen]
        clashes = []
        for option in options:
            problem = clash(option)
            if problem is None:
                return option
            clashes.append(problem)
        if clashes:
            return f"{' -> '.join([*chain, str(rel)])}: {clashes[0]}"
        return why_not(rel, chain)

    def add(pkg: DebPackage, chain: list[str]) -> None:
        chosen[pkg.name] = pkg
        chains[pkg.name] = chain
        here = [*chain, f"{pkg.name} {pkg.version}"]
        for group in pkg.depends:
            if any(satisfied(rel) for rel in group):
                continue
            problems = []
            for rel in group:
                found = pick(rel, here)
                if isinstance(found, DebPackage):
                    add(found, here)
                    break
                problems.append(found)
            else:
                raise ResolutionError(
                    f"cannot satisfy a dependency for {arch}:\n  " + "\n  ".join(problems)
                )

    # Requests pinned to a version first: the closure of the others must then agree with them.
    for name in sorted(wanted, key=lambda w: "=" not in w):
        rel = _wanted_relation(name)
        if satisfied(rel):
            continue
        if rel.name in chosen:
            raise ResolutionError(
                f"cannot satisfy the request {name} for {arch}: {rel.name} "
                f"{chosen[rel.name].version} is already chosen"
            )
        if not index.candidates(rel):
            raise ResolutionError(_unknown(rel, index, others))
        found = pick(rel, [])
        if not isinstance(found, DebPackage):
            raise ResolutionError(f"cannot satisfy the request {name} for {arch}:\n  {found}")
        add(found, [])
    return [chosen[name] for name in sorted(chosen)]


def _wanted_relation(text: str) -> Relation:
    """A requested package: `name` or `name=version`."""
    name, eq, version = text.partition("=")
    return Relation(name, "=", version) if eq else Relation(name)


def _unknown(rel: Relation, index: PackageIndex, others: dict[str, PackageIndex]) -> str:
    arch = index.architecture
    if rel.name in index.by_name:
        versions = ", ".join(p.version for p in index.by_name[rel.name])
        return f"package '{rel.name}' has no version {rel.version} for {arch} (it has {versions})"
    elsewhere = sorted(a for a, other in others.items()
                       if a != arch and (rel.name in other.by_name or rel.name in other.providers))
    if elsewhere:
        return (f"package '{rel.name}' is not in the archive for architecture {arch} "
                f"(it is for {', '.join(elsewhere)})")
    close = difflib.get_close_matches(rel.name, list(index.by_name), n=3)
    hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
    return f"package '{rel.name}' is not in the archive for {arch}{hint}"
