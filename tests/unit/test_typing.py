"""The type check's house rules: tools/test runs mypy before pytest, and every `# type: ignore`
in the engine names its error code and says why on the line above."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "engine" / "pyimg"
_IGNORE = re.compile(r"#\s*type:\s*ignore(\[[a-z, -]+\])?")


def test_tools_test_type_checks_before_pytest():
    lines = [ln.strip() for ln in (ROOT / "tools" / "test").read_text().splitlines()]
    commands = [ln for ln in lines if ln and not ln.startswith("#")]
    mypy = next(i for i, ln in enumerate(commands) if "-m mypy" in ln)
    pytest = next(i for i, ln in enumerate(commands) if "-m pytest" in ln)
    assert mypy < pytest
    # set -e: a type error stops the run before the tests.
    assert "set -euo pipefail" in commands


def test_every_type_ignore_names_its_code_and_reason():
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            m = _IGNORE.search(line)
            if m is None:
                continue
            where = f"{path.relative_to(PKG)}:{i + 1}"
            if m.group(1) is None:
                bad.append(f"{where}: no error code")
            elif i == 0 or not lines[i - 1].strip().startswith("#"):
                bad.append(f"{where}: no comment above saying why")
    assert bad == []
