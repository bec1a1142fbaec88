#!/usr/bin/env python3
"""Engine benchmark (docs/benchmarks.md, "Engine"): cold build, no-op rebuild and one-file change on a generated
workspace of 200 packages and 1,000 targets (600 small genrules, 400 `write` actions), each
reported as a ratio to the start-up time of `pyimg --version` measured in the same run.

    .venv/bin/python tools/bench/engine.py [--runs 5]

With `--host-tool PATH`, every genrule also uses `host_tool(path = PATH)` (its default identity,
"auto"): what keying a tool by more than its bytes costs a no-op (docs/concepts.md, "Tools are
inputs"); `/usr/bin/python3.11` keys the interpreter, its libraries and its standard library.

Goals: no-op rebuild within 3x of bare start-up; a one-file rebuild within the no-op time plus
the time of the actions that truly depend on the file. Also reported: a build after a comment is
added to one BUILD file (no goal).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from workspace_gen import generate, package_name  # noqa: E402

PYIMG = [str(REPO / ".venv/bin/pyimg")]
TEXT_RULE = '''
def _text_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".txt")
    ctx.actions.write(out, ctx.attr.content)
    return [DefaultInfo(files = [out])]

text = rule(implementation = _text_impl, attrs = {"content": attr.string(doc = "The text.")})
'''


def make_workspace(root: Path, host_tool: str | None = None) -> None:
    """600 genrules from workspace_gen, plus 2 `text` (write) targets per package feeding them;
    with `host_tool`, each genrule has that host tool among its tools."""
    generate(root, targets=600, packages=200)
    (root / "tools").mkdir()
    (root / "tools/BUILD.pyimg").write_text(
        f'host_tool(name = "tool", path = "{host_tool}", visibility = ["//visibility:public"])\n'
        if host_tool else "")
    (root / "tools/defs.bzl").write_text(TEXT_RULE)
    for i in range(200):
        build = root / package_name(i) / "BUILD.pyimg"
        text = build.read_text()
        for k in (0, 1):
            text = text.replace(f'srcs = ["t{k}.txt"', f'srcs = ["t{k}.txt", ":w{k}"', 1)
        stanzas = "".join(f'text(name = "w{k}", content = "{package_name(i)} w{k}\\n")\n' for k in (0, 1))
        if host_tool:
            text = text.replace('    cmd = "cat', '    tools = ["//tools:tool"],\n    cmd = "cat')
        build.write_text('load("//tools:defs.bzl", "text")\n\n' + stanzas + "\n" + text)


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return elapsed, proc.stderr


def action_seconds(stderr: str) -> float:
    """The summed run time of the actions that ran, from the build's plain log `... (0.02s)`."""
    return sum(float(m) for m in re.findall(r"^\[\d+/\d+\] .* \((\d+\.\d+)s\)$", stderr, re.M))


def actions_run(stderr: str) -> int:
    m = re.search(r"Build completed: (\d+) actions run", stderr)
    return int(m.group(1)) if m else -1


def main() -> int:
    # Measure pyimg, not the byte-compiler (PYTHONDONTWRITEBYTECODE may be set).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(__file__).resolve().parents[2] / "engine")],
                   check=True, stdout=subprocess.DEVNULL)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="repetitions of the quick measurements")
    ap.add_argument("--host-tool", metavar="PATH", help="a host tool every genrule uses")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pyimg-bench-engine-") as tmp:
        ws = Path(tmp) / "ws"
        make_workspace(ws, args.host_tool)
        build = [*PYIMG, "build", "--disk-cache", f"{tmp}/cache", "//..."]
        startup = statistics.median(run([*PYIMG, "--version"], ws)[0] for _ in range(args.runs))
        cold, err = run(build, ws)
        cold_actions = actions_run(err)
        noops = []
        for _ in range(args.runs):
            t, err = run(build, ws)
            assert actions_run(err) == 0, err
            noops.append(t)
        noop = statistics.median(noops)
        # The same no-op without the stat-record fast path: what a build pays to verify every
        # action before it finds the one file that changed.
        verify_env = {**os.environ, "PYIMG_FAST_NOOP": "0"}
        verifying = statistics.median(run(build, ws, verify_env)[0] for _ in range(args.runs))
        changes = []
        budgets = []
        dependents = 0
        for n in range(args.runs):
            src = ws / package_name(150) / "t0.txt"
            src.write_text(f"changed {n}\n")
            t, err = run(build, ws)
            dependents = actions_run(err)
            changes.append(t)
            budgets.append(action_seconds(err))
        change = statistics.median(changes)
        own = statistics.median(budgets)
        # A comment added to one BUILD file: loading and analysis run again, but only that
        # package's targets are analysed anew (the others' analyses are reused).
        edits = []
        build_file = ws / package_name(150) / "BUILD.pyimg"
        for n in range(args.runs):
            build_file.write_text(build_file.read_text() + f"# edit {n}\n")
            t, err = run(build, ws)
            assert actions_run(err) == 0, err
            edits.append(t)
        edit = statistics.median(edits)
    print(f"| measurement | seconds | ratio to `pyimg --version` ({startup * 1000:.0f} ms) |")
    print("| --- | --- | --- |")
    print(f"| cold build, {cold_actions} actions | {cold:.2f} | {cold / startup:.1f}x |")
    print(f"| no-op rebuild (median of {args.runs}) | {noop:.3f} | {noop / startup:.1f}x (goal <= 3x) |")
    print(f"| no-op rebuild verifying every action (PYIMG_FAST_NOOP=0) | {verifying:.3f} | "
          f"{verifying / startup:.1f}x |")
    print(f"| one source changed, {dependents} dependent actions run ({own * 1000:.0f} ms of "
          f"their own) | {change:.3f} | {change / (noop + own):.2f} of fast no-op + actions "
          f"(goal <= 1); {change / (verifying + own):.2f} of verifying no-op + actions |")
    print(f"| one BUILD file edited (a comment; no action runs) | {edit:.3f} | "
          f"{edit / startup:.1f}x; {edit / verifying:.2f} of verifying no-op |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
