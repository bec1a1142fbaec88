"""`pyimg audit`: rebuild targets from nothing under varied conditions and explain any difference."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyimg.cli.commands import add_common_flags, command
from pyimg.core.digest import Digest
from pyimg.core.workspace import find_workspace
from pyimg.errors import AuditDifferenceError, PyimgError, UsageError, UserInputError
from pyimg.oci import media_types as mt
from pyimg.oci.diff import Difference, content_span, diff_descriptors, diff_layer_files
from pyimg.oci.layout import REF_NAME, Layout

__all__ = [
    "REPORT_SCHEMA",
    "ActionRef",
    "AuditReport",
    "Finding",
    "RunConditions",
    "cmd_audit",
    "conditions_for",
    "render_markdown",
]

REPORT_SCHEMA = "pyimg-audit/1"
# Never copied into a run's workspace: outputs of earlier builds, and version-control state that
# no action can read (the sandbox stages declared inputs only).
_NOT_COPIED = ("pyimg-out", ".git", ".hg", ".jj")
_TZS = ("UTC", "Pacific/Chatham", "America/St_Johns")
_LOCALES = ("C.UTF-8", "C", "POSIX")
_UMASKS = (0o022, 0o077, 0o002)
_DAY = 86400


# -- conditions --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunConditions:
    """What one audit run varies (SPEC section 7). Run 1 is the plain build; every later run
    changes each condition."""

    run: int  # 1-based
    nested: bool  # the workspace copy lives deeper, under a longer path
    umask: int
    tz: str
    lc_all: str
    jobs: int
    schedule_seed: str | None  # None: topological order
    extra_env: tuple[tuple[str, str], ...]
    mtime_shift_days: int  # source mtimes set this many days back (0: kept from the original)

    def env(self) -> dict[str, str]:
        out = {"TZ": self.tz, "LC_ALL": self.lc_all, **dict(self.extra_env)}
        if self.schedule_seed is not None:
            out["PYIMG_SCHEDULE_SEED"] = self.schedule_seed
        return out

    def describe(self) -> str:
        order = (
            f"shuffled order (seed {self.schedule_seed})"
            if self.schedule_seed
            else "topological order"
        )
        mtimes = f"mtimes -{self.mtime_shift_days}d" if self.mtime_shift_days else "mtimes kept"
        extra = " ".join(f"{k}={v}" for k, v in self.extra_env) or "no extra env"
        return (
            f"umask {self.umask:03o}, TZ={self.tz}, LC_ALL={self.lc_all}, --jobs {self.jobs}, "
            f"{order}, {mtimes}, {extra}{', nested path' if self.nested else ''}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run,
            "umask": f"{self.umask:03o}",
            "TZ": self.tz,
            "LC_ALL": self.lc_all,
            "jobs": self.jobs,
            "schedule_seed": self.schedule_seed,
            "extra_env": dict(self.extra_env),
            "mtime_shift_days": self.mtime_shift_days,
            "nested_path": self.nested,
        }


def conditions_for(run: int, cpus: int | None = None) -> RunConditions:
    """The conditions of run `run` (1-based): run 1 is plain, the others differ in every way."""
    cpus = max(2, cpus or os.cpu_count() or 2)
    i = run - 1
    if i == 0:
        return RunConditions(1, False, 0o022, "UTC", "C.UTF-8", 1, None, (), 0)
    extra = (("AUDIT_NOISE", "x" * run), ("PYTHONHASHSEED", str(1000 + run)))
    return RunConditions(
        run,
        nested=i % 2 == 1,
        umask=_UMASKS[i % len(_UMASKS)],
        tz=_TZS[i % len(_TZS)],
        lc_all=_LOCALES[i % len(_LOCALES)],
        jobs=cpus + i - 1,
        schedule_seed=str(run),
        extra_env=extra,
        mtime_shift_days=365 * i + 1,
    )


# -- one run -----------------------------------------------------------------------------------


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


def _pass_through(args: argparse.Namespace) -> list[str]:
    flags: list[str] = []
    if args.keep_going:
        flags.append("--keep-going")
    if args.sandbox == "strict":
        flags.append("--sandbox=strict")
    if args.offline:
        flags.append("--offline")
    if args.registry_config:
        flags += ["--registry-config", str(Path(args.registry_config).resolve())]
    for host in args.insecure_registry or ():
        flags += ["--insecure-registry", host]
    for secret in args.secret or ():
        # A relative src= names a file relative to where audit was started, not the copy.
        parts = []
        for part in secret.split(","):
            if part.startswith("src="):
                part = "src=" + str(Path(part[4:]).resolve())
            parts.append(part)
        flags += ["--secret", ",".join(parts)]
    return flags


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


# -- provenance --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionRef:
    """An action named in an explanation: what role it played and where the user declared it."""

    role: str  # e.g. "image", "layer blob", "layer tar", "file source"
    label: str
    mnemonic: str
    origin: str
    output: str
    detail: str = ""

    def describe(self) -> str:
        extra = f" [{self.detail}]" if self.detail else ""
        return f"{self.role}: {self.mnemonic} {self.label} ({self.origin}) -> {self.output}{extra}"

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "label": self.label,
            "mnemonic": self.mnemonic,
            "origin": self.origin,
            "output": self.output,
            "detail": self.detail,
        }


class Provenance:
    """Which action of a run produced which output path and which bytes, from the run's build
    record (key components per action) and its action cache (output digests)."""

    def __init__(self, output_base: Path, cache_root: Path) -> None:
        from pyimg.build.build_record import load_build_records
        from pyimg.core.action_cache import ActionCache
        from pyimg.core.cas import ContentStore

        try:
            data, _ = load_build_records(output_base)
        except ValueError:
            data = {}
        cache = ActionCache(cache_root, ContentStore(cache_root))
        self.records: list[dict[str, Any]] = []
        self.by_path: dict[str, dict[str, Any]] = {}
        self.by_digest: dict[str, tuple[dict[str, Any], str]] = {}
        in_dirs: list[tuple[str, tuple[dict[str, Any], str]]] = []
        for name, rec in sorted(data.items()):
            label, mnemonic, _ = name.split(" ", 2)
            comp = rec.get("components") or {}
            entry = {
                "label": label,
                "mnemonic": mnemonic,
                "origin": rec.get("origin", ""),
                "outputs": list(comp.get("outputs") or []) + list(comp.get("output_dirs") or []),
                "inputs": list((comp.get("inputs") or {}).keys()),
                "params": comp.get("params"),
            }
            self.records.append(entry)
            for p in entry["outputs"]:
                self.by_path[p] = entry
            result = cache.get(Digest.parse(rec["key"])) if rec.get("key") else None
            if result is None:
                continue
            for p, f in result.files.items():
                self.by_digest.setdefault(str(f.digest), (entry, p))
            for d, tree in result.dirs.items():
                in_dirs += [(str(f.digest), (entry, f"{d}/{rel}")) for rel, f in tree.items()]
        # A blob is attributed to the action that wrote it as a file (the oci_layer action), not
        # to an image layout that links it in; a directory only when no file action wrote it.
        for digest, hit in in_dirs:
            self.by_digest.setdefault(digest, hit)

    @staticmethod
    def ref(role: str, rec: dict[str, Any], output: str, detail: str = "") -> ActionRef:
        return ActionRef(role, rec["label"], rec["mnemonic"], rec["origin"], output, detail)

    def producer(self, path: str) -> dict[str, Any] | None:
        rec = self.by_path.get(path)
        if rec is not None:
            return rec
        # A file inside an output directory.
        for p, r in self.by_path.items():
            if path.startswith(p + "/"):
                return r
        return None

    def for_output(self, path: str, role: str) -> list[ActionRef]:
        rec = self.producer(path)
        return [self.ref(role, rec, path)] if rec else []

    def for_layer(self, digests: tuple[str, ...], entry: str | None) -> list[ActionRef]:
        """The action that wrote the layer blob, the tar it compressed, and (following pkg_tar's
        entries from in-layer path to source) the action that produced the differing file."""
        hit = next((self.by_digest[d] for d in digests if d in self.by_digest), None)
        if hit is None:
            return []
        rec, blob = hit
        refs = [self.ref("layer blob", rec, blob)]
        if rec["mnemonic"] != "OciLayer":
            return refs  # e.g. a base image's layer, imported as is
        params = rec["params"] if isinstance(rec["params"], dict) else {}
        if isinstance(params.get("tar_spec"), dict):
            # The layer streamed a pkg_tar's tar from its spec: follow the entry from there.
            return refs + self.trace_entry(params["tar_spec"], rec, blob, entry, depth=0)
        for tar in rec["inputs"]:
            refs += self.trace_tar(tar, entry, depth=0)
        return refs

    def trace_tar(self, tar: str, entry: str | None, depth: int = 0) -> list[ActionRef]:
        rec = self.producer(tar)
        if rec is None:
            return [ActionRef("layer tar", "(source file)", "", "", tar)]
        refs = [self.ref("layer tar", rec, tar)]
        if not isinstance(rec["params"], dict):
            return refs
        more = self.trace_entry(rec["params"], rec, tar, entry, depth)
        if more and more[0].role == "layer tar":
            return more  # the tar made the entry itself: that one line says it all
        return refs + more

    def trace_entry(self, params: dict[str, Any], rec: dict[str, Any], tar: str,
                    entry: str | None, depth: int) -> list[ActionRef]:
        """From pkg_tar `params` (written by `rec`), the action that produced `entry`'s bytes."""
        refs: list[ActionRef] = []
        if entry is None or depth > 8:
            return refs
        src = _entry_source(params, entry)
        if src is None:
            return refs
        kind, value = src
        if kind == "tars":  # the entry came in through a merged tar (`deps`): find which
            traced = [self.trace_tar(t, entry, depth + 1) for t in value.split("\0")]
            best = max(traced, key=len)
            return refs + best
        if kind == "self":
            return [
                ActionRef("layer tar", rec["label"], rec["mnemonic"], rec["origin"], tar, value)
            ]
        producer = self.producer(value)
        if producer is None:
            return refs + [ActionRef("file source", "(source file)", "", "", value, entry)]
        return refs + [self.ref("file source", producer, value, entry)]


