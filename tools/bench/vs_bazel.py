#!/usr/bin/env python3
"""Side-by-side benchmark of pyimg and Bazel 4.2.3 on one generated genrule workspace.

    .venv/bin/python tools/bench/vs_bazel.py --targets 1000,10000,50000 --rounds 3,2,1

Figures and what they mean: docs/benchmarks.md, "Scale: pyimg vs Bazel 4.2.3".

Bazel is Debian's `bazel-bootstrap` (`tools/setup --bench` installs it). For each size, the
graph of tools/bench/workspace_gen.py (targets/5 packages, up to 3 deps per genrule, `cat $(SRCS)
> $@`) is written twice: once for pyimg (MODULE.pyimg, BUILD.pyimg) and once for Bazel (WORKSPACE,
BUILD.bazel, a .bazelrc and a .bazelignore), with the same sources and BUILD text. Every round
runs the scenarios below, each timed for pyimg and for Bazel back to back (who goes first
alternates by round), with the same environment (PATH included) for every command:

- cold: pyimg with its disk cache, output base and pyimg-out/ removed; Bazel after `bazel clean`
  (outputs and action cache gone, no disk or repository cache) with its server kept running
  (what Skyframe keeps in memory across a clean is in the build's log: "N packages loaded");
- no-op; leaf source edited (a target nothing depends on); root source edited (the first
  target, which most of the graph reaches); a comment appended to one BUILD file.

Before round 1 each tool builds once, untimed, and is cleaned (`--no-warmup` skips it): the
Bazel server's JVM is warm and both tools' files are in the page cache. Both run with their
default sandbox and job count. Printed per size: the medians, pyimg/Bazel ratios, the actions
each ran, pyimg's peak RSS (ru_maxrss of the `pyimg` process tree, from wait4) and the Bazel
server's VmHWM (/proc/<server_pid>/status), and the load average. Once per size it checks that
both tools' outputs agree, byte for byte, on a sample of targets.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from workspace_gen import generate  # noqa: E402

PYIMG = str(REPO / ".venv/bin/pyimg")
BAZEL = shutil.which("bazel") or "/usr/bin/bazel"
# The same environment for every command of both tools: Bazel's actions inherit PATH, and a PATH
# that changed between runs would re-run them all.
ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": os.environ.get("HOME", "/root"),
    "LANG": "C.UTF-8",
}
BAZELRC = (
    "build --nosandbox_debug --color=no --curses=no\n"
    # No cache outlives `bazel clean`: no disk cache, no repository cache.
    "build --disk_cache= --repository_cache=\n"
)
# Bazel's convenience links in the workspace (bazel-<dir name> is bazel-ws).
BAZELIGNORE = "bazel-bin\nbazel-out\nbazel-testlogs\nbazel-ws\n"
SCENARIOS = ("cold", "no-op", "leaf source edited", "root source edited", "BUILD file comment")


@dataclass
class Workspaces:
    """The pair of workspaces one size is measured on, and what the scenarios edit."""

    pyimg: Path
    bazel: Path
    labels: list[str]
    deps: dict[str, list[str]]

    @property
    def root(self) -> str:
        return self.labels[0]

    @property
    def leaf(self) -> str:
        # Deps point only at earlier targets, so the last one declared has no dependents.
        return self.labels[-1]

    def source(self, label: str) -> str:
        pkg, name = label[2:].split(":")
        return f"{pkg}/{name}.txt"

    def output(self, label: str) -> str:
        pkg, name = label[2:].split(":")
        return f"{pkg}/{name}.out"

    def dependents(self, label: str) -> int:
        """How many targets reach `label` (itself included): the actions its source re-runs."""
        rdeps: dict[str, list[str]] = {}
        for target, ds in self.deps.items():
            for d in ds:
                rdeps.setdefault(d, []).append(target)
        seen = {label}
        stack = [label]
        while stack:
            for r in rdeps.get(stack.pop(), []):
                if r not in seen:
                    seen.add(r)
                    stack.append(r)
        return len(seen)


_STANZA = re.compile(r'name = "([^"]+)",\n    srcs = \[([^\]]*)\]')


def write_workspaces(root: Path, targets: int, packages: int | None = None) -> Workspaces:
    """Write the pyimg workspace (root/pyimg/ws) and its Bazel twin (root/bazel/ws): the same
    sources and the same BUILD text, only the file names and each tool's own settings differ."""
    packages = packages or max(1, targets // 5)
    ws_p = root / "pyimg" / "ws"
    ws_b = root / "bazel" / "ws"
    labels = generate(ws_p, targets=targets, packages=packages)
    deps: dict[str, list[str]] = {}
    ws_b.mkdir(parents=True)
    for dirpath, _dirs, files in os.walk(ws_p):
        rel = Path(dirpath).relative_to(ws_p)
        (ws_b / rel).mkdir(parents=True, exist_ok=True)
        for f in files:
            text = (Path(dirpath) / f).read_text()
            if f == "MODULE.pyimg":
                continue
            if f == "BUILD.pyimg":
                pkg = rel.as_posix()
                for name, srcs in _STANZA.findall(text):
                    deps[f"//{pkg}:{name}"] = [s.strip('"') for s in srcs.split(", ")[1:]]
                f = "BUILD.bazel"
            (ws_b / rel / f).write_text(text)
    (ws_b / "WORKSPACE").write_text('workspace(name = "ws")\n')
    (ws_b / ".bazelrc").write_text(BAZELRC)
    (ws_b / ".bazelignore").write_text(BAZELIGNORE)
    return Workspaces(ws_p, ws_b, labels, deps)


@dataclass
class Run:
    seconds: float
    actions: int
    peak_kib: int = 0


@dataclass
class Results:
    """Every timed run of one size, by scenario and tool."""

    runs: dict[tuple[str, str], list[Run]] = field(default_factory=dict)

    def add(self, scenario: str, tool: str, run: Run) -> None:
        self.runs.setdefault((scenario, tool), []).append(run)

    def median(self, scenario: str, tool: str) -> float:
        return statistics.median(r.seconds for r in self.runs[(scenario, tool)])


def timed(argv: list[str], cwd: Path, log: Path) -> tuple[float, int, str]:
    """Run `argv`, return (wall seconds, peak RSS in KiB of its process tree, stderr+stdout).
    wait4's ru_maxrss is the largest of the process and the descendants it waited for."""
    with open(log, "w+b") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=cwd, env=ENV, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{text[-3000:]}")
    return elapsed, usage.ru_maxrss, text


class Pyimg:
    name = "pyimg"

    def __init__(self, ws: Path, state: Path, program: str = PYIMG) -> None:
        self.ws = ws
        self.program = program
        self.cache = state / "disk-cache"
        self.output_base = state / "output-base"
        self.log = state / "last.log"

    def clean(self) -> None:
        for d in (self.cache, self.output_base, self.ws / "pyimg-out"):
            shutil.rmtree(d, ignore_errors=True)

    def build(self) -> Run:
        argv = [self.program, "build", "--disk-cache", str(self.cache), "--output-base",
                str(self.output_base), "//..."]
        seconds, peak, text = timed(argv, self.ws, self.log)
        m = re.search(r"Build completed: (\d+) actions run", text)
        return Run(seconds, int(m.group(1)) if m else -1, peak)

    def output(self, rel: str) -> bytes:
        return (self.ws / "pyimg-out" / rel).read_bytes()

    def close(self) -> None:
        pass


class Bazel:
    name = "Bazel"

    def __init__(self, ws: Path, state: Path) -> None:
        self.ws = ws
        self.startup = [BAZEL, f"--output_user_root={state / 'output-user-root'}"]
        self.log = state / "last.log"
        self.loaded: list[str] = []
        # Start the server now, so that no timed run pays for it.
        self.server_pid = int(self._info("server_pid"))

    def _info(self, key: str) -> str:
        out = subprocess.run([*self.startup, "info", key], cwd=self.ws, env=ENV, check=True,
                             capture_output=True, text=True)
        return out.stdout.strip()

    def clean(self) -> None:
        subprocess.run([*self.startup, "clean"], cwd=self.ws, env=ENV, check=True,
                       capture_output=True)

    def build(self) -> Run:
        seconds, _client_peak, text = timed([*self.startup, "build", "//..."], self.ws, self.log)
        # "INFO: 1001 processes: 1 internal, 1000 linux-sandbox." (absent when nothing ran)
        m = re.search(r"INFO: (\d+) processes?: (.*)", text)
        spawned = 0
        if m:
            spawned = sum(int(n) for n, kind in re.findall(r"(\d+) ([\w-]+)", m.group(2))
                          if kind != "internal")
        loaded = re.search(r"\((\d+) packages? loaded", text)
        self.loaded.append(loaded.group(1) if loaded else "0")
        return Run(seconds, spawned)

    def vm_hwm_kib(self) -> int:
        """The server's peak resident set since it started."""
        status = Path(f"/proc/{self.server_pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]

    def output(self, rel: str) -> bytes:
        return (self.ws / "bazel-bin" / rel).read_bytes()

    def close(self) -> None:
        subprocess.run([*self.startup, "shutdown"], cwd=self.ws, env=ENV, capture_output=True)


def edit(ws: Workspaces, rel: str, text: str, append: bool = False) -> None:
    """The same edit in both workspaces."""
    for base in (ws.pyimg, ws.bazel):
        path = base / rel
        path.write_text((path.read_text() if append else "") + text)


def check_outputs_agree(ws: Workspaces, tools: list[Pyimg | Bazel], sample: int = 50) -> int:
    """Compare both tools' outputs for a sample of targets (plus the root and the leaf)."""
    rng = random.Random(17)
    labels = sorted({ws.root, ws.leaf, *rng.sample(ws.labels, min(sample, len(ws.labels)))})
    for label in labels:
        got = {t.name: t.output(ws.output(label)) for t in tools}
        if len(set(got.values())) != 1:
            raise SystemExit(f"outputs differ for {label}: {got}")
    return len(labels)


def measure(size: int, rounds: int, tmp: Path, warmup: bool, skip: set[str],
            program: str = PYIMG, with_bazel: bool = True) -> dict[str, object]:
    """One size's scenarios; `with_bazel` False times pyimg alone (`--pyimg-only`: measuring
    pyimg at 50,000 targets without a Bazel server's gigabyte on a shared machine)."""
    root = tmp / f"size-{size}"
    ws = write_workspaces(root, size)
    pyimg = Pyimg(ws.pyimg, root / "pyimg", program)
    bazel = Bazel(ws.bazel, root / "bazel") if with_bazel else None
    tools: list[Pyimg | Bazel] = [pyimg, bazel] if bazel is not None else [pyimg]
    results = Results()
    load_before = os.getloadavg()
    build_pkg = ws.labels[len(ws.labels) // 2][2:].split(":")[0]
    checked, bazel_hwm = 0, 0
    try:
        if warmup:
            for t in tools:
                t.build()
                t.clean()
        for r in range(rounds):
            order = tools if r % 2 == 0 else tools[::-1]

            def each(scenario: str, order: list[Pyimg | Bazel] = order, r: int = r) -> None:
                if scenario in skip:
                    return
                for t in order:
                    run = t.build()
                    results.add(scenario, t.name, run)
                    print(f"  [{size} r{r + 1}] {scenario:20} {t.name:6} {run.seconds:8.2f} s "
                          f"{run.actions:6} actions", flush=True)

            for t in order:
                t.clean()
            subprocess.run(["sync"], check=True)
            each("cold")
            each("no-op")
            edit(ws, ws.source(ws.leaf), f"leaf edit, round {r}\n")
            each("leaf source edited")
            if "root source edited" not in skip:
                edit(ws, ws.source(ws.root), f"root edit, round {r}\n")
                each("root source edited")
            for path in (ws.pyimg / f"{build_pkg}/BUILD.pyimg", ws.bazel / f"{build_pkg}/BUILD.bazel"):
                path.write_text(path.read_text() + f"# edit {r}\n")
            each("BUILD file comment")
            if r == 0 and bazel is not None:
                checked = check_outputs_agree(ws, tools)
        bazel_hwm = bazel.vm_hwm_kib() if bazel is not None else 0
    finally:
        if bazel is not None:
            bazel.close()
    load_after = os.getloadavg()
    pyimg_peak = max(run.peak_kib for runs in results.runs.values() for run in runs)
    report: dict[str, object] = {
        "targets": size, "packages": size // 5, "rounds": rounds,
        "edges": sum(len(d) for d in ws.deps.values()),
        "root_dependents": ws.dependents(ws.root), "leaf_dependents": ws.dependents(ws.leaf),
        "load_before": load_before, "load_after": load_after,
        "outputs_checked": checked, "bazel_packages_loaded": bazel.loaded if bazel is not None else [],
        "pyimg_peak_rss_mib": pyimg_peak / 1024, "bazel_server_vmhwm_mib": bazel_hwm / 1024,
        "scenarios": {},
    }
    for s in (s for s in SCENARIOS if s not in skip):
        p, b = results.runs[(s, "pyimg")], results.runs.get((s, "Bazel"), [])
        report["scenarios"][s] = {  # type: ignore[index]
            "pyimg": [r.seconds for r in p], "bazel": [r.seconds for r in b],
            "pyimg_actions": [r.actions for r in p], "bazel_actions": [r.actions for r in b],
            "pyimg_peak_rss_mib": max(r.peak_kib for r in p) / 1024,
        }
    shutil.rmtree(root, ignore_errors=True)
    return report


def print_table(rep: dict[str, object]) -> None:
    la, lb = rep["load_before"], rep["load_after"]
    print(f"\n### {rep['targets']:,} targets ({rep['packages']:,} packages, {rep['edges']:,} edges), "
          f"{rep['rounds']} round(s); load average {la[0]:.2f} before, {lb[0]:.2f} after; "  # type: ignore[index]
          f"outputs of {rep['outputs_checked']} targets agree\n")
    print("| scenario | Bazel 4.2.3 (warm server) | pyimg | pyimg / Bazel | actions run (pyimg / Bazel) "
          "| pyimg peak RSS |")
    print("| --- | --- | --- | --- | --- | --- |")
    for s, d in rep["scenarios"].items():  # type: ignore[attr-defined]
        p = statistics.median(d["pyimg"])
        if d["bazel"]:
            b = statistics.median(d["bazel"])
            bazel_s, ratio, bazel_n = f"{b:.2f} s", f"{p / b:.2f}", d["bazel_actions"][-1]
        else:  # --pyimg-only
            bazel_s, ratio, bazel_n = "-", "-", "-"
        print(f"| {s} | {bazel_s} | {p:.2f} s | {ratio} | {d['pyimg_actions'][-1]} / "
              f"{bazel_n} | {d['pyimg_peak_rss_mib']:.0f} MiB |")
    print(f"\nPeak memory: pyimg {rep['pyimg_peak_rss_mib']:.0f} MiB (largest process, any "
          f"scenario), Bazel server VmHWM {rep['bazel_server_vmhwm_mib']:.0f} MiB. Root source "
          f"reaches {rep['root_dependents']} targets, leaf {rep['leaf_dependents']}. Bazel's "
          f"packages loaded per build: {' '.join(rep['bazel_packages_loaded'])}.")  # type: ignore[arg-type]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="1000,10000,50000", help="comma-separated sizes")
    ap.add_argument("--rounds", default="3,2,1",
                    help="rounds per size (one number for all, or one per size)")
    ap.add_argument("--no-warmup", dest="warmup", action="store_false",
                    help="skip the untimed build and clean before round 1")
    ap.add_argument("--skip", action="append", default=[], choices=SCENARIOS[1:],
                    help="a scenario not to run (repeatable): the root edit takes as long as a "
                         "cold build")
    ap.add_argument("--pyimg", default=PYIMG,
                    help="the pyimg program (e.g. one of a snapshot of the engine, so that a long "
                         "run does not pick up edits of the checkout)")
    ap.add_argument("--pyimg-only", dest="with_bazel", action="store_false",
                    help="time pyimg alone (no Bazel needed): its figures at a size where a "
                         "Bazel server would take gigabytes of a shared machine")
    ap.add_argument("--json", type=Path, help="also write the raw figures here")
    ap.add_argument("--tmp", type=Path, help="where the workspaces go (default: a temp dir)")
    args = ap.parse_args()
    if args.with_bazel and not Path(BAZEL).exists():
        print("no bazel: run tools/setup --bench (Debian's bazel-bootstrap)", file=sys.stderr)
        return 2
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "engine")], check=True,
                   stdout=subprocess.DEVNULL)
    sizes = [int(s) for s in args.targets.split(",")]
    rounds = [int(r) for r in args.rounds.split(",")]
    rounds = (rounds * len(sizes))[: len(sizes)] if len(rounds) == 1 else rounds
    reports = []
    with tempfile.TemporaryDirectory(prefix="pyimg-vs-bazel-", dir=args.tmp) as tmp:
        for size, n in zip(sizes, rounds, strict=True):
            rep = measure(size, n, Path(tmp), args.warmup, set(args.skip), args.pyimg,
                          args.with_bazel)
            reports.append(rep)
            print_table(rep)
            if args.json:
                args.json.write_text(json.dumps(reports, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
