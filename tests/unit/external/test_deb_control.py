"""Debian version comparison, relation parsing and the resolver on in-memory indexes."""

from __future__ import annotations

import pytest
from pyimg.external.deb_control import (
    DebPackage,
    PackageIndex,
    ResolutionError,
    compare_versions,
    parse_paragraphs,
    parse_relations,
    resolve,
)


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.0", "1.0", 0),
        ("1.0", "1.1", -1),
        ("1.10", "1.9", 1),
        ("1.0~rc1", "1.0", -1),  # ~ sorts before the end of the string
        ("1.0~~", "1.0~", -1),
        ("1:0.1", "2.0", 1),  # the epoch wins
        ("1.0-1", "1.0-2", -1),
        ("1.0-10", "1.0-9", 1),
        ("1.0a", "1.0", 1),
        ("1.0+b1", "1.0", 1),
        ("1.0.0", "1.0", 1),
        ("2.36-9+deb12u4", "2.36-9+deb12u10", -1),
        ("3.11.2-6+deb12u1", "3.11.2-6", 1),
        ("0:1.0", "1.0", 0),
        ("1.001", "1.1", 0),
    ],
)
def test_compare_versions(a: str, b: str, expected: int) -> None:
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected


def test_relations_alternatives_versions_and_qualifiers() -> None:
    groups = parse_relations("libc6 (>= 2.36), python3:any (>= 3.11~) | python3-foo, bar [amd64]", "t")
    assert [[str(r) for r in g] for g in groups] == [
        ["libc6 (>= 2.36)"], ["python3 (>= 3.11~)", "python3-foo"], ["bar"]]


def test_paragraphs_join_continuation_lines() -> None:
    text = "Package: a\nDescription: x\n more\n\nPackage: b\n"
    assert list(parse_paragraphs(text)) == [
        {"Package": "a", "Description": "x\nmore"}, {"Package": "b"}]


def _index(arch: str, *stanzas: str) -> PackageIndex:
    index = PackageIndex(arch)
    for s in stanzas:
        fields = next(parse_paragraphs(s))
        fields.setdefault("Architecture", arch)
        index.add(DebPackage.from_paragraph(fields, "http://x", "test"))
    return index


def _names(pkgs: list[DebPackage]) -> list[str]:
    return [f"{p.name}={p.version}" for p in pkgs]


def test_resolve_picks_newest_satisfying_version_and_follows_pre_depends() -> None:
    index = _index(
        "amd64",
        "Package: app\nVersion: 1\nDepends: lib (>= 2)\nPre-Depends: base",
        "Package: lib\nVersion: 1", "Package: lib\nVersion: 2", "Package: lib\nVersion: 3~rc1",
        "Package: base\nVersion: 1\nArchitecture: all",
    )
    assert _names(resolve(index, ["app"])) == ["app=1", "base=1", "lib=3~rc1"]


def test_resolve_alternatives_prefer_what_is_already_chosen() -> None:
    index = _index(
        "amd64",
        "Package: app\nVersion: 1\nDepends: mawk | gawk",
        "Package: mawk\nVersion: 1", "Package: gawk\nVersion: 1",
    )
    assert _names(resolve(index, ["app"])) == ["app=1", "mawk=1"]
    assert _names(resolve(index, ["gawk", "app"])) == ["app=1", "gawk=1"]
    missing_first = _index("amd64", "Package: app\nVersion: 1\nDepends: nope | gawk",
                           "Package: gawk\nVersion: 1")
    assert _names(resolve(missing_first, ["app"])) == ["app=1", "gawk=1"]


def test_resolve_virtual_packages_and_versioned_provides() -> None:
    index = _index(
        "amd64",
        "Package: app\nVersion: 1\nDepends: mail-agent, libfoo-abi (>= 2)",
        "Package: postfix\nVersion: 1\nProvides: mail-agent",
        "Package: foo-old\nVersion: 1\nProvides: libfoo-abi (= 1)",
        "Package: foo-new\nVersion: 1\nProvides: libfoo-abi (= 2)",
    )
    assert _names(resolve(index, ["app"])) == ["app=1", "foo-new=1", "postfix=1"]
    unversioned = _index("amd64", "Package: app\nVersion: 1\nDepends: abi (>= 1)",
                         "Package: p\nVersion: 1\nProvides: abi")
    with pytest.raises(ResolutionError, match="no provider of abi offers a matching version"):
        resolve(unversioned, ["app"])


def test_resolve_a_cycle_terminates() -> None:
    index = _index("amd64", "Package: a\nVersion: 1\nDepends: b",
                   "Package: b\nVersion: 1\nDepends: c", "Package: c\nVersion: 1\nDepends: a")
    assert _names(resolve(index, ["a"])) == ["a=1", "b=1", "c=1"]


def test_impossible_request_names_the_chain() -> None:
    index = _index("arm64", "Package: app\nVersion: 1\nDepends: mid",
                   "Package: mid\nVersion: 2\nDepends: lib (>= 5)", "Package: lib\nVersion: 4")
    with pytest.raises(ResolutionError) as e:
        resolve(index, ["app"])
    assert "app 1 -> mid 2 -> lib (>= 5): the archive has only 4 for arm64" in e.value.message


