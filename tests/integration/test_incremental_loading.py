"""Differential test of the persisted packages (loading/package_store.py), of change pruning
(build/incremental.py) and of everything a BUILD-file edit reuses: after each random edit, a build
in the same output base gives exactly the outputs and action keys of a clean build (a copy of the
workspace, a fresh cache and output base)."""

from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import pytest
from pyimg.build.incremental import PRUNED_NOTE
from workspace_helpers import Workspace

DEFS = '''load("@pyimg//rules:defs.bzl", "genrule")

SUFFIX = "{suffix}"
{bzl_comments}
NOTE = "{note}"

def _note_impl(ctx):
    """A rule whose implementation an edit changes, never its targets."""
    out = ctx.actions.declare_file(ctx.label.name + ".note")
    ctx.actions.write(out, NOTE + "\\n")
    return [DefaultInfo(files = [out])]

note = rule(implementation = _note_impl, attrs = {{}})

def stamp(name, src):
    """A macro: its output's name comes from this file."""
    genrule(name = name, srcs = [src], outs = [name + SUFFIX + ".txt"],
            cmd = "cat $(SRCS) > $@; echo " + SUFFIX + " >> $@")
'''


class World:
    """A workspace generated from a model that random edits change: packages of genrules that
    read their own source, a glob and earlier packages' targets, and a macro from a .bzl file."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.suffix = "_a"
        self.note = "n0"
        self.bzl_comments = 0
        self.serial = 0
        # package -> target -> (word, deps); packages in order (deps only point backwards)
        self.model: dict[str, dict[str, tuple[str, list[str]]]] = {}
        self.comments: dict[str, int] = {}
        self.top_comments: dict[str, int] = {}  # before the load(): every line moves
        self.blank_lines: dict[str, int] = {}
        for _ in range(3):
            self._add_package()
        self.write_all()

    def _new_name(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{self.serial}"

    def _add_package(self) -> None:
        pkg = f"p{self.serial + 1}/sub"
        self.serial += 1
        earlier = [f"//{p}:{t}" for p in self.model for t in self.model[p]]
        self.model[pkg] = {"t": ("w", self.rng.sample(earlier, min(len(earlier), 2)))}
        self.comments[pkg] = 0
        self.top_comments[pkg] = 0
        self.blank_lines[pkg] = 0
        (self.root / pkg).mkdir(parents=True, exist_ok=True)
        (self.root / pkg / "src.txt").write_text(f"{pkg}\n")
        (self.root / pkg / "data").mkdir(exist_ok=True)
        (self.root / pkg / "data" / "one.txt").write_text("one\n")

    def write_all(self) -> None:
        (self.root / "MODULE.pyimg").write_text("")
        (self.root / "tools").mkdir(exist_ok=True)
        (self.root / "tools/BUILD.pyimg").write_text("")
        comments = "".join(f"# comment {i}\n" for i in range(self.bzl_comments))
        (self.root / "tools/defs.bzl").write_text(
            DEFS.format(suffix=self.suffix, note=self.note, bzl_comments=comments))
        for pkg, targets in self.model.items():
            lines = [f"# top {i}" for i in range(self.top_comments[pkg])]
            lines += ['load("//tools:defs.bzl", "note", "stamp")',
                      'package(default_visibility = ["//visibility:public"])']
            lines += [""] * self.blank_lines[pkg]
            lines += [f"# comment {i}" for i in range(self.comments[pkg])]
            lines.append('note(name = "notes")')
            for name, (word, deps) in targets.items():
                srcs = ", ".join(f'"{d}"' for d in ["src.txt", *deps])
                lines.append(
                    f'genrule(name = "{name}", srcs = [{srcs}] + glob(["data/*.txt"]), '
                    f'outs = ["{name}.out"], cmd = "cat $(SRCS) > $@; echo {word} >> $@")')
                lines.append(f'stamp(name = "{name}_s", src = ":{name}")')
            (self.root / pkg / "BUILD.pyimg").write_text("\n".join(lines) + "\n")

    def edit(self) -> str:
        """One random edit of the workspace; returns what it was."""
        rng = self.rng
        pkg = rng.choice(sorted(self.model))
        targets = self.model[pkg]
        name = rng.choice(sorted(targets))
        what = rng.choice(["comment", "attribute", "add target", "remove target", "rename target",
                           "bzl", "add package", "remove package", "source", "glob gains",
                           "glob loses", "dep", "top comment", "blank lines", "reorder",
                           "bzl implementation", "bzl comment"])
        if what == "comment":
            self.comments[pkg] += 1
        elif what == "top comment":
            self.top_comments[pkg] += 1
        elif what == "blank lines":
            self.blank_lines[pkg] = rng.choice([0, 1, 3])
        elif what == "reorder":
            self.model[pkg] = dict(reversed(targets.items()))
        elif what == "bzl implementation":
            self.note = rng.choice(["n0", "n1", "n2"])
        elif what == "bzl comment":
            self.bzl_comments += 1
        elif what == "attribute":
            word, deps = targets[name]
            targets[name] = (word + rng.choice("xyz"), deps)
        elif what == "add target":
            targets[self._new_name("n")] = ("new", [])
        elif what == "remove target" and len(targets) > 1:
            self._drop_references(f"//{pkg}:{name}")
            del targets[name]
        elif what == "rename target":
            new = self._new_name("r")
            targets[new] = targets.pop(name)
            for other in self.model.values():
                for t, (word, deps) in other.items():
                    other[t] = (word, [f"//{pkg}:{new}" if d == f"//{pkg}:{name}" else d
                                       for d in deps])
        elif what == "bzl":
            self.suffix = rng.choice(["_a", "_b", "_c"])
        elif what == "add package":
            self._add_package()
        elif what == "remove package" and len(self.model) > 1:
            for t in targets:
                self._drop_references(f"//{pkg}:{t}")
            del self.model[pkg]
            shutil.rmtree(self.root / pkg.split("/")[0])
        elif what == "source":
            (self.root / pkg / "src.txt").write_text(f"{pkg} {rng.randrange(1000)}\n")
        elif what == "glob gains":
            (self.root / pkg / "data" / f"{self._new_name('g')}.txt").write_text("more\n")
        elif what == "glob loses":
            files = sorted((self.root / pkg / "data").glob("*.txt"))
            if len(files) > 1:
                files[-1].unlink()
        elif what == "dep":
            order = list(self.model)
            earlier = [f"//{p}:{t}" for p in order[:order.index(pkg)] for t in self.model[p]]
            word, deps = targets[name]
            extra = [d for d in earlier if d not in deps][:1]
            targets[name] = (word, deps[:-1] if deps and rng.random() < 0.5 else deps + extra)
        self.write_all()
        return f"{what} in {pkg}"

    def _drop_references(self, label: str) -> None:
        for other in self.model.values():
            for t, (word, deps) in other.items():
                other[t] = (word, [d for d in deps if d != label])


# Edits that change no target (the source edit: its BUILD files are saved again as they were),
# which change pruning must answer without loading the workspace again; and edits that change
# a target or a rule's implementation, which it must never answer.
PRUNED = {"comment", "top comment", "blank lines", "reorder", "source"}
NOT_PRUNED = {"attribute", "add target", "rename target", "add package", "glob gains",
              "bzl comment"}  # ("remove package" leaves the last one: then nothing changed)


def _keys(ws: Workspace) -> list[str]:
    """Every action of //... with its key, as aquery prints them (without cache status)."""
    result = ws.run("aquery", "//...")
    assert result.code == 0, result.err
    return sorted(re.sub(r" \(cached\)$", "", line, flags=re.M)
                  for line in result.out.split("\n\n") if line.strip())


