"""Image references (`registry/repo:tag@sha256:...`) parsed and normalized the way Docker does."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pyimg.core.digest import Digest
from pyimg.errors import UsageError

__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_ENDPOINT",
    "Reference",
    "parse_reference",
]

DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
# Names Docker accepts for the Hub; all normalize to DOCKER_HUB.
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

# The grammar of github.com/distribution/reference (reference.go).
_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_HOST = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$"
)
_MAX_NAME = 255


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed, normalized image reference.

    `registry` is the name users write (`docker.io`, `localhost:5000`); `endpoint` is the host the
    client talks to (the Hub's API lives on `registry-1.docker.io`). `tag` and `digest` are both
    optional; when both are given the digest wins for fetching and the tag is informational.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def endpoint(self) -> str:
        return DOCKER_HUB_ENDPOINT if self.registry == DOCKER_HUB else self.registry

    @property
    def identifier(self) -> str:
        """What goes after `/manifests/`: the digest if pinned, else the tag (default `latest`)."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or "latest"

    @property
    def name(self) -> str:
        """`registry/repository` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    def with_tag(self, tag: str) -> Reference:
        if not _TAG.match(tag):
            raise UsageError(f"invalid tag {tag!r} (allowed: [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})")
        return Reference(self.registry, self.repository, tag, None)

    def with_digest(self, digest: Digest) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def _looks_like_host(component: str) -> bool:
    # Docker's rule: the first component is a registry host if it has a dot or a port, or is
    # `localhost`; otherwise `alpine/git` is a Hub repository.
    return "." in component or ":" in component or component == "localhost" or component[:1] == "["


def parse_reference(text: str) -> Reference:
    """Parse `[registry/]repo[:tag][@sha256:hex]`; raises UsageError naming the text.

    Hub references are normalized: `alpine` -> `docker.io/library/alpine`, and
    `index.docker.io/x/y` -> `docker.io/x/y`.
    """
    if not text or text != text.strip():
        raise UsageError(f"invalid image reference {text!r}: empty or surrounded by spaces")
    rest = text
    digest: Digest | None = None
    if "@" in rest:
        rest, _, digest_text = rest.partition("@")
        try:
            digest = Digest.parse(digest_text)
        except ValueError:
            raise UsageError(
                f"invalid image reference {text!r}: {digest_text!r} is not a sha256:<64 hex> digest"
            ) from None
    tag: str | None = None
    # A tag is after the last colon, but only if that colon is after the last slash
    # (`localhost:5000/x` has a port, not a tag).
    colon = rest.rfind(":")
    if colon > rest.rfind("/"):
        rest, tag = rest[:colon], rest[colon + 1 :]
        if not _TAG.match(tag):
            raise UsageError(f"invalid image reference {text!r}: bad tag {tag!r}")
    first, slash, remainder = rest.partition("/")
    if slash and _looks_like_host(first):
        registry, repository = first, remainder
        if not _HOST.match(registry):
            raise UsageError(f"invalid image reference {text!r}: bad registry host {registry!r}")
        if registry.lower() in _HUB_ALIASES:
            registry = DOCKER_HUB
    else:
        registry, repository = DOCKER_HUB, rest
    if registry == DOCKER_HUB and "/" not in repository:
        repository = f"library/{repository}"
    if not repository:
        raise UsageError(f"invalid image reference {text!r}: missing repository name")
    for component in repository.split("/"):
        if not _COMPONENT.match(component):
            hint = " (repository names are lowercase)" if component.lower() != component else ""
            raise UsageError(
                f"invalid image reference {text!r}: bad path component {component!r}{hint}"
            )
    if len(repository) > _MAX_NAME:
        raise UsageError(f"invalid image reference {text!r}: name longer than {_MAX_NAME}")
    return Reference(registry, repository, tag, digest)
