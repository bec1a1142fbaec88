"""A test workspace for the builtins: exec paths are files under a root (like pyimg-out)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pyimg.actions.builtins import load_builtins
from pyimg.core.builtin import BlobSource, BuiltinCall
from pyimg.core.digest import digest_file
from pyimg.oci.validate import validate_layout


class Workspace:
    """Exec paths map to `root/<exec path>`, for inputs and outputs alike (like pyimg-out)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.builtins = load_builtins()

    def path(self, exec_path: str) -> Path:
        return self.root / exec_path

    def write(self, exec_path: str, data: bytes | str, mode: int = 0o644) -> str:
        p = self.path(exec_path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        p.chmod(mode)
        return exec_path

    def call(
        self,
        params: Any,
        inputs: Iterable[str],
        outputs: Iterable[str],
        dirs: Iterable[str] = (),
        jobs: int = 1,
        lazy: BlobSource | None = None,
    ) -> BuiltinCall:
        dirs = frozenset(dirs)
        ins: dict[str, Path] = {}
        digests = {}
        for exec_path in inputs:
            p = self.path(exec_path)
            ins[exec_path] = p
            if p.is_file():
                digests[exec_path] = digest_file(p)[0]
        outs: dict[str, Path] = {}
        for exec_path in [*outputs, *dirs]:
            p = self.path(exec_path)
            p.parent.mkdir(parents=True, exist_ok=True)
            outs[exec_path] = p
        return BuiltinCall(params, ins, digests, outs, dirs, jobs, lazy_blobs=lazy)

    def run(
        self,
        kind: str,
        params: Any,
        inputs: Iterable[str],
        outputs: Iterable[str],
        dirs: Iterable[str] = (),
        jobs: int = 1,
        lazy: BlobSource | None = None,
    ) -> None:
        self.builtins[kind](self.call(params, inputs, outputs, dirs, jobs, lazy))

    # Pipelines used by many tests -------------------------------------------------------------

    def tar(self, name: str, params: Mapping[str, Any], inputs: Iterable[str] = ()) -> str:
        out = f"pyimg-out/{name}.tar"
        self.run("pkg_tar", dict(params), list(inputs), [out])
        return out

    def layer(self, tar: str, compression: str = "gzip", jobs: int = 1) -> tuple[str, str]:
        base = tar.removesuffix(".tar")
        blob, desc = f"{base}.{compression}.blob", f"{base}.{compression}.json"
        self.run("oci_layer", {"compression": compression}, [tar], [blob, desc], jobs=jobs)
        return desc, blob

    def image(
        self,
        name: str,
        layers: list[tuple[str, str]],
        base: str | None = None,
        validate: bool = True,
        lazy: BlobSource | None = None,
        **params: Any,
    ) -> str:
        out = f"pyimg-out/{name}"
        full = {
            "base": base,
            "layers": [d for d, _ in layers],
            "blobs": [b for _, b in layers],
            **params,
        }
        inputs = [x for pair in layers for x in pair] + ([base] if base else [])
        self.run("oci_image", full, inputs, [f"{out}.digest"], dirs=[out], lazy=lazy)
        if validate:
            validate_layout(self.path(out))
        return out

    def simple_image(self, name: str = "img", compression: str = "gzip", **params: Any) -> str:
        """A one-layer image: a file, an executable, a symlink and a directory."""
        self.write(f"src/{name}/hello.txt", "hello\n")
        self.write(f"src/{name}/run.sh", "#!/bin/sh\necho hi\n", mode=0o755)
        tar = self.tar(
            f"{name}_layer",
            {
                "entries": [
                    {"path": "app/hello.txt", "src": f"src/{name}/hello.txt"},
                    {"path": "app/bin/run", "src": f"src/{name}/run.sh"},
                    {"path": "app/link", "type": "symlink", "target": "hello.txt"},
                ],
                "empty_dirs": ["data"],
            },
            [f"src/{name}/hello.txt", f"src/{name}/run.sh"],
        )
        return self.image(name, [self.layer(tar, compression)], **params)
