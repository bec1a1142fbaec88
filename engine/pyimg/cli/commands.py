"""The command registry and what every command shares: the common flags, the session, the
build request made from flags.

A command module registers itself with `@command(name, help, configure)`; `pyimg COMMAND` imports
only its module (cli/__init__.py names it), so this one imports nothing heavy at the top.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pyimg.core.session import Session
from pyimg.core.workspace import find_workspace

if TYPE_CHECKING:
    # Imported where used: `pyimg query` served from the loading cache must not pay for them.
    from pyimg.build.request import BuildRequest
    from pyimg.core.secrets import SecretStore
    from pyimg.external.options import RegistryOptions
    from pyimg.remote.options import RemoteOptions

__all__ = [
    "REGISTRY",
    "add_common_flags",
    "build_request",
    "command",
    "load_commands",
    "open_session",
    "registry_options",
]


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


def load_commands(names: list[str] | None = None) -> dict[str, Command]:
    """Import the modules of `names` (default: every command) and return the registry."""
    import importlib

    from pyimg.cli import COMMAND_MODULES

    for name in names if names is not None else list(COMMAND_MODULES):
        importlib.import_module(COMMAND_MODULES[name])
    return REGISTRY


def add_common_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--jobs", "-j", type=int, default=0, help="parallel actions (default: cores + 1)")
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
    p.add_argument("--remote-cache", metavar="URL",
                   help="a shared REAPI cache, grpc://HOST:PORT or grpcs://HOST:PORT "
                        "(docs/remote.md)")
    p.add_argument("--remote-executor", metavar="URL",
                   help="run sandboxed commands on an REAPI server's workers (grpc:// or "
                        "grpcs://); its cache is the remote cache unless --remote-cache names one")
    p.add_argument("--remote-local-fallback", action="store_true",
                   help="run an action locally when the remote executor keeps failing")
    p.add_argument("--remote-instance-name", default="", metavar="NAME",
                   help="the REAPI instance of --remote-cache (default: none)")
    p.add_argument("--remote-header", action="append", default=[], metavar="NAME=VALUE",
                   help="a header sent with every remote call, e.g. authorization=Bearer TOKEN "
                        "(repeatable; never logged)")
    p.add_argument("--remote-ca-file", metavar="FILE",
                   help="the CA certificates a grpcs:// remote is checked against (default: "
                        "the system's)")
    p.add_argument("--remote-upload-local-results", choices=["true", "false"], default="true",
                   help="false: only read the remote cache (a laptop), never upload to it")
    p.add_argument("--remote-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="how long one remote call may take before the remote cache is left "
                        "aside for the rest of the build (default 60)")
    p.add_argument("--remote-retry-backoff", type=float, default=0.5, metavar="SECONDS",
                   help="how long --remote-executor waits before retrying a failed call; each "
                        "further retry waits twice as long (default 0.5)")
    p.add_argument("--starlark-memory-mib", type=int, metavar="MIB",
                   help="memory a BUILD/.bzl/MODULE.pyimg evaluation may take (default 4096; "
                        "0: no limit)")
    p.add_argument("--starlark-max-steps", type=int, metavar="N",
                   help="thousands of loop iterations one file may run (default 10000; 0: no "
                        "limit)")


def add_platforms_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--platforms", metavar="OS/ARCH[/VARIANT],...",
                   help="build the targets for each of these platforms, like "
                        "linux/amd64,linux/arm64 (default: this machine's)")


def platforms_flag(args: argparse.Namespace) -> tuple[str, ...]:
    """The --platforms values (checked against the OCI values when the analysis uses them)."""
    text = getattr(args, "platforms", None) or ""
    return tuple(p.strip() for p in text.split(",") if p.strip())


def open_session(args: argparse.Namespace) -> Session:
    workspace = find_workspace(Path.cwd())
    return Session.open(workspace, args.disk_cache, args.output_base, args.switches.disk_cache)


def registry_options(args: argparse.Namespace) -> RegistryOptions:
    from pyimg.external.options import RegistryOptions

    return RegistryOptions(args.registry_config, tuple(args.insecure_registry), args.offline)


def build_request(args: argparse.Namespace, patterns: list[str], session: Session,
                  fetch_lazy: bool = True) -> BuildRequest:
    """The request of a build of `patterns` with these flags and switches (cli/main.py)."""
    from pyimg.build.request import BuildRequest, DisplayOptions, ExecutionOptions

    return BuildRequest(
        patterns=tuple(patterns),
        display=DisplayOptions(verbose=args.verbose, color=args.color),
        execution=ExecutionOptions(
            jobs=args.jobs,
            keep_going=args.keep_going,
            sandbox_strict=args.sandbox == "strict",
            schedule_seed=args.switches.schedule_seed,
        ),
        registry=registry_options(args),
        secrets=_secrets(args, session),
        reuse_analysis=args.switches.analysis_reuse,
        fetch_lazy=fetch_lazy,
        platforms=platforms_flag(args),
        remote=_remote(args),
    )


def _remote(args: argparse.Namespace) -> RemoteOptions | None:
    """The --remote-* flags as options; None without --remote-cache or --remote-executor."""
    if not args.remote_cache and not args.remote_executor:
        return None
    from pyimg.remote.options import RemoteOptions, parse_header

    return RemoteOptions(
        cache=args.remote_cache or args.remote_executor,
        executor=args.remote_executor,
        local_fallback=args.remote_local_fallback,
        instance_name=args.remote_instance_name,
        headers=tuple(parse_header(h) for h in args.remote_header),
        ca_file=args.remote_ca_file,
        upload=args.remote_upload_local_results == "true",
        timeout=args.remote_timeout,
        retry_backoff=args.remote_retry_backoff,
    )


def _secrets(args: argparse.Namespace, session: Session) -> SecretStore | None:
    """The --secret values, read now (a missing file or variable is a usage error before
    anything runs); None without --secret. The build closes the store."""
    if not args.secret:
        return None
    from pyimg.core.secrets import SecretStore, parse_secret_flag

    return SecretStore([parse_secret_flag(f) for f in args.secret], session.cache_root)
