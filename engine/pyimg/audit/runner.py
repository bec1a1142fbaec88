"""One audit run: a copy of the workspace built from nothing by `pyimg build` in a subprocess
under given conditions, and the digests of what it produced."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pyimg.audit.conditions import RunConditions, conditions_for
from pyimg.audit.report import AuditReport
from pyimg.core.digest import Digest
from pyimg.errors import PyimgError
from pyimg.oci import media_types as mt
from pyimg.oci.layout import Layout

__all__ = ["Output", "Run", "run_all"]

# Never copied into a run's workspace: outputs of earlier builds, and version-control state that
# no action can read (the sandbox stages declared inputs only).
_NOT_COPIED = ("pyimg-out", ".git", ".hg", ".jj")
_DAY = 86400


@dataclass(frozen=True)
class Output:
    """A top-level output of a run: an image/index layout (digest from its `.digest` file), or a
    file or directory (sha256 of its bytes; of its sorted tree for a directory)."""

    target: str
    kind: str  # image | index | file | directory
    path: str  # workspace-relative
    digest: str


@dataclass
class Run:
    conditions: RunConditions
    workspace: Path
    output_base: Path
    cache: Path
    seconds: float = 0.0
    outputs: dict[str, Output] = field(default_factory=dict)  # by path


def _copy_workspace(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns(*_NOT_COPIED))


def _shift_mtimes(root: Path, days: int) -> None:
    when = time.time() - days * _DAY
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), (when, when), follow_symlinks=False)


def _base_env() -> dict[str, str]:
    # Nothing of the caller's pyimg configuration or build-date convention leaks into a run:
    # each run sets what it varies itself.
    drop = ("PYIMG", "SOURCE_DATE_EPOCH", "TZ", "LC_", "LANG", "PYTHONHASHSEED")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)}


def _build(run: Run, rel_cwd: Path, patterns: list[str], flags: list[str]) -> None:
    c = run.conditions
    env = _base_env()
    env.update(c.env())
    argv = [
        sys.executable,
        "-m",
        "pyimg.cli.main",
        "build",
        "--verbose",
        "--color",
        "no",
        "--disk-cache",
        str(run.cache),
        "--output-base",
        str(run.output_base),
        "--jobs",
        str(c.jobs),
        *flags,
        "--",
        *patterns,
    ]
    start = time.monotonic()
    proc = subprocess.run(
        argv,
        cwd=run.workspace / rel_cwd,
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=lambda: os.umask(c.umask),  # noqa: PLW1509 (no threads touch the fork)
        check=False,
    )
    run.seconds = time.monotonic() - start
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-20:])
        raise PyimgError(
            f"audit: run {c.run} ({c.describe()}) failed to build (exit {proc.returncode}):\n{tail}"
        )
    run.outputs = _outputs(run.workspace, proc.stdout)


def _outputs(workspace: Path, stdout: str) -> dict[str, Output]:
    """The outputs `pyimg build --verbose` printed: `LABEL DIGEST LAYOUT` for images and indexes,
    `LABEL PATH` for every default output of other targets."""
    out: dict[str, Output] = {}
    for line in stdout.splitlines():
        if not line.startswith(("//", "@")):
            continue
        label, _, rest = line.partition(" ")
        first, _, second = rest.partition(" ")
        if first.startswith("sha256:") and second:
            layout = Layout(workspace / second, second)
            root = layout.find(Digest.parse(first)) or layout.resolve(None)
            kind = "index" if root.media_type in mt.INDEXES else "image"
            out[second] = Output(label, kind, second, first)
        elif rest:
            path = workspace / rest
            kind = "directory" if path.is_dir() else "file"
            out[rest] = Output(label, kind, rest, _digest_path(path))
    return out


def _digest_path(path: Path) -> str:
    if not path.is_dir():
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        return f"sha256:{h.hexdigest()}"
    # A directory: its sorted (path, mode-executable, file digest) list, hashed.
    lines = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath, name)
            rel = p.relative_to(path).as_posix()
            x = "x" if os.access(p, os.X_OK) else "-"
            lines.append(f"{rel}\0{x}\0{_digest_path(p)}\n")
    return "sha256:" + hashlib.sha256("".join(lines).encode("utf-8", "surrogateescape")).hexdigest()




def run_all(
    patterns: list[str],
    flags: list[str],
    workspace: Path,
    rel_cwd: Path,
    runs: int,
    tmp: Path,
    report: AuditReport,
) -> list[Run]:
    """Build `patterns` `runs` times from nothing, each in a copy of the workspace under its own
    conditions; `flags` go to every `pyimg build`."""
    done: list[Run] = []
    for n in range(1, runs + 1):
        c = conditions_for(n)
        base = tmp / f"run-{n}"
        ws = base / ("a/deeper/path/to/the/workspace" if c.nested else "ws")
        run = Run(c, ws, base / "output_base", base / "cache")
        _copy_workspace(workspace, ws)
        if c.mtime_shift_days:
            _shift_mtimes(ws, c.mtime_shift_days)
        print(f"audit: run {n}/{runs}: {c.describe()} ...", end="", file=sys.stderr, flush=True)
        try:
            _build(run, rel_cwd, list(patterns), flags)
        except PyimgError:
            print(" failed", file=sys.stderr, flush=True)
            raise
        print(f" {len(run.outputs)} outputs in {run.seconds:.1f}s", file=sys.stderr, flush=True)
        report.runs.append(
            {
                "conditions": c.to_json(),
                "description": c.describe(),
                "seconds": round(run.seconds, 3),
            }
        )
        done.append(run)
    return done
