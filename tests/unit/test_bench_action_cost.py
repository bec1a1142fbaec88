"""tools/bench/action_cost.py counts the CPU of processes orphaned under the build, as a bwrap
sandbox's pid-1 init and its command are: without it a build's CPU figure leaves them out."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Runs in its own interpreter: becoming a subreaper would make pytest adopt other tests' orphans.
_MEASURE = """
import os, resource, subprocess, sys
sys.path.insert(0, {bench!r})
from action_cost import become_subreaper, reaping_orphans
if sys.argv[1] == "reap":
    become_subreaper()
# The shell exits at once; its background child, orphaned, burns 0.3 s of CPU (CPU, not wall).
burn = "import time\\nwhile time.process_time() < 0.3: pass"
before = resource.getrusage(resource.RUSAGE_CHILDREN)
with subprocess.Popen(["/bin/sh", "-c", '"$0" -c "$1" & exit 0', sys.executable, burn]) as proc:
    with reaping_orphans(proc.pid):
        proc.wait()
after = resource.getrusage(resource.RUSAGE_CHILDREN)
print((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
"""


def _counted_cpu(mode: str) -> float:
    script = _MEASURE.format(bench=str(ROOT / "tools" / "bench"))
    out = subprocess.run([sys.executable, "-c", script, mode], check=True,
                         capture_output=True, text=True).stdout
    return float(out)


def test_an_orphaned_process_cpu_is_counted():
    assert _counted_cpu("reap") >= 0.3


def test_without_the_subreaper_the_orphan_is_lost():
    # What the tool measured before: the orphan went to the host's init (a control for the above).
    assert _counted_cpu("plain") < 0.3
