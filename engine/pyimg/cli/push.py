"""`pyimg push LABEL --repository R`: build an image or index (unless the last identical
command left it unchanged), then push it (docs/external-inputs.md)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from pyimg.cli.commands import (
    add_common_flags,
    build_request,
    command,
    open_session,
    registry_options,
)
from pyimg.errors import UsageError

if TYPE_CHECKING:
    from pyimg.analysis.analyzer import TargetResult
    from pyimg.build.build import BuildReport
    from pyimg.build.request import BuildRequest
    from pyimg.core.digest import Digest
    from pyimg.core.session import Session
    from pyimg.signing.attach import Predicate

__all__ = ["build_attested", "cmd_push"]


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("label", help="an image, index or oci_push target")
    p.add_argument("--repository", required=True, help="where to push, registry/repo[:tag]")
    p.add_argument("--tag", action="append", default=[], help="a tag to set (repeatable)")
    p.add_argument("--sign-key", metavar="KEY",
                   help="sign the pushed image (of an index: each image it lists too) and "
                        "attach its SBOM (SPDX; of an index, one per platform image) and "
                        "provenance as signed attestations: an ECDSA P-256 PEM file, or env://VAR")
    p.add_argument("--key-password-env", metavar="VAR",
                   help="the environment variable holding the key's password")
    p.add_argument("--key-password-file", metavar="FILE",
                   help="a file holding the key's password (one trailing newline ignored)")
    add_common_flags(p)


@command("push", "build an image or index and push it to a registry", _configure)
def cmd_push(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from pyimg.build.noop import fast_summary, valid_record, write_record
    from pyimg.build.push import push_layout_dir, target_layout

    session = open_session(args)
    start = time.monotonic()
    key = None
    if args.sign_key:
        import os

        from pyimg.signing.keys import open_signing_key

        # Read before anything is built or pushed: a wrong password pushes nothing.
        key = open_signing_key(args.sign_key, os.environ, args.key_password_env,
                               args.key_password_file)
    # Pushing again what is already built (nothing changed since): no build to verify. A signed
    # push derives its attestations from the build, so it always goes through the build.
    record = None
    predicates: list[Predicate] = []
    if args.switches.fast_noop and key is None:
        record = valid_record(args.argv, session.workspace, args.switches.disk_cache)
    lazy_blobs = None
    if record is not None and record.get("extra", {}).get("layout"):
        layout = Path(record["extra"]["layout"])
        print(fast_summary(record, time.monotonic() - start), file=sys.stderr)
    else:
        from pyimg.build.build import build
        from pyimg.build.progress import summary

        with session.locked("push"):
            request = build_request(args, [args.label], session, fetch_lazy=False)
            if key is None:
                report = build(session, request)
            else:
                report, predicates = build_attested(session, request)
            if len(report.top_level) != 1:
                raise UsageError(f"'{args.label}' must name exactly one target")
            layout = target_layout(session, report.top_level[0])
            write_record(session.output_base, session.workspace, args.argv, report.inputs,
                         report.outputs, "", report.outcome.executed + report.outcome.cached,
                         extra={"layout": str(layout)})
        print(summary(report.outcome.executed, report.outcome.cached, report.seconds),
              file=sys.stderr)
        lazy_blobs = report.lazy_blobs
    # A push needs the network anyway: the base layers a sparse layout lacks are fetched
    # whatever --offline says (as before typed requests; the build above honours it).
    registry = replace(registry_options(args), offline=False)
    digest, _ = push_layout_dir(session, layout, args.repository, args.tag, registry,
                                lazy_blobs=lazy_blobs, sign=key, predicates=predicates)
    print(digest)
    return 0


def build_attested(session: Session, request: BuildRequest) -> tuple[BuildReport, list[Predicate]]:
    """Build `request` and derive its SBOM (SPDX) and provenance, to be attached to the signed
    push. This wiring lives here because build may not import attest (attest is above it):
    push_layout_dir receives the attestations ready-made.

    Of an index: each platform image gets the SBOM `pyimg sbom LABEL --platform P` writes (as
    BuildKit attaches one per platform) and the provenance's predicate (the build that made the
    index made it); the index gets the provenance statement, whose subject it is."""
    import json

    from pyimg.attest.built import build_for_attestation
    from pyimg.attest.provenance import built_provenance
    from pyimg.attest.sbom import built_sboms
    from pyimg.cli.sbom import source_date_epoch
    from pyimg.signing.attach import Predicate

    built = build_for_attestation(session, request)
    try:
        sboms = built_sboms(built, "spdx-json", source_date_epoch())
        provenance = built_provenance(built)
        images = _platform_images(session, built.top_level)
    finally:
        built.close()
    assert built.report is not None  # built, not served from a record: none was given
    if sboms[0][0] is None:
        return built.report, [Predicate(sboms[0][1], "spdx", "SBOM"),
                              Predicate(provenance, "slsaprovenance", "provenance")]
    # The statement names the index; a platform image's names that image, around the same
    # predicate (signing/attach.py builds each statement about its subject).
    predicate = json.dumps(json.loads(provenance)["predicate"], sort_keys=True).encode()
    predicates = [Predicate(provenance, "slsaprovenance", "provenance")]
    for platform, sbom in sboms:
        about = images[str(platform)]
        predicates += [Predicate(sbom, "spdx", f"SBOM of {platform}", about),
                       Predicate(predicate, "slsaprovenance", f"provenance of {platform}", about)]
    return built.report, predicates


def _platform_images(session: Session, top_level: list[TargetResult]) -> dict[str, Digest]:
    """platform -> the manifest digest the one index of `top_level` lists for it (empty: not an
    index)."""
    from pyimg.attest.built import image_layout_path
    from pyimg.oci.layout import Layout
    from pyimg.oci.media_types import INDEXES

    path = image_layout_path(top_level[0]) if len(top_level) == 1 else None
    if path is None:
        return {}
    layout = Layout(session.workspace / path)
    top = layout.resolve(None)
    if top.media_type not in INDEXES:
        return {}
    return {str(m.platform): m.digest for m in layout.image_index(top).manifests}
