"""`pyimg run LABEL [-- ARGS]`: build one runnable target, then load it (oci_load) or push it
(oci_push)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import TYPE_CHECKING

from pyimg.cli.commands import add_common_flags, build_request, command, open_session
from pyimg.errors import PyimgError, UsageError

if TYPE_CHECKING:
    from pyimg.external.options import RegistryOptions
    from pyimg.signing.attach import Predicate

__all__ = ["cmd_run"]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("label")
    p.add_argument("args", nargs="*", help="arguments for the program, after --")
    add_common_flags(p)


@command("run", "build and run a runnable target (oci_load, oci_push)", _configure)
def cmd_run(args: argparse.Namespace) -> int:
    from pyimg.build.build import build

    session = open_session(args)
    with session.locked("run"):
        # An oci_push fetches only the base layers its destination lacks (docs/external-inputs.md).
        report = build(session, build_request(args, [args.label], session, fetch_lazy=False))
    if len(report.top_level) != 1:
        raise UsageError(f"'{args.label}' must name exactly one target")
    target = report.top_level[0]
    if target.kind == "oci_load":
        tarball = session.workspace / target.default_files[0]["path"]
        for tool in ("podman", "docker"):
            exe = shutil.which(tool)
            if exe:
                print(f"Loading {tarball.relative_to(session.workspace)} with {tool}", file=sys.stderr)
                import subprocess  # here: few runs start a tool

                with open(tarball, "rb") as f:
                    return subprocess.call([exe, "load", *args.args], stdin=f)
        raise PyimgError("pyimg run of an oci_load needs podman or docker on PATH")
    if target.kind == "oci_push":
        from pyimg.build.push import push_target

        push = _push_flags(target.label, args.args)
        request = build_request(args, [args.label], session, fetch_lazy=False)

        def attestations() -> list[Predicate]:
            # A signed oci_push attaches the SBOM and provenance; the build is cached by now.
            from pyimg.cli.push import build_attested

            with session.locked("run"):
                return build_attested(session, request)[1]

        digest = push_target(session, target, _push_registry(push), push.repository,
                             tuple(push.tag), report.lazy_blobs, os.environ, attestations)
        print(digest)
        return 0
    raise UsageError(f"{target.label} ({target.kind}) is not runnable: run oci_load or oci_push targets")


def _push_flags(label: str, extra_args: list[str]) -> argparse.Namespace:
    """The flags after `--` of `pyimg run //pkg:push -- --tag T --repository R ...`."""
    p = argparse.ArgumentParser(prog=f"pyimg run {label} --", add_help=False)
    p.add_argument("--repository")
    p.add_argument("--tag", action="append", default=[])
    p.add_argument("--insecure-registry", action="append", default=[])
    p.add_argument("--registry-config")
    try:
        return p.parse_args(extra_args)
    except SystemExit:
        raise UsageError(f"bad arguments for {label}: {' '.join(extra_args)}") from None


def _push_registry(push: argparse.Namespace) -> RegistryOptions:
    # Only the flags after `--`: the registry an oci_push names is its own (docs/cli.md).
    from pyimg.external.options import RegistryOptions

    return RegistryOptions(push.registry_config, tuple(push.insecure_registry))
