"""The commands behind `pyimg COMMAND`: each turns parsed flags into engine calls and output.

A command is registered with `@command(name, help, configure)`; modules holding more commands are
imported at the bottom of this file so that `REGISTRY` is complete.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyimg.core.session import Session
from pyimg.core.workspace import find_workspace
from pyimg.errors import PyimgError, UsageError

if TYPE_CHECKING:
    # Imported where used: every command module imports this one, and `pyimg query` served from
    # the loading cache must not pay for the build engine's imports.
    from pyimg.build.build import BuildOptions

__all__ = ["REGISTRY", "add_common_flags", "command", "load_commands", "open_session"]


@dataclass(frozen=True)
class Command:
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


REGISTRY: dict[str, Command] = {}


def command(
    name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]
) -> Callable[[Callable[[argparse.Namespace], int]], Callable[[argparse.Namespace], int]]:
    def register(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        REGISTRY[name] = Command(help, configure, fn)
        return fn

    return register


def add_common_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", "-j", type=int, default=0, help="parallel actions (default: cores)")
    p.add_argument("--keep-going", "-k", action="store_true",
                   help="build as much as possible after a failure")
    p.add_argument("--verbose", "-v", action="store_true", help="log every action")
    p.add_argument("--disk-cache",
                   help="the cache root (content store, action cache); env PYIMG_DISK_CACHE")
    p.add_argument("--output-base", help="per-workspace state (lock, digest cache, last build)")
    p.add_argument("--color", choices=["yes", "no", "auto"], default="auto")
    p.add_argument("--sandbox", choices=["auto", "strict"], default="auto",
                   help="strict: fail instead of running actions unsandboxed")
    p.add_argument("--offline", action="store_true", help="use only the repository cache")
    p.add_argument("--registry-config", metavar="FILE",
                   help="registry credentials (docker config.json format; default "
                        "~/.docker/config.json)")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST",
                   help="allow plain http to HOST (loopback registries always are)")
    p.add_argument("--secret", action="append", default=[], metavar="id=ID,src=PATH|id=ID,env=VAR",
                   help="a secret that actions declaring `secrets = [ID]` may read (repeatable)")
    p.add_argument("--starlark-memory-mib", type=int, metavar="MIB",
                   help="memory a BUILD/.bzl/MODULE.pyimg evaluation may take (default 4096; "
                        "0: no limit)")
    p.add_argument("--starlark-max-steps", type=int, metavar="N",
                   help="thousands of loop iterations one file may run (default 10000; 0: no "
                        "limit)")


def open_session(args: argparse.Namespace) -> Session:
    workspace = find_workspace(Path.cwd())
    return Session.open(workspace, args.disk_cache, args.output_base)


def _configure_build(p: argparse.ArgumentParser) -> None:
    p.add_argument("patterns", nargs="+", metavar="PATTERN")
    add_common_flags(p)


def _configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("label")
    p.add_argument("args", nargs="*", help="arguments for the program, after --")
    add_common_flags(p)


def _configure_clean(p: argparse.ArgumentParser) -> None:
    p.add_argument("--expunge", action="store_true", help="also remove the shared caches")
    p.add_argument("--cache-dirs", action="store_true", help="remove only the actions' cache dirs")
    add_common_flags(p)


def _options(args: argparse.Namespace, patterns: list[str],
             session: Session | None = None, fetch_lazy: bool = True) -> BuildOptions:
    from pyimg.build.build import BuildOptions

    return BuildOptions(
        fetch_lazy=fetch_lazy,
        patterns=patterns,
        jobs=args.jobs,
        keep_going=args.keep_going,
        verbose=args.verbose,
        sandbox_strict=args.sandbox == "strict",
        color=args.color,
        secrets=_secrets(args, session),
        offline=getattr(args, "offline", False),
        registry_config=getattr(args, "registry_config", None),
        insecure_registries=tuple(getattr(args, "insecure_registry", None) or ()),
    )


def _secrets(args: argparse.Namespace, session: Session | None) -> dict[str, object]:
    """{"store": SecretStore} when --secret was given; values are read now (a missing file or
    variable is a usage error before anything runs). build() closes the store."""
    flags = getattr(args, "secret", None) or []
    if not flags or session is None:
        return {}
    from pyimg.core.secrets import SecretStore, parse_secret_flag

    return {"store": SecretStore([parse_secret_flag(f) for f in flags], session.cache_root)}


@command("build", "build targets; prints each image's label, digest and path", _configure_build)
def cmd_build(args: argparse.Namespace) -> int:
    from pyimg.build.build import build
    from pyimg.build.incremental import record_lines, render_report, report_lines
    from pyimg.build.progress import summary

    session = open_session(args)
    with session.locked("build"):
        report = build(session, _options(args, args.patterns, session))
        lines = report_lines(report.top_level, args.verbose)
        stdout = render_report(session.workspace, lines)
        sys.stdout.write(stdout)
        sys.stdout.flush()
        if getattr(args, "argv", None) is not None:
            from pyimg.build.noop import write_record

            actions = report.outcome.executed + report.outcome.cached
            write_record(session.output_base, session.workspace, args.argv, report.inputs,
                         report.outputs, stdout, actions,
                         lines=record_lines(session, report, lines, args),
                         observed=report.observed)
    print(summary(report.outcome.executed, report.outcome.cached, report.seconds), file=sys.stderr)
    return 0


@command("run", "build and run a runnable target (oci_load, oci_push)", _configure_run)
def cmd_run(args: argparse.Namespace) -> int:
    from pyimg.build.build import build

    session = open_session(args)
    with session.locked("run"):
        # An oci_push fetches only the base layers its destination lacks (docs/external-inputs.md).
        report = build(session, _options(args, [args.label], session, fetch_lazy=False))
    if len(report.top_level) != 1:
        raise UsageError(f"'{args.label}' must name exactly one target")
    target = report.top_level[0]
    if target.kind == "oci_load":
        import subprocess

        tarball = session.workspace / target.default_files[0]["path"]
        for tool in ("podman", "docker"):
            exe = shutil.which(tool)
            if exe:
                print(f"Loading {tarball.relative_to(session.workspace)} with {tool}", file=sys.stderr)
                import subprocess  # here: every command imports this module, few run a tool

                with open(tarball, "rb") as f:
                    return subprocess.call([exe, "load", *args.args], stdin=f)
        raise PyimgError("pyimg run of an oci_load needs podman or docker on PATH")
    if target.kind == "oci_push":
        from pyimg.build.push import run_push_target

        return run_push_target(session, target, args.args, report.lazy_blobs)
    raise UsageError(f"{target.label} ({target.kind}) is not runnable: run oci_load or oci_push targets")


@command("clean", "remove outputs (with --expunge: the caches too)", _configure_clean)
def cmd_clean(args: argparse.Namespace) -> int:
    session = open_session(args)
    with session.locked("clean"):
        if args.cache_dirs:
            # _rmtree_ro: tools make read-only cache trees (Go's module cache).
            _rmtree_ro(session.cache_root / "cache_dirs")
            return 0
        shutil.rmtree(session.workspace / "pyimg-out", ignore_errors=True)
        from pyimg.build.build_record import FILES as RECORD_FILES

        for name in (*RECORD_FILES, "file_digests.json", "file_digests.log", "analysis", "loading",
                     "noop"):
            p = session.output_base / name
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists():
                p.unlink()
        if args.expunge:
            _rmtree_ro(session.cache_root)
    return 0


def _rmtree_ro(path: Path) -> None:
    from pyimg.core.cas import remove_tree

    remove_tree(path)


def load_commands(names: list[str] | None = None) -> dict[str, Command]:
    """Import the modules of `names` (default: every command) and return the registry."""
    import importlib

    from pyimg.cli import COMMAND_MODULES

    for name in names if names is not None else list(COMMAND_MODULES):
        importlib.import_module(COMMAND_MODULES[name])
    return REGISTRY
