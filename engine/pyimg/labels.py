"""Labels (`@repo//pkg/path:name`) and target patterns (`//...`, `//pkg/...`, `//pkg:all`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "RULE_NAME_CHARACTERS",
    "Label",
    "LabelError",
    "Pattern",
    "check_rule_name",
    "is_utf8_name",
    "name_problem",
    "parse_label",
    "parse_pattern",
]

# The names of rule targets keep Bazel's documented set. Files are named by whatever the file
# system holds (docs/concepts.md, "File names"): any character but the control characters,
# which no terminal, log line or line-per-label output could show unambiguously.
RULE_NAME_CHARACTERS = "!%-@^_\"#$&'()*+,;<=>?[]{|}~/."
_RULE_NAME_OK = re.compile(r"^[A-Za-z0-9!%@^_\"#$&'()*\-+,;<=>?\[\]{|}~/.]+$")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_REPO_OK = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")


# The label table: every Label that parse_label returns, so that equal labels (a target and each
# reference to it) share one tuple and its strings, and the text of each (Label.__str__).
_LABELS: dict[Label, Label] = {}
_TEXT: dict[Label, str] = {}


def _interned(label: Label) -> Label:
    return _LABELS.setdefault(label, label)


class LabelError(ValueError):
    """A label or pattern that does not parse; the message quotes it and says why."""


class Label(NamedTuple):
    """A target's name. A tuple, so that the sorting and hashing of thousands of labels (query,
    analysis) run in C: a dataclass compares field by field in Python."""

    repo: str  # "" for the main workspace
    package: str  # "svc/api", "" for the root package
    name: str

    def __str__(self) -> str:
        # One string per label, however often it is asked for: targets, actions and records
        # keep their owner's text, and at 50,000 targets the copies added up to megabytes.
        text = _TEXT.get(self)
        if text is None:
            repo = f"@{self.repo}" if self.repo else ""
            text = _TEXT[self] = f"{repo}//{self.package}:{self.name}"
        return text

    def sibling(self, name: str) -> Label:
        return Label(self.repo, self.package, name)


def _check_package(text: str, package: str) -> None:
    if package.startswith("/") or package.endswith("/") or "//" in package:
        raise LabelError(f"invalid package name in label '{text}'")
    for part in package.split("/") if package else []:
        if part in (".", "..") or not part:
            raise LabelError(f"invalid package name in label '{text}': '{part}' is not allowed")


def is_utf8_name(name: str) -> bool:
    """Whether a file name read from the filesystem (`os.fsdecode`: undecodable bytes become
    surrogates) is valid UTF-8, which every label and Starlark string must be."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a file of a package (a path below the package, '/'-separated), or
    None: it may hold any character but control characters (U+0000-U+001F, U+007F-U+009F)."""
    bad = _CONTROL.search(name)
    if bad:
        return f"control character U+{ord(bad.group()):04X} in {ascii(name)}"
    if name.startswith("/") or name.endswith("/"):
        return f"'{name}' starts or ends with '/'"
    for part in name.split("/"):
        if part in ("", ".", ".."):
            return f"'{part}' is not allowed as a path segment"
    return None


def _check_name(text: str, name: str) -> None:
    if not name:
        raise LabelError(f"empty target name in label '{text}'")
    problem = name_problem(name)
    if problem:
        raise LabelError(f"invalid target name in label {_shown(text)}: {problem}")


def _shown(text: str) -> str:
    return ascii(text) if _CONTROL.search(text) else f"'{text}'"


def check_rule_name(name: str) -> None:
    """Raise LabelError unless `name` is a valid name for a rule target (Bazel's rules: letters,
    digits and RULE_NAME_CHARACTERS, no empty, '.' or '..' segment); the message says which
    character is wrong and what is allowed."""
    if not name:
        raise LabelError("empty target name")
    if not _RULE_NAME_OK.match(name):
        bad = next(c for c in name if not _RULE_NAME_OK.match(c))
        raise LabelError(
            f"invalid target name {_shown(name)}: {bad!r} (U+{ord(bad):04X}) is not allowed in "
            f"the name of a rule target (allowed: letters A-Z a-z, digits and "
            f"{RULE_NAME_CHARACTERS}; source files may hold any character)"
        )
    problem = name_problem(name)
    if problem:
        raise LabelError(f"invalid target name '{name}': {problem}")


def parse_label(text: str, current_package: str = "", current_repo: str = "") -> Label:
    """Parse an absolute or package-relative label.

    `//a/b:c`, `//a/b` (= `//a/b:b`), `:c` and `c` (in the current package), `@r` (= `@r//:r`),
    `@r//a:b`.
    """
    if not isinstance(text, str) or not text:
        raise LabelError(f"empty label {text!r}")
    repo = current_repo
    rest = text
    if rest.startswith("@"):
        repo_part, sep, after = rest[1:].partition("//")
        if not sep:
            if not _REPO_OK.match(repo_part):
                raise LabelError(f"invalid repository name in label '{text}'")
            return _interned(Label(repo_part, "", repo_part))
        if repo_part and not _REPO_OK.match(repo_part):
            raise LabelError(f"invalid repository name in label '{text}'")
        repo = repo_part
        rest = "//" + after
    if rest.startswith("//"):
        body = rest[2:]
        package, sep, name = body.partition(":")
        if not sep:
            name = package.rsplit("/", 1)[-1] if package else ""
            if not name:
                raise LabelError(f"label '{text}' names no target (write '//:name')")
        _check_package(text, package)
        _check_name(text, name)
        return _interned(Label(repo, package, name))
    # A relative label is `:name` or `name`; the name is the rest, ':' included (`File::Spec.3pm`).
    # A file whose name starts with '@' or ':' is written with the leading ':' (glob() does so).
    if rest.startswith(":"):
        rest = rest[1:]
    _check_name(text, rest)
    return _interned(Label(repo, current_package, rest))


@dataclass(frozen=True)
class Pattern:
    """`//pkg:name`, `//pkg:all` (every target of pkg), `//pkg/...` (pkg and below); in an
    external repository `@repo//pkg:name` and `@repo//pkg:all` (`@repo` = `@repo//:repo`)."""

    package: str
    name: str | None  # None: all targets
    recursive: bool
    repo: str = ""  # "" = the workspace

    def __str__(self) -> str:
        at = f"@{self.repo}" if self.repo else ""
        if self.recursive:
            return f"{at}//{self.package + '/' if self.package else ''}..."
        return f"{at}//{self.package}:{self.name or 'all'}"


def parse_pattern(text: str, cwd_package: str = "") -> Pattern:
    if text.startswith("@"):
        return _external_pattern(text)
    body = text
    if not body.startswith("//"):
        # Relative to the current directory's package, like Bazel: `:t` and `t` name a target
        # there, `sub/...` and `sub:t` a package below it.
        if ":" not in body and "/" not in body and body != "...":
            body = ":" + body
        if body.startswith(":"):
            body = f"//{cwd_package}{body}"
        else:
            body = "//" + "/".join(p for p in (cwd_package, body) if p)
    if body == "//..." or body.endswith("/..."):
        package = body[2:-4].rstrip("/")
        _check_package(text, package)
        return Pattern(package, None, True)
    package, sep, name = body[2:].partition(":")
    if not sep:
        name = package.rsplit("/", 1)[-1]
        if not name:
            raise LabelError(f"pattern '{text}' names no target")
    _check_package(text, package)
    if name in ("all", "*", "all-targets"):
        return Pattern(package, None, False)
    _check_name(text, name)
    return Pattern(package, name, False)


def _external_pattern(text: str) -> Pattern:
    repo, sep, after = text[1:].partition("//")
    if not _REPO_OK.match(repo):
        raise LabelError(f"invalid repository name in pattern '{text}'")
    if not sep:
        return Pattern("", repo, False, repo)
    if after == "..." or after.endswith("/..."):
        # An external repository's packages are only found by loading it: name them instead.
        raise LabelError(
            f"recursive patterns over external repositories are not supported: '{text}' "
            f"(name a target, '@{repo}//pkg:name', or a package, '@{repo}//pkg:all')"
        )
    inner = parse_pattern("//" + after)
    return Pattern(inner.package, inner.name, False, repo)
