"""Read-modify-write of a tag that other writers may update at the same time: the `.sig` tag of
cosign signatures and the referrers tag schema's index, both lists that every signer appends to.

Each write is conditional on the manifest it was merged from (If-Match on its digest, or
If-None-Match: * when the tag was absent; RFC 9110). The distribution spec does not require
registries to honour that, and docker-registry does not; so after each write the tag is read
again, after a short random pause, and when another writer's update replaced this one, the two
are merged and written again. On a registry that ignores the condition a lost update stays
possible when another writer read the tag before this write and writes it only after this
check (docs/supply-chain.md, "Several signers").
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

__all__ = ["TAG_UPDATE_ATTEMPTS", "SETTLE_SECONDS", "Merge", "update_tag"]

TAG_UPDATE_ATTEMPTS = 6
# The pause before the read that checks a write: long enough for a writer that read the tag at
# the same time as this one to have written it too.
SETTLE_SECONDS = (0.1, 0.3)

# merge(current tag or None) -> (manifest bytes, media type) to write, or None when the tag
# already holds everything this writer adds.
Merge = Callable[[FetchedManifest | None], tuple[bytes, str] | None]


def update_tag(
    client: RegistryClient,
    tag_ref: Reference,
    current: FetchedManifest | None,
    merge: Merge,
    *,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> None:
    """Make the tag `tag_ref` hold what `merge` adds, starting from `current` (the tag as this
    writer read it, None: absent). Raises RegistryError when the registry refuses the manifest,
    or when other writers replaced it TAG_UPDATE_ATTEMPTS times in a row."""
    rng = rng or random.Random()
    for _ in range(TAG_UPDATE_ATTEMPTS):
        new = merge(current)
        if new is None:
            return
        data, media_type = new
        try:
            client.put_manifest_answer(tag_ref, data, media_type, tag_ref.identifier,
                                       replacing=current.digest if current else None)
        except TagMoved:
            current = client.find_manifest(tag_ref)
            continue
        sleep(rng.uniform(*SETTLE_SECONDS))
        current = client.find_manifest(tag_ref)
    raise RegistryError(
        f"{tag_ref.registry}/{tag_ref.repository}: other writers replaced the tag "
        f"{tag_ref.identifier} {TAG_UPDATE_ATTEMPTS} times while this one was added; run the command again"
    )
