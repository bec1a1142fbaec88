"""`pyimg cache verify`: re-hash the shared caches, drop what is corrupt and say what it was."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pyimg.cli.commands import add_common_flags, command

__all__ = ["cmd_cache"]


def _configure_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["verify"],
                   help="verify: re-hash every content-store blob and check every action-cache "
                        "entry and decoded .deb; exit 1 when something was corrupt (and dropped)")
    add_common_flags(p)


@command("cache", "check the shared caches (`pyimg cache verify`)", _configure_cache)
def cmd_cache(args: argparse.Namespace) -> int:
    from pyimg.core.action_cache import ActionCache
    from pyimg.core.cas import ContentStore
    from pyimg.core.executor import verify_trees
    from pyimg.core.session import default_cache_root
    from pyimg.oci.deb import DebCache

    # The cache root alone: no workspace is needed, and none is locked (builds may run meanwhile;
    # every store and entry write is atomic, so they see a blob or entry whole, or not at all).
    root = (Path(args.disk_cache).resolve() if args.disk_cache
            else default_cache_root(args.switches.disk_cache))
    cas = ContentStore(root)
    store = cas.verify_all(jobs=args.jobs or os.cpu_count() or 1)
    entries, dropped_entries = ActionCache(root, cas).verify_all()
    trees = verify_trees(root / "trees", store.good) if (root / "trees").is_dir() else []
    # After the store: an entry whose data blob was just dropped as corrupt goes too.
    decoded, dropped_debs = DebCache(cas).verify_all()
    # An entry naming a blob that is gone is dropped too (it would be, when looked up), but it
    # is not corrupt itself: most often it named a blob dropped just above.
    dangling = [(rel, why) for rel, why in dropped_entries if why.startswith("names ")]
    corrupt = [*store.dropped, *(e for e in dropped_entries if e not in dangling),
               *(e for e in dropped_debs if not e[1].startswith("names "))]
    dangling += [e for e in dropped_debs if e[1].startswith("names ")]
    for rel, why in corrupt:
        print(f"corrupt: {root / rel}: {why}; dropped")
    for rel, why in dangling:
        print(f"dropped: {root / rel}: {why}")
    for rel in trees:
        print(f"dropped: {root / 'trees' / rel}: its files do not match its name (made again "
              "when an action reads it)")
    print(f"Verified {store.blobs} blobs ({store.size / 1e6:.1f} MB), {entries} action-cache "
          f"entries and {decoded} decoded Debian packages under {root}: "
          + (f"{len(corrupt)} corrupt, {len(dangling)} entries naming a missing blob; all "
             "dropped (the next build makes them again)" if corrupt or dangling
             else "nothing corrupt"),
          file=sys.stderr)
    return 1 if corrupt or dangling else 0
