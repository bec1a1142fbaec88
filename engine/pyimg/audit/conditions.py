"""The conditions each audit run varies: time zone, locale, umask, CPUs, paths, mtimes, jobs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

__all__ = ["RunConditions", "conditions_for"]

_TZS = ("UTC", "Pacific/Chatham", "America/St_Johns")
_LOCALES = ("C.UTF-8", "C", "POSIX")
_UMASKS = (0o022, 0o077, 0o002)


@dataclass(frozen=True)
class RunConditions:
    """What one audit run varies (docs/audit.md). Run 1 is the plain build; every later run
    changes each condition."""

    run: int  # 1-based
    nested: bool  # the workspace copy lives deeper, under a longer path
    umask: int
    tz: str
    lc_all: str
    jobs: int
    schedule_seed: str | None  # None: topological order
    extra_env: tuple[tuple[str, str], ...]
    mtime_shift_days: int  # source mtimes set this many days back (0: kept from the original)

    def env(self) -> dict[str, str]:
        out = {"TZ": self.tz, "LC_ALL": self.lc_all, **dict(self.extra_env)}
        if self.schedule_seed is not None:
            out["PYIMG_SCHEDULE_SEED"] = self.schedule_seed
        return out

    def describe(self) -> str:
        order = (
            f"shuffled order (seed {self.schedule_seed})"
            if self.schedule_seed
            else "topological order"
        )
        mtimes = f"mtimes -{self.mtime_shift_days}d" if self.mtime_shift_days else "mtimes kept"
        extra = " ".join(f"{k}={v}" for k, v in self.extra_env) or "no extra env"
        return (
            f"umask {self.umask:03o}, TZ={self.tz}, LC_ALL={self.lc_all}, --jobs {self.jobs}, "
            f"{order}, {mtimes}, {extra}{', nested path' if self.nested else ''}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "umask": f"{self.umask:03o}",
            "TZ": self.tz,
            "LC_ALL": self.lc_all,
            "jobs": self.jobs,
            "schedule_seed": self.schedule_seed,
            "extra_env": dict(self.extra_env),
            "mtime_shift_days": self.mtime_shift_days,
            "nested_path": self.nested,
        }


def conditions_for(run: int, cpus: int | None = None) -> RunConditions:
    """The conditions of run `run` (1-based): run 1 is plain, the others differ in every way."""
    cpus = max(2, cpus or os.cpu_count() or 2)
    i = run - 1
    if i == 0:
        return RunConditions(1, False, 0o022, "UTC", "C.UTF-8", 1, None, (), 0)
    extra = (("AUDIT_NOISE", "x" * run), ("PYTHONHASHSEED", str(1000 + run)))
    return RunConditions(
        run,
        nested=i % 2 == 1,
        umask=_UMASKS[i % len(_UMASKS)],
        tz=_TZS[i % len(_TZS)],
        lc_all=_LOCALES[i % len(_LOCALES)],
        jobs=cpus + i - 1,
        schedule_seed=str(run),
        extra_env=extra,
        mtime_shift_days=365 * i + 1,
    )
