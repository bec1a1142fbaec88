#!/usr/bin/env python3
"""Regenerates engine/pyimg/remote/_proto from the vendored REAPI protos (tools/reapi/protos).

The protos are copied unchanged from bazelbuild/remote-apis and googleapis/googleapis at the
commits named in tools/reapi/README.md; grpcio-tools (pinned in pyproject's `dev` extra) compiles
them. The generated modules are committed, so that installing pyimg needs no compiler and the
wheel stays pure Python; this script makes them again byte for byte (`--check` says whether
the committed ones are what it makes: tests/unit/remote/test_protos.py runs it).

Generated code imports its dependencies by proto package (`from google.rpc import status_pb2`);
those imports are rewritten to live under `pyimg.remote._proto`, except google.protobuf, which
the protobuf runtime provides.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTOS = ROOT / "tools" / "reapi" / "protos"
OUT = ROOT / "engine" / "pyimg" / "remote" / "_proto"
PACKAGE = "pyimg.remote._proto"
_IMPORT = re.compile(r"^from (build(?:\.[\w.]+)?|google\.(?!protobuf)[\w.]+)( import )", re.M)
_INIT = '"""Generated from the REAPI protos by tools/gen_reapi_protos.py: do not edit."""\n'


def generate(out: Path) -> None:
    from grpc_tools import protoc  # the dev extra: only this script needs the compiler

    include = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    protos = sorted(p.relative_to(PROTOS).as_posix() for p in PROTOS.rglob("*.proto"))
    out.mkdir(parents=True)
    code = protoc.main(["protoc", f"-I{PROTOS}", f"-I{include}", f"--python_out={out}",
                        f"--pyi_out={out}", f"--grpc_python_out={out}", *protos])
    if code != 0:
        raise SystemExit(f"protoc failed ({code})")
    for path in sorted(out.rglob("*.py*")):
        text = path.read_text()
        path.write_text(_IMPORT.sub(lambda m: f"from {PACKAGE}.{m.group(1)}{m.group(2)}", text))
    for d in [out, *sorted(p for p in out.rglob("*") if p.is_dir())]:
        if not (d / "__init__.py").exists():
            (d / "__init__.py").write_text(_INIT)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and "__pycache__" not in p.parts}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when the committed modules differ from what this makes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        made = Path(tmp) / "_proto"
        generate(made)
        if args.check:
            same = OUT.is_dir() and _tree(made) == _tree(OUT)
            print("up to date" if same else f"{OUT} differs from what {__file__} makes")
            return 0 if same else 1
        shutil.rmtree(OUT, ignore_errors=True)
        shutil.copytree(made, OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