def _outputs(root: Path, names: list[str]) -> dict[str, bytes]:
    return {n: (root / "pyimg-out" / n).read_bytes() for n in names}


def _goal_names(root: Path) -> list[str]:
    out = root / "pyimg-out"
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def _run_seed(tmp_path: Path, seed: int, steps: int) -> None:
    world = World(tmp_path / "ws", random.Random(seed))
    ws = Workspace(world.root, tmp_path / "cache")
    assert ws.run("build", "//...").code == 0
    for step in range(steps):
        what = world.edit()
        context = f"seed {seed}, step {step}: {what}"
        built = ws.run("build", "//...")
        assert built.code == 0, f"{context}\n{built.err}"
        kind = what.split(" in ")[0]
        if kind in PRUNED:
            assert PRUNED_NOTE in built.err, context
        if kind in PRUNED - {"source"}:
            assert "Build completed: 0 actions run" in built.err, context
        if kind in NOT_PRUNED:
            assert PRUNED_NOTE not in built.err, context
        clean_root = tmp_path / f"clean{step}"
        shutil.copytree(world.root, clean_root, ignore=shutil.ignore_patterns("pyimg-out"))
        clean = Workspace(clean_root, tmp_path / f"clean-cache{step}")
        fresh = clean.run("build", "//...")
        assert fresh.code == 0, f"{context}\n{fresh.err}"
        names = _goal_names(clean_root)
        assert _outputs(world.root, names) == _outputs(clean_root, names), context
        assert _keys(ws) == _keys(clean), context
        shutil.rmtree(clean_root)
        shutil.rmtree(tmp_path / f"clean-cache{step}")


