"""Documentation that is generated or promised stays true."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_rules_reference_is_up_to_date():
    proc = subprocess.run([sys.executable, str(REPO / "tools/gen_rules_doc.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_defs_bzl_exports_every_build_rule():
    from pyimg.loading.loader import BUILD_RULES

    defs = (REPO / "rules/defs.bzl").read_text()
    for name in BUILD_RULES:
        assert re.search(rf"^{name} = ", defs, re.M), name


def test_every_rule_attribute_has_a_doc():
    text = (REPO / "docs/rules.md").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| `")]
    assert rows and all(not ln.rstrip().endswith("|  |") for ln in rows), [
        ln for ln in rows if ln.rstrip().endswith("|  |")
    ]


def test_readme_opens_with_the_two_commands():
    lines = [ln.strip() for ln in (REPO / "README.md").read_text().splitlines()[:12]]
    assert "./tools/example" in lines and "./tools/test" in lines
    ci = (REPO / ".ci/run").read_text()
    assert "tools/test" in ci


def test_command_table_names_every_command():
    from pyimg.cli import COMMAND_MODULES
    from pyimg.cli.commands import load_commands

    registry = load_commands()
    assert set(registry) == set(COMMAND_MODULES)
