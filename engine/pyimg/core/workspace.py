"""Finding the workspace root: the nearest directory holding MODULE.pyimg (cheap: no engine);
the names of the workspace's layout that light modules share."""

from __future__ import annotations

from pathlib import Path

from pyimg.errors import UsageError

__all__ = ["EXTERNAL_DIR", "MODULE_FILE", "find_workspace"]

MODULE_FILE = "MODULE.pyimg"
# Exec paths of external repositories' files, `external/<name>/<path>`; materialized under the
# output base at the same relative path.
EXTERNAL_DIR = "external"


def find_workspace(start: Path) -> Path:
    """The nearest directory at or above `start` holding MODULE.pyimg."""
    start = start.resolve()
    for d in (start, *start.parents):
        if (d / MODULE_FILE).is_file():
            return d
    raise UsageError(
        f"not inside a pyimg workspace: no {MODULE_FILE} in {start} or any parent directory "
        f"(create an empty {MODULE_FILE} at the root of your workspace)"
    )