@pytest.mark.parametrize("seed", range(2))
def test_edits_build_what_a_clean_build_builds(tmp_path: Path, seed: int) -> None:
    _run_seed(tmp_path, seed, steps=5)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 5))
def test_edits_build_what_a_clean_build_builds_longer(tmp_path: Path, seed: int) -> None:
    _run_seed(tmp_path, seed, steps=10)


def test_a_build_edit_evaluates_only_its_package(tmp_path: Path) -> None:
    """A comment in one BUILD file: that package is evaluated again, the others are served from
    their records; a .bzl edit evaluates every package that loads it."""
    from pyimg.build.build import analyze
    from pyimg.core.session import Session

    world = World(tmp_path / "ws", random.Random(0))
    ws = Workspace(world.root, tmp_path / "cache")
    assert ws.run("build", "//...").code == 0
    session = Session.open(world.root, str(ws.cache), None)

    def served() -> int:
        digests = session.digest_cache()
        loader, _ = analyze(session, ["//..."], digests=digests)
        return getattr(loader, "served", -1)

    pkg = sorted(world.model)[0]
    world.comments[pkg] += 1
    world.write_all()
    assert served() == len(world.model) - 1 + 1  # every package but the edited one, and tools
    world.suffix = "_z"
    world.write_all()
    assert served() == 1  # tools (no load of defs.bzl) only


def test_unchanged_actions_are_served_from_the_last_build_record(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After a BUILD edit, an action as the last build of the command line ran it takes its key
    and result from that build's record (build/recorded.py), without its action-cache entry;
    one whose outputs left the store is looked up (and here run) again. (PYIMG_FAST_NOOP=0:
    else change pruning would answer these comment edits before any full build.)"""
    monkeypatch.setenv("PYIMG_FAST_NOOP", "0")
    world = World(tmp_path / "ws", random.Random(0))
    ws = Workspace(world.root, tmp_path / "cache")
    assert ws.run("build", "//...").code == 0
    shutil.rmtree(ws.cache / "ac")  # only the record can vouch for the results now
    world.comments[sorted(world.model)[0]] += 1
    world.write_all()
    built = ws.run("build", "//...")
    assert built.code == 0, built.err
    assert "Build completed: 0 actions run" in built.err
    # A lost blob: the record no longer vouches for that action, which runs again.
    from pyimg.core.digest import digest_bytes

    out = next(p for p in sorted((world.root / "pyimg-out").rglob("*.out")))
    blob = digest_bytes(out.read_bytes()).hex
    for stored in (ws.cache / "cas").rglob(f"{blob}*"):
        stored.chmod(0o644)
        stored.unlink()
    world.comments[sorted(world.model)[0]] += 1
    world.write_all()
    built = ws.run("build", "//...")
    assert built.code == 0, built.err
    assert "Build completed: 1 action run" in built.err or "Build completed: 1 actions run" in built.err
