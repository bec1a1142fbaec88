"""`pyimg sbom LABEL`: build an image, then write its SBOM (docs/supply-chain.md)."""

from __future__ import annotations

import argparse
import sys

from pyimg.cli.commands import add_common_flags, build_request, command, open_session

__all__ = ["cmd_sbom", "source_date_epoch", "write_output"]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("label", help="an image (oci_image, oci_pull, oci_layout, oci_push of an image)")
    p.add_argument("--format", default="spdx-json", choices=["spdx-json", "cyclonedx-json"],
                   help="SPDX 2.3 JSON (default) or CycloneDX 1.5 JSON")
    p.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    add_common_flags(p)


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
    from pyimg.attest.sbom import sbom_bytes

    session = open_session(args)
    with session.locked("sbom"):
        data = sbom_bytes(session, build_request(args, [args.label], session), args.format,
                          source_date_epoch())
    write_output(data, args.output)
    return 0
