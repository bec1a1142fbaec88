"""Comparing audit runs with each other or with a published image, down to the file that
differs."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

from pyimg.audit.provenance import Provenance
from pyimg.audit.report import AuditReport, Finding
from pyimg.audit.runner import Run
from pyimg.core.digest import Digest
from pyimg.errors import UsageError, UserInputError
from pyimg.oci.diff import Difference, content_span, diff_descriptors, diff_layer_files
from pyimg.oci.layout import REF_NAME, Layout

__all__ = ["compare_against", "compare_runs"]

def _explain(
    target: str,
    output: str,
    kind: str,
    sides: tuple[str, str],
    a: tuple[Path, str],
    b: tuple[Path, str],
    prov: Provenance,
) -> list[Finding]:
    """Findings for one output whose digests differ between two workspaces `a` and `b`."""
    (ws_a, dig_a), (ws_b, dig_b) = a, b
    digests = (dig_a, dig_b)
    if kind in ("image", "index"):
        la, lb = (
            Layout(ws_a / output, f"{sides[0]}: {output}"),
            Layout(ws_b / output, f"{sides[1]}: {output}"),
        )
        ra = la.find(Digest.parse(dig_a)) or la.resolve(None)
        rb = lb.find(Digest.parse(dig_b)) or lb.resolve(None)
        diffs = diff_descriptors(la, ra, lb, rb)
    elif kind == "file":
        d = _file_difference(ws_a / output, ws_b / output, output)
        diffs = [d] if d is not None else []
    else:
        diffs = [Difference("blob", (output,), "", dig_a, dig_b)]
    top = "index" if kind == "index" else "image" if kind == "image" else "output"
    findings = []
    for d in diffs:
        if d.layer_digests is not None:
            refs = prov.for_layer(d.layer_digests, d.entry)
            refs = refs or prov.for_output(output, top)
        elif kind == "file" and d.entry is not None and d.entry != output:
            # A top-level tar: its producer, then the source of the differing entry.
            refs = prov.trace_tar(output, d.entry)
        else:
            refs = prov.for_output(output, top)
        findings.append(Finding(target, output, sides, digests, d, tuple(refs)))
    if not findings:  # equal content under different digests cannot happen; say so if it does
        findings.append(
            Finding(
                target,
                output,
                sides,
                digests,
                Difference("blob", (output,), "", dig_a, dig_b),
                tuple(prov.for_output(output, top)),
            )
        )
    return findings


def _file_difference(a: Path, b: Path, output: str) -> Difference | None:
    if output.endswith((".tar", ".tar.gz", ".tgz", ".tar.zst")):
        try:
            return diff_layer_files(a, b, (output,))
        except UserInputError:
            pass  # not a tar after all: compare bytes
    with open(a, "rb") as fa, open(b, "rb") as fb:
        span = content_span(fa, fb)
    size_a, size_b = a.stat().st_size, b.stat().st_size
    if span is None:
        if size_a == size_b:
            return None
        span = (min(size_a, size_b), abs(size_a - size_b))
    return Difference(
        "content", (output,), "", size_a, size_b, entry=output, offset=span[0], length=span[1]
    )


def compare_runs(done: list[Run], prov: Provenance, report: AuditReport) -> None:
    """Compare every run's outputs with the first run's, explaining each difference."""
    first = done[0]
    for path, out in sorted(first.outputs.items()):
        digests = [r.outputs[path].digest if path in r.outputs else None for r in done]
        report.outputs.append(
            {
                "target": out.target,
                "kind": out.kind,
                "path": path,
                "digests": digests,
                "identical": len(set(digests)) == 1,
            }
        )
        for k, other in enumerate(done[1:], start=2):
            theirs = other.outputs.get(path)
            if theirs is None or theirs.digest == out.digest:
                continue
            report.findings += _explain(
                out.target,
                path,
                out.kind,
                ("run 1", f"run {k}"),
                (first.workspace, out.digest),
                (other.workspace, theirs.digest),
                prov,
            )


def compare_against(
    against: str,
    registry: tuple[str | None, tuple[str, ...]],
    run: Run,
    prov: Provenance,
    report: AuditReport,
    tmp: Path,
) -> None:
    """Compare the rebuild `run` with the published image `against` (a digest, a layout or a
    registry reference; `registry` is (docker config path, insecure hosts) for pulling it)."""
    images = [o for o in run.outputs.values() if o.kind in ("image", "index")]
    if len(images) != 1:
        raise UsageError(
            f"--against needs the patterns to match exactly one image or index; "
            f"they matched {len(images)}"
        )
    out = images[0]
    ref = against
    published, layout_dir, tag = _published(registry, ref, tmp)
    report.against = {"ref": ref, "digest": published}
    report.outputs.append(
        {
            "target": out.target,
            "kind": out.kind,
            "path": out.path,
            "digests": [published, out.digest],
            "identical": published == out.digest,
        }
    )
    if published == out.digest:
        return
    sides = ("published", "rebuild")
    if layout_dir is None:
        d = Difference("digest", (out.path,), "", published, out.digest)
        report.findings.append(
            Finding(
                out.target,
                out.path,
                sides,
                (published, out.digest),
                d,
                tuple(prov.for_output(out.path, out.kind)),
            )
        )
        return
    la = Layout(layout_dir, ref)
    lb = Layout(run.workspace / out.path, f"rebuild: {out.path}")
    ra = la.resolve(tag)
    rb = lb.find(Digest.parse(out.digest)) or lb.resolve(None)
    diffs = diff_descriptors(la, ra, lb, rb)
    top = out.kind
    for d in diffs or [Difference("blob", (out.path,), "", published, out.digest)]:
        refs = prov.for_layer(d.layer_digests, d.entry) if d.layer_digests else []
        refs = refs or prov.for_output(out.path, top)
        report.findings.append(
            Finding(out.target, out.path, sides, (published, out.digest), d, tuple(refs))
        )


def _published(
    registry: tuple[str | None, tuple[str, ...]], ref: str, tmp: Path
) -> tuple[str, Path | None, str | None]:
    """(digest, layout dir or None, tag) of what `--against` names."""
    if ref.startswith("sha256:"):
        try:
            return str(Digest.parse(ref)), None, None
        except ValueError:
            raise UsageError(f"--against {ref!r}: not a sha256:<64 hex> digest") from None
    text = ref.removeprefix("oci:")
    for path, tag in _layout_candidates(text):
        if (path / "oci-layout").is_file():
            layout = Layout(path, ref)
            return str(layout.resolve(tag).digest), path, tag
    # Not a layout on disk: a registry reference.
    from pyimg.registry.auth import CredentialStore
    from pyimg.registry.client import RegistryClient
    from pyimg.registry.reference import parse_reference

    parsed = parse_reference(text.removeprefix("docker://"))
    dest = tmp / "published"
    config, insecure = registry
    client = RegistryClient(
        credentials=CredentialStore(Path(config)) if config else None,
        insecure=insecure,
    )
    print(f"audit: pulling {parsed} ...", file=sys.stderr, flush=True)
    try:
        result = client.pull_to_layout(parsed, dest)
    finally:
        client.close()
    layout = Layout(dest, str(parsed))
    root = layout.find(result.manifest.digest) or layout.resolve(parsed.tag)
    return str(root.digest), dest, dict(root.annotations).get(REF_NAME)


def _layout_candidates(text: str) -> Iterator[tuple[Path, str | None]]:
    yield Path(text), None
    if ":" in text:
        path, _, tag = text.rpartition(":")
        yield Path(path), tag
