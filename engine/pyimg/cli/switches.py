"""The `PYIMG_*` environment switches: read once per command, here, and passed down typed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["Switches"]


@dataclass(frozen=True)
class Switches:
    """The `PYIMG_*` environment switches (docs/cli.md). cli/main.py reads them once per command,
    and nothing else does: the layers below get typed values (`args.switches`, the request)."""

    fast_noop: bool = True  # PYIMG_FAST_NOOP=0: verify every action, even with nothing changed
    analysis_reuse: bool = True  # PYIMG_ANALYSIS_REUSE=0: analyse every target again
    schedule_seed: str | None = None  # PYIMG_SCHEDULE_SEED: shuffled start order (pyimg audit)
    disk_cache: str | None = None  # PYIMG_DISK_CACHE: the cache root without --disk-cache

    @classmethod
    def read(cls, environ: Mapping[str, str]) -> Switches:
        return cls(
            fast_noop=environ.get("PYIMG_FAST_NOOP") != "0",
            analysis_reuse=environ.get("PYIMG_ANALYSIS_REUSE") != "0",
            schedule_seed=environ.get("PYIMG_SCHEDULE_SEED") or None,
            disk_cache=environ.get("PYIMG_DISK_CACHE") or None,
        )
