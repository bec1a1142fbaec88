"""Test helpers: temporary workspaces and a way to drive the `pyimg` CLI on them."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYIMG = [sys.executable, "-m", "pyimg.cli.main"]


@dataclass
class Result:
    code: int
    out: str
    err: str


class Workspace:
    """A temporary workspace with its own disk cache; `run` drives the CLI in-process."""

    def __init__(self, root: Path, cache: Path) -> None:
        self.root = root
        self.cache = cache
        root.mkdir(parents=True, exist_ok=True)
        if not (root / "MODULE.pyimg").exists():
            (root / "MODULE.pyimg").write_text("")

    def write(self, rel: str, text: str, mode: int | None = None) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        if mode is not None:
            path.chmod(mode)
        return path

    def flags(self) -> list[str]:
        return ["--disk-cache", str(self.cache)]

    def run(self, *args: str, cwd: Path | None = None) -> Result:
        from pyimg.cli.main import main

        argv = list(args)
        if argv and argv[0] in ("build", "run", "clean", "query", "aquery", "explain", "audit"):
            argv = [argv[0], *self.flags(), *argv[1:]]
        out, err = io.StringIO(), io.StringIO()
        old = os.getcwd()
        os.chdir(cwd or self.root)
        try:
            with redirect_stdout(out), redirect_stderr(err):
                code = main(argv)
        finally:
            os.chdir(old)
        return Result(code, out.getvalue(), err.getvalue())

    def spawn(self, *args: str, env: dict[str, str] | None = None, **kw: object) -> subprocess.Popen:
        argv = list(args)
        argv = [argv[0], *self.flags(), *argv[1:]]
        full_env = dict(os.environ)
        full_env.update(env or {})
        return subprocess.Popen([*PYIMG, *argv], cwd=self.root, env=full_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)  # type: ignore[arg-type]

    def out(self, rel: str) -> Path:
        return self.root / "pyimg-out" / rel
