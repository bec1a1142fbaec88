"""`pyimg sbom LABEL`: build an image, then write its SBOM (docs/supply-chain.md)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from pyimg.cli.commands import add_common_flags, build_request, command, open_session

if TYPE_CHECKING:
    from pyimg.attest.built import LastBuild
    from pyimg.core.session import Session

__all__ = ["build_command_line", "cmd_sbom", "last_build", "source_date_epoch", "write_output"]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("label", help="an image (oci_image, oci_pull, oci_layout, oci_push of an "
                                 "image) or an oci_image_index (one document per platform)")
    p.add_argument("--platform", metavar="OS/ARCH[/VARIANT]",
                   help="of an index: the document of this platform's image only")
    p.add_argument("--format", default="spdx-json", choices=["spdx-json", "cyclonedx-json"],
                   help="SPDX 2.3 JSON (default) or CycloneDX 1.5 JSON")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="write here instead of stdout; of an index without --platform, a "
                        "directory that gets one document per platform (linux-arm64.spdx.json)")
    add_common_flags(p)


def build_command_line(argv: list[str], own: dict[str, bool]) -> list[str]:
    """The `pyimg build` command line that builds what an attestation command line `argv`
    describes: `argv` with `build` for its command and without the command's own options
    (`own`: option -> whether it takes a value), so that its no-op record can be found."""
    out = ["build"]
    i = 1
    while i < len(argv):
        word = argv[i]
        if word == "--":  # the rest is positional
            out.extend(argv[i:])
            break
        name, eq, _ = word.partition("=")
        short = word[:2] if not word.startswith("--") else ""
        if name in own:
            i += 1 if eq or not own[name] else 2
        elif short in own:  # -o FILE or -oFILE
            i += 2 if word == short and own[short] else 1
        else:
            out.append(word)
            i += 1
    return out


def last_build(args: argparse.Namespace, session: Session,
               own: dict[str, bool]) -> LastBuild | None:
    """The record of the equivalent `pyimg build`'s last run when nothing changed since
    (attest/built.py): the command then checks no build. Called before the output base is
    locked; PYIMG_FAST_NOOP=0 always builds."""
    from pyimg.attest.built import unchanged_build

    if not args.switches.fast_noop:
        return None
    return unchanged_build(build_command_line(args.argv, own), session.workspace,
                           args.switches.disk_cache)


def source_date_epoch() -> int | None:
    """SOURCE_DATE_EPOCH (reproducible-builds.org), the time of a document whose image says none."""
    import os

    from pyimg.errors import UsageError

    text = os.environ.get("SOURCE_DATE_EPOCH")
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise UsageError(f"SOURCE_DATE_EPOCH={text!r} is not a number of seconds") from None


def write_output(data: bytes, path: str | None) -> None:
    """`data` to FILE (atomically) or to stdout."""
    if path is None:
        sys.stdout.flush()
        # A redirected stdout (the tests' StringIO) has no bytes buffer; the document is UTF-8.
        if hasattr(sys.stdout, "buffer"):
            sys.stdout.buffer.write(data)
        else:
            sys.stdout.write(data.decode())
        sys.stdout.flush()
        return
    from pathlib import Path

    from pyimg.core.cas import atomic_write_bytes

    atomic_write_bytes(Path(path), data)


@command("sbom", "build an image and write its SBOM (SPDX 2.3 or CycloneDX 1.5 JSON)", _configure)
def cmd_sbom(args: argparse.Namespace) -> int:
    from pyimg.attest.sbom import platform_file_name, sboms
    from pyimg.errors import UsageError

    session = open_session(args)
    last = last_build(args, session, {"--format": True, "-o": True, "--output": True,
                                      "--platform": True})
    with session.locked("sbom"):
        documents = sboms(session, build_request(args, [args.label], session), args.format,
                          source_date_epoch(), last=last, platform=args.platform)
    platform, data = documents[0]
    if platform is None or args.platform is not None:
        write_output(data, args.output)
        return 0
    # An index: one document per platform image, as BuildKit attaches one SBOM to each.
    if args.output is None:
        names = ", ".join(str(name) for name, _ in documents)
        raise UsageError(f"{args.label} is an index of {len(documents)} images ({names}): an "
                         "SBOM describes one image; name one with --platform, or write one "
                         "document per platform with -o DIRECTORY")
    from pathlib import Path

    directory = Path(args.output)
    directory.mkdir(parents=True, exist_ok=True)
    for name, document in documents:
        write_output(document, str(directory / platform_file_name(str(name), args.format)))
    return 0
