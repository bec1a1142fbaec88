"""Generates the benchmark workspace: N small genrules in P packages with cross-package deps.

Shared by the engine and query benchmarks so that both measure the same graph. The output depends
only on the arguments (a seeded RNG), never on the clock or the machine.
"""

from __future__ import annotations

import random
from pathlib import Path

__all__ = ["generate", "package_name"]

PUBLIC = '["//visibility:public"]'


def package_name(i: int) -> str:
    # Two levels, so that `//pkgNN/...` patterns match more than one package.
    return f"pkg{i // 10:02d}/sub{i % 10}"


def generate(
    root: Path, targets: int = 1000, packages: int = 200, max_deps: int = 3, seed: int = 1
) -> list[str]:
    """Write the workspace under `root` and return its target labels in declaration order.

    Target k of package i is a genrule reading its own source file and the outputs of up to
    `max_deps` targets declared before it (earlier packages or the same package), so the graph is
    acyclic, spans packages, and has long chains as well as wide fan-in.
    """
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "MODULE.pyimg").write_text("")
    per_pkg = max(1, targets // packages)
    labels: list[str] = []
    for i in range(packages):
        pkg = package_name(i)
        d = root / pkg
        d.mkdir(parents=True, exist_ok=True)
        stanzas = []
        for k in range(per_pkg):
            name = f"t{k}"
            src = f"{name}.txt"
            (d / src).write_text(f"{pkg}:{name}\n")
            deps = sorted(set(rng.sample(labels, min(len(labels), rng.randint(0, max_deps)))))
            srcs = ", ".join(f'"{x}"' for x in [src, *deps])
            stanzas.append(
                f'genrule(\n    name = "{name}",\n    srcs = [{srcs}],\n'
                f'    outs = ["{name}.out"],\n    cmd = "cat $(SRCS) > $@",\n'
                f"    visibility = {PUBLIC},\n)\n"
            )
            labels.append(f"//{pkg}:{name}")
        (d / "BUILD.pyimg").write_text("\n".join(stanzas))
    return labels


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("root", type=Path)
    p.add_argument("--targets", type=int, default=1000)
    p.add_argument("--packages", type=int, default=200)
    a = p.parse_args()
    print(len(generate(a.root, a.targets, a.packages)), "targets written to", a.root)
