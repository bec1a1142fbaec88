"""The committed REAPI modules are exactly what tools/gen_reapi_protos.py makes from the
vendored protos (a reproducible step, not a hand-edited copy)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from workspace_helpers import REPO


def test_generated_modules_are_current():
    pytest.importorskip("grpc_tools")
    r = subprocess.run([sys.executable, str(REPO / "tools" / "gen_reapi_protos.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
