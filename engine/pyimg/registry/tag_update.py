"""Read-modify-write of a tag that other writers may update at the same time: the `.sig` tag of
cosign signatures and the referrers tag schema's index, both lists that every signer appends to.

Each write is conditional on the manifest it was merged from (If-Match on its digest, or
If-None-Match: * when the tag was absent; RFC 9110). The distribution spec does not require
registries to honour that, and docker-registry does not; so after each write the tag is read
again, after a pause, and when another writer's update replaced this one, the two are merged and
written again. On a registry that ignores the condition, an update is lost only when another
writer read the tag before this write and writes it only after this check: a span from its read
to its write longer than the pause. So a write is merged from a read answered at most
FRESH_SECONDS before (an older one is made again: another writer's blobs, which docker-registry
may refuse a manifest for while it links them, can hold a write back by seconds), and the pause
lasts at least twice as long as this writer took from its read's answer to its write's: a writer
as slow as this one has written by then (docs/supply-chain.md, "Several signers").
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from pyimg.errors import RegistryError

from .client import RegistryClient
from .pull import FetchedManifest
from .push import TagMoved
from .reference import Reference

__all__ = ["FRESH_SECONDS", "TAG_UPDATE_ATTEMPTS", "SETTLE_SECONDS", "Merge", "read_tag",
           "update_tag"]

TAG_UPDATE_ATTEMPTS = 6
# The pause before the read that checks a write: long enough for a writer that read the tag at
# the same time as this one to have written it too.
SETTLE_SECONDS = (0.1, 0.3)
# A read answered longer ago than this is made again before a write merged from it (well below
# the pause).
FRESH_SECONDS = 0.05

# merge(current tag or None) -> (manifest bytes, media type) to write, or None when the tag
# already holds everything this writer adds.
Merge = Callable[[FetchedManifest | None], tuple[bytes, str] | None]


def read_tag(client: RegistryClient, tag_ref: Reference,
             clock: Callable[[], float] = time.monotonic) -> tuple[FetchedManifest | None, float]:
    """The tag (None: absent), and the `clock()` reading when its answer came (`update_tag`'s
    `read_at`)."""
    fetched = client.find_manifest(tag_ref)
    return fetched, clock()


def update_tag(
    client: RegistryClient,
    tag_ref: Reference,
    current: FetchedManifest | None,
    merge: Merge,
    *,
    read_at: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> None:
    """Make the tag `tag_ref` hold what `merge` adds, starting from `current` (the tag as this
    writer read it, None: absent), whose answer came at `read_at` (a `clock()` reading, as
    `read_tag` gives; None: just now).
    Raises RegistryError when the registry refuses the manifest, or when other writers replaced
    it TAG_UPDATE_ATTEMPTS times in a row."""
    rng = rng or random.Random()
    if read_at is None:
        read_at = clock()
    for _ in range(TAG_UPDATE_ATTEMPTS):
        if clock() - read_at > FRESH_SECONDS:
            current, read_at = read_tag(client, tag_ref, clock)
        new = merge(current)
        if new is None:
            return
        data, media_type = new
        try:
            client.put_manifest_answer(tag_ref, data, media_type, tag_ref.identifier,
                                       replacing=current.digest if current else None)
        except TagMoved:
            current, read_at = read_tag(client, tag_ref, clock)
            continue
        took = clock() - read_at
        sleep(max(rng.uniform(*SETTLE_SECONDS), 2 * took))
        current, read_at = read_tag(client, tag_ref, clock)
    raise RegistryError(
        f"{tag_ref.registry}/{tag_ref.repository}: other writers replaced the tag "
        f"{tag_ref.identifier} {TAG_UPDATE_ATTEMPTS} times while this one was added; run the command again"
    )
