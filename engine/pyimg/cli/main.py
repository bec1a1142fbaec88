"""The `pyimg` command: parses flags (and .pyimgrc), runs a command, maps errors to exit codes."""

from __future__ import annotations

import argparse
import errno
import functools
import os
import shlex
import sys
from pathlib import Path

from pyimg import __version__
from pyimg.errors import PyimgError, UsageError

__all__ = ["main"]


def _parser(commands: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `commands` only (all of them for `--help`): each costs an import."""
    from pyimg.cli.commands import load_commands

    registry = load_commands(commands)
    parser = argparse.ArgumentParser(
        prog="pyimg",
        description="Daemonless, rootless, Bazel-like builds of reproducible OCI images.",
    )
    parser.add_argument("--version", action="version", version=f"pyimg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in registry.items():
        if commands is not None and name not in commands:
            continue
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
    return parser


def _rc_args(command: str, workspace: Path | None) -> list[str]:
    """Default flags from `.pyimgrc` (home, then workspace root): lines `COMMAND --flag ...`,
    and `common --flag ...` lines, of which `command` takes only the flags it has (as Bazel
    does: `common --disk-cache DIR` must not break `pyimg worker`, which has no such flag)."""
    out: list[str] = []
    for rc in [Path.home() / ".pyimgrc"] + ([workspace / ".pyimgrc"] if workspace else []):
        try:
            lines = rc.read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            continue
        for number, line in enumerate(lines, 1):
            words = shlex.split(line, comments=True)
            if words and words[0] == command:
                out.extend(words[1:])
            elif words and words[0] == "common":
                out.extend(_common_flags(command, words[1:], f"{rc}:{number}:1"))
    return out


def _common_flags(command: str, words: list[str], origin: str) -> list[str]:
    """The words of a `common` line that `command` takes: its own flags with their values. A
    flag that no command has is a usage error (a typo must not be dropped silently)."""
    parsers = _command_parsers()
    mine = parsers[command]._option_string_actions
    out: list[str] = []
    i = 0
    while i < len(words):
        word = words[i]
        name, has_value, _ = word.partition("=")
        action = mine.get(name) or next((p._option_string_actions[name] for p in
                                         parsers.values() if name in p._option_string_actions),
                                        None)
        if not word.startswith("-") or action is None:
            raise UsageError(f"{origin}: `common` takes flags of pyimg's commands; {word!r} is "
                             "not one")
        # A flag without `=VALUE` that takes one (nargs None: exactly one) has it in the next word.
        span = 2 if not has_value and action.nargs is None and i + 1 < len(words) else 1
        if name in mine:
            out.extend(words[i:i + span])
        i += span
    return out


@functools.cache
def _command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser by name (each costs an import: only a `common` line needs them)."""
    for action in _parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("pyimg's parser has no commands")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except PyimgError as e:
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        print("Interrupted.", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:
        return 1
    except OSError as e:
        # Writers that know their directory say "no space left on DIR" themselves; this is for
        # any other write (a record, the digest cache, an unpacked repository).
        if e.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        where = f" ({e.filename})" if e.filename else ""
        print(f"ERROR: no space left on device{where}; free some space and run the command "
              "again", file=sys.stderr, flush=True)
        return 1


def _main(argv: list[str]) -> int:
    if argv and argv[0] in ("--version", "-V"):
        print(f"pyimg {__version__}")  # the fast path: no command modules imported
        return 0
    from pyimg.cli import COMMAND_MODULES
    from pyimg.cli.switches import Switches

    switches = Switches.read(os.environ)
    known = bool(argv) and argv[0] in COMMAND_MODULES
    if known:
        from pyimg.core.workspace import find_workspace

        try:
            workspace: Path | None = find_workspace(Path.cwd())
        except UsageError:
            workspace = None
        argv = [argv[0], *_rc_args(argv[0], workspace), *argv[1:]]
        if argv[0] == "build" and workspace is not None and switches.fast_noop:
            # Before the engine is imported: with nothing changed, this is the whole command.
            import time

            from pyimg.build.noop import check_record, replay

            start = time.monotonic()
            check = check_record(argv, workspace, switches.disk_cache)
            if check is not None and not check.changed:
                replay(check.record, start)
                return 0
            if check is not None:  # files changed: if only sources, build what reads them
                from pyimg.build.incremental import rebuild

                try:
                    code = rebuild(check, workspace, switches.schedule_seed,
                                   switches.analysis_reuse)
                finally:
                    check.release()
                if code is not None:
                    return code
    from pyimg.cli.commands import REGISTRY

    parser = _parser([argv[0]] if known else None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return 0 if e.code in (0, None) else 2
    if not args.command:
        parser.print_help()
        return 2
    args.argv = argv  # the full command line after .pyimgrc, for the no-op record
    args.switches = switches
    from pyimg.loading.limits import configure

    # Every run sets them (to the defaults when not given): tests run many commands in-process.
    configure(getattr(args, "starlark_memory_mib", None), getattr(args, "starlark_max_steps", None))
    return REGISTRY[args.command].run(args)


if __name__ == "__main__":
    sys.exit(main())
