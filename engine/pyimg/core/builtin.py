"""The contract between the executor and in-process built-in actions (see actions/builtins.py)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pyimg.core.digest import Digest

if TYPE_CHECKING:
    from pyimg.core.cas import ContentStore

__all__ = ["BlobSource", "BuiltinCall", "LayerFetcher"]


class BlobSource(Protocol):
    """Blobs pinned by digest outside the build's inputs (the layers of a pulled base image):
    an input may lack them, and they are fetched only when something needs their bytes."""

    def knows(self, digest: Digest) -> bool:
        """Whether `digest` may be absent from an input and fetched from here."""
        ...

    def fetch(self, digest: Digest) -> Path:
        """A readable file holding the verified bytes (downloaded once, kept in the store)."""
        ...


class LayerFetcher(Protocol):
    """Where a `BlobSource` of pulled base images gets a layer it knows by digest: the external
    repository that declared the image downloads it once into its content store."""

    def fetch_layer(self, repository: str, digest: Digest, size: int) -> Path:
        """A readable file holding the verified layer `digest` of the pulled `repository`."""
        ...

    def close(self) -> None:
        """Release what fetching opened (connections, locks)."""
        ...


def _never() -> None:
    return None


def _unheard(message: str) -> None:
    return None


@dataclass(frozen=True)
class BuiltinCall:
    params: Any
    inputs: Mapping[str, Path]
    input_digests: Mapping[str, Digest]
    outputs: Mapping[str, Path]
    output_dirs: frozenset[str] = frozenset()
    jobs: int = 1
    check_cancelled: Callable[[], None] = field(default=_never)
    # A builtin that hashed an output while writing it records {host path: digest} here, so the
    # engine links the file into the content store instead of reading it again.
    output_digests: dict[str, Digest] = field(default_factory=dict)
    # Where the blobs that an input layout leaves out (lazy base layers) come from.
    lazy_blobs: BlobSource | None = None
    # A warning for the user about this action (the engine prefixes where it comes from); said
    # when the action runs, not when its outputs come from the cache.
    warn: Callable[[str], None] = field(default=_unheard)
    # The build's content store, for builtins that keep what they derive from an input in the
    # repository cache (deb_layer's decoded `.deb`s, oci/deb.py); None where there is none.
    content_store: ContentStore | None = None
    # The inputs that are the user's own files (sources, by exec path): read them, never
    # hard-link them into an output. A link changes the file's ctime (the next build's no-op
    # check sees it) and the store, adopting the output, would share the user's inode and make
    # it read-only.
    sources: frozenset[str] = frozenset()

    def may_link(self, exec_path: str) -> bool:
        """Whether an output may hard-link the input file at `exec_path` (or inside the input
        directory it names a file of): not when it is, or lies in, one of the user's files."""
        path = exec_path
        while path:
            if path in self.sources:
                return False
            path = path.rpartition("/")[0]
        return True