def test_a_chosen_version_that_a_later_constraint_refuses_is_an_error() -> None:
    index = _index("amd64", "Package: a\nVersion: 1\nDepends: lib (<< 2)",
                   "Package: lib\nVersion: 2", "Package: lib\nVersion: 1")
    with pytest.raises(ResolutionError, match=r"a 1 -> lib \(<< 2\): lib 2 is already chosen"):
        resolve(index, ["lib", "a"])


def test_unknown_package_gets_did_you_mean_and_other_architectures() -> None:
    amd = _index("amd64", "Package: python3-minimal\nVersion: 1", "Package: only-amd\nVersion: 1")
    arm = _index("arm64", "Package: python3-minimal\nVersion: 1")
    with pytest.raises(ResolutionError, match="did you mean 'python3-minimal'"):
        resolve(amd, ["python3-minimall"])
    with pytest.raises(ResolutionError,
                       match="'only-amd' is not in the archive for architecture arm64 "
                             r"\(it is for amd64\)"):
        resolve(arm, ["only-amd"], {"amd64": amd, "arm64": arm})


def test_a_requested_version_is_honoured() -> None:
    index = _index("amd64", "Package: a\nVersion: 1", "Package: a\nVersion: 2")
    assert _names(resolve(index, ["a=1"])) == ["a=1"]
    with pytest.raises(ResolutionError, match="has no version 3 for amd64"):
        resolve(index, ["a=3"])


def test_recommends_and_suggests_are_not_followed() -> None:
    index = _index("amd64", "Package: app\nVersion: 1\nRecommends: extra\nSuggests: docs",
                   "Package: extra\nVersion: 1", "Package: docs\nVersion: 1")
    assert _names(resolve(index, ["app"])) == ["app=1"]


def test_conflicting_requests_are_refused_naming_both_and_the_chain() -> None:
    index = _index("amd64", "Package: app\nVersion: 1\nDepends: mawk",
                   "Package: mawk\nVersion: 1.3\nConflicts: gawk (<< 5)",
                   "Package: gawk\nVersion: 4")
    with pytest.raises(ResolutionError) as e:
        resolve(index, ["app", "gawk"])
    assert ("gawk 4 and mawk 1.3 cannot be installed together (mawk Conflicts: gawk (<< 5)); "
            "mawk comes from: app 1") in e.value.message
    newer = _index("amd64", "Package: mawk\nVersion: 1.3\nConflicts: gawk (<< 5)",
                   "Package: gawk\nVersion: 5")
    assert _names(resolve(newer, ["mawk", "gawk"])) == ["gawk=5", "mawk=1.3"]  # out of range


def test_breaks_is_refused_like_conflicts_and_virtual_names_count() -> None:
    index = _index("amd64", "Package: new-libc\nVersion: 2\nBreaks: old-tool",
                   "Package: old-tool\nVersion: 1\nDepends: mail-agent",
                   "Package: postfix\nVersion: 1\nProvides: mail-agent\nConflicts: mail-agent",
                   "Package: exim\nVersion: 1\nProvides: mail-agent\nConflicts: mail-agent")
    with pytest.raises(ResolutionError, match=r"new-libc Breaks: old-tool"):
        resolve(index, ["new-libc", "old-tool"])
    # Conflicts with a virtual package it provides itself (the usual mail-agent pattern) is fine
    # alone; a second provider is refused.
    assert _names(resolve(index, ["old-tool"])) == ["old-tool=1", "postfix=1"]
    with pytest.raises(ResolutionError, match=r"postfix Conflicts: mail-agent"):
        resolve(index, ["exim", "postfix"])


def test_an_alternative_that_conflicts_is_passed_over() -> None:
    index = _index("amd64", "Package: app\nVersion: 1\nDepends: awk-a | awk-b",
                   "Package: awk-a\nVersion: 1\nConflicts: base", "Package: awk-b\nVersion: 1",
                   "Package: base\nVersion: 1")
    assert _names(resolve(index, ["base", "app"])) == ["app=1", "awk-b=1", "base=1"]
    only = _index("amd64", "Package: app\nVersion: 1\nDepends: awk-a",
                  "Package: awk-a\nVersion: 1\nConflicts: base", "Package: base\nVersion: 1")
    with pytest.raises(ResolutionError) as e:
        resolve(only, ["base", "app"])
    assert ("app 1 -> awk-a: awk-a 1 and base 1 cannot be installed together (awk-a Conflicts: "
            "base); base comes from: requested") in e.value.message


def test_providers_are_tried_by_priority_then_version() -> None:
    # base-files Pre-Depends on awk: Debian systems have mawk (Priority: required), not the
    # newer gawk (optional).
    index = _index("amd64", "Package: base-files\nVersion: 12\nPre-Depends: awk",
                   "Package: gawk\nVersion: 1:5.2.1-2\nProvides: awk\nPriority: optional",
                   "Package: mawk\nVersion: 1.3.4\nProvides: awk\nPriority: required",
                   "Package: original-awk\nVersion: 2\nProvides: awk")
    assert _names(resolve(index, ["base-files"])) == ["base-files=12", "mawk=1.3.4"]
    assert _names(resolve(index, ["gawk", "base-files"])) == ["base-files=12", "gawk=1:5.2.1-2"]