def _entry_source(params: dict[str, Any], entry: str) -> tuple[str, str] | None:
    """Where pkg_tar took an in-layer path from: ("src", exec path) for a file or a directory
    input holding it, ("self", why) when pkg_tar made it itself, ("tars", NUL-joined paths) when
    it can only have come from one of the merged tars (`deps`)."""
    entry = entry.strip("/")
    for spec in params.get("entries") or []:
        if not isinstance(spec, dict):
            continue
        path = str(spec.get("path", "")).strip("/")
        if path == entry or entry.startswith(path + "/"):
            if spec.get("src"):
                return "src", str(spec["src"])
            return "self", f"{spec.get('type', 'entry')} {path}"
    for name in ("symlinks", "empty_dirs", "opaque_dirs"):
        value = params.get(name) or {}
        if entry in value:
            return "self", f"{name} {entry}"
    deps = [str(d) for d in params.get("deps") or []]
    return ("tars", "\0".join(deps)) if deps else None


# -- findings and report -----------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One explained difference of one output between two sides (two runs, or the published
    image and the rebuild)."""

    target: str
    output: str
    sides: tuple[str, str]
    digests: tuple[str, str]
    difference: Difference
    actions: tuple[ActionRef, ...]

    def origin(self) -> str | None:
        return self.actions[-1].origin if self.actions and self.actions[-1].origin else None

    def lines(self) -> list[str]:
        a, b = self.sides
        out = [f"  {self.difference.describe(a, b)}"]
        out += [f"    {r.describe()}" for r in self.actions]
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "output": self.output,
            "sides": list(self.sides),
            "digests": list(self.digests),
            "difference": self.difference.to_json(),
            "message": self.difference.describe(*self.sides),
            "actions": [r.to_json() for r in self.actions],
        }


@dataclass
class AuditReport:
    patterns: list[str]
    against: dict[str, Any] | None
    runs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "patterns": self.patterns,
            "against": self.against,
            "reproducible": not self.findings,
            "runs": self.runs,
            "outputs": self.outputs,
            "differences": [f.to_json() for f in self.findings],
        }


def render_markdown(report: dict[str, Any]) -> str:
    """The human report: verdict, runs and their conditions, outputs, each difference."""
    verdict = "reproducible" if report["reproducible"] else "NOT reproducible"
    lines = [f"# pyimg audit: {verdict}", "", f"Patterns: `{' '.join(report['patterns'])}`", ""]
    if report["against"]:
        lines += [f"Compared with: `{report['against']['ref']}`", ""]
    lines += ["## Runs", "", "| run | conditions | seconds |", "| --- | --- | --- |"]
    for r in report["runs"]:
        lines.append(f"| {r['conditions']['run']} | {r['description']} | {r['seconds']:.2f} |")
    lines += [
        "",
        "## Outputs",
        "",
        "| target | kind | path | identical | digests |",
        "| --- | --- | --- | --- | --- |",
    ]
    for o in report["outputs"]:
        digests = "<br>".join(f"`{d}`" for d in o["digests"])
        lines.append(
            f"| `{o['target']}` | {o['kind']} | `{o['path']}` | "
            f"{'yes' if o['identical'] else '**no**'} | {digests} |"
        )
    if report["differences"]:
        lines += ["", "## Differences", ""]
        for d in report["differences"]:
            lines += [
                f"### `{d['target']}` ({d['sides'][0]} vs {d['sides'][1]})",
                "",
                f"- {d['message']}",
            ]
            for a in d["actions"]:
                where = f" at `{a['origin']}`" if a["origin"] else ""
                detail = f" ({a['detail']})" if a["detail"] else ""
                lines.append(
                    f"- {a['role']}: {a['mnemonic']} `{a['label']}`{where} -> "
                    f"`{a['output']}`{detail}"
                )
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def _write_reports(report: AuditReport, paths: list[str]) -> None:
    data = report.to_json()
    for p in paths:
        text = (
            render_markdown(data)
            if p.endswith(".md")
            else json.dumps(data, indent=2, sort_keys=True) + "\n"
        )
        Path(p).parent.mkdir(parents=True, exist_ok=True)
        Path(p).write_text(text)


# -- comparing ---------------------------------------------------------------------------------


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


# -- the command -------------------------------------------------------------------------------


def _configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("patterns", nargs="+", metavar="PATTERN")
    p.add_argument(
        "--runs", type=int, default=None, help="how many times to build from nothing (default 2)"
    )
    p.add_argument(
        "--against",
        metavar="DIGEST|REF",
        help="compare one rebuild with a published image: a digest, an OCI layout "
        "(PATH or PATH:TAG) or a registry reference (HOST/REPO:TAG)",
    )
    p.add_argument(
        "--report",
        action="append",
        default=[],
        metavar="FILE",
        help="write the report: Markdown if FILE ends with .md, else JSON (repeatable)",
    )
    add_common_flags(p)


@command(
    "audit", "rebuild targets from nothing under varied conditions; explain differences", _configure
)
def cmd_audit(args: argparse.Namespace) -> int:
    if args.against and args.runs is not None:
        raise UsageError("--against compares one rebuild with a published image: drop --runs")
    runs = 1 if args.against else (2 if args.runs is None else args.runs)
    if runs < 1 or (runs < 2 and not args.against):
        raise UsageError(f"--runs must be at least 2, got {runs}")
    if args.jobs:
        print("audit: --jobs is ignored (each run chooses its own)", file=sys.stderr)
    workspace = find_workspace(Path.cwd())
    rel_cwd = Path.cwd().resolve().relative_to(workspace)
    report = AuditReport(list(args.patterns), None)
    tmp = Path(tempfile.mkdtemp(prefix="pyimg-audit-"))
    try:
        done = _run_all(args, workspace, rel_cwd, runs, tmp, report)
        prov = Provenance(done[0].output_base, done[0].cache)
        if args.against:
            _compare_against(args, done[0], prov, report, tmp)
        else:
            _compare_runs(done, prov, report)
    finally:
        from pyimg.core.cas import remove_tree as _rmtree

        _rmtree(tmp)  # the runs' caches hold read-only blobs and trees
    _write_reports(report, args.report)
    return _finish(report)


def _run_all(
    args: argparse.Namespace,
    workspace: Path,
    rel_cwd: Path,
    runs: int,
    tmp: Path,
    report: AuditReport,
) -> list[Run]:
    flags = _pass_through(args)
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
            _build(run, rel_cwd, list(args.patterns), flags)
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


def _compare_runs(done: list[Run], prov: Provenance, report: AuditReport) -> None:
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


def _compare_against(
    args: argparse.Namespace, run: Run, prov: Provenance, report: AuditReport, tmp: Path
) -> None:
    images = [o for o in run.outputs.values() if o.kind in ("image", "index")]
    if len(images) != 1:
        raise UsageError(
            f"--against needs the patterns to match exactly one image or index; "
            f"they matched {len(images)}"
        )
    out = images[0]
    ref = args.against
    published, layout_dir, tag = _published(args, ref, tmp)
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
    args: argparse.Namespace, ref: str, tmp: Path
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
    client = RegistryClient(
        credentials=CredentialStore(Path(args.registry_config)) if args.registry_config else None,
        insecure=tuple(args.insecure_registry or ()),
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


def _finish(report: AuditReport) -> int:
    outputs = report.outputs
    if not report.findings:
        what = "the published image" if report.against else f"{len(report.runs)} runs"
        print(f"audit: {len(outputs)} outputs identical across {what}: reproducible")
        return 0
    by_target: dict[tuple[str, str, tuple[str, str]], list[Finding]] = {}
    for f in report.findings:
        by_target.setdefault((f.target, f.output, f.sides), []).append(f)
    for (target, output, sides), findings in by_target.items():
        d = findings[0].digests
        print(f"{target} differs ({output}): {sides[0]} {d[0]}, {sides[1]} {d[1]}")
        for f in findings:
            print("\n".join(f.lines()))
    first = report.findings[0]
    cause = ""
    if first.actions:
        a = first.actions[-1]
        cause = f"; caused by {a.mnemonic} {a.label} ({a.origin})" if a.origin else ""
    differing = sorted({f.target for f in report.findings})
    more = len(report.findings) - 1
    verdict = (
        f"{', '.join(differing)} differs from the published image"
        if report.against
        else f"not reproducible: {', '.join(differing)}"
    )
    raise AuditDifferenceError(
        f"audit: {verdict}; first difference: "
        f"{first.difference.describe(*first.sides)}{cause}"
        + (f" ({more} more above)" if more else ""),
        origin=first.origin(),
    )
