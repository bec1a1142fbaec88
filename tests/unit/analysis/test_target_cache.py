"""Reused target analyses: after any sequence of edits, analysing with reuse gives exactly what a
fresh analysis gives (the same errors too), and an edit to one package reuses the others."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from pyimg.analysis.analyzer import Analyzer
from pyimg.analysis.target_cache import TargetCache
from pyimg.core.action import action_to_json
from pyimg.errors import UserInputError
from pyimg.labels import parse_pattern
from pyimg.loading.loader import Loader

DEFS = '''
Info = provider(fields = ["word"])

def _shout_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".txt")
    words = [d[Info].word for d in ctx.attr.deps if Info in d]
    ctx.actions.write(out, "%s%s %s\\n" % (PREFIX, ctx.attr.word, " ".join(words)))
    return [DefaultInfo(files = [out]), Info(word = ctx.attr.word)]

shout = rule(implementation = _shout_impl, attrs = {
    "word": attr.string(),
    "deps": attr.label_list(),
    "env": attr.string_dict(),
})
'''


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


class World:
    """A workspace of three packages whose BUILD files are regenerated from a model."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.prefix = "!"
        # package -> target name -> (word, deps, env order)
        self.model: dict[str, dict[str, tuple[str, list[str], list[str]]]] = {
            "a": {"x": ("hello", [], ["A", "B"]), "y": ("world", [":x"], [])},
            "b": {"z": ("again", ["//a:y"], []), "w": ("more", [":z", "//a:x"], ["C"])},
            "c": {"v": ("last", ["//b:w"], [])},
        }
        _write(root / "MODULE.pyimg", "")
        _write(root / "tools/BUILD.pyimg", "")
        self.write_all()

    def write_all(self) -> None:
        _write(self.root / "tools/defs.bzl", f'PREFIX = "{self.prefix}"\n' + DEFS)
        for pkg, targets in self.model.items():
            lines = ['load("//tools:defs.bzl", "shout")', 'package(default_visibility = ["//visibility:public"])']
            for name, (word, deps, env) in targets.items():
                env_text = ", ".join(f'"{k}": "{k.lower()}"' for k in env)
                lines.append(f'shout(name = "{name}", word = "{word}", deps = {deps!r}, env = {{{env_text}}})'
                             .replace("'", '"'))
                lines.append(f'genrule(name = "{name}_g", srcs = [":{name}"], outs = ["{name}.out"], '
                             f'cmd = "cat $< > $@")')
            _write(self.root / pkg / "BUILD.pyimg", "\n".join(lines) + "\n")

    def edit(self) -> str:
        """One random edit; returns what it was."""
        rng = self.rng
        pkg = rng.choice(sorted(self.model))
        targets = self.model[pkg]
        what = rng.choice(["word", "dep", "env order", "move", "add", "remove", "bzl", "bad dep"])
        name = rng.choice(sorted(targets)) if targets else None
        if what == "word" and name:
            word, deps, env = targets[name]
            targets[name] = (word + rng.choice("abc"), deps, env)
        elif what == "dep" and name:
            word, deps, env = targets[name]
            # Only on packages before this one: edits never make a cycle.
            others = [f"//{p}:{t}" for p in sorted(self.model) if p < pkg for t in sorted(self.model[p])]
            targets[name] = (word, deps[:-1] if deps and rng.random() < 0.5 else deps + others[:1], env)
        elif what == "env order" and name:
            word, deps, env = targets[name]
            targets[name] = (word, deps, list(reversed(env)) or ["Q", "R"])
        elif what == "move":
            # A line added above every target: their origins move.
            self.model[pkg] = dict(reversed(list(targets.items())))
        elif what == "add":
            targets[f"n{rng.randrange(1000)}"] = ("new", [], [])
        elif what == "remove" and name and len(targets) > 1:
            del targets[name]
        elif what == "bzl":
            self.prefix = rng.choice("?!#")
        elif what == "bad dep" and name:
            word, deps, env = targets[name]
            targets[name] = (word, deps + [":missing"], env)
        self.write_all()
        return f"{what} in {pkg}"

    def repair(self) -> None:
        for targets in self.model.values():
            for name, (word, deps, env) in list(targets.items()):
                live = [d for d in deps if d != ":missing" and self._exists(d)]
                targets[name] = (word, live, env)
        self.write_all()

    def _exists(self, label: str) -> bool:
        if label.startswith(":"):
            return True
        pkg, name = label[2:].split(":")
        return name in self.model.get(pkg, {})


def _analyze(root: Path, reuse: TargetCache | None) -> dict[str, Any]:
    loader = Loader(root)
    labels = loader.expand_patterns([parse_pattern("//...", "")])
    try:
        result = Analyzer(loader, None, reuse).analyze(labels)
    except UserInputError as e:
        return {"error": str(e)}
    if reuse is not None:
        reuse.save(loader.read_files, loader.read_paths)
    return {
        label: [t.kind, t.origin, t.providers, [action_to_json(a) for a in t.actions]]
        for label, t in sorted(result.targets.items())
    }


@pytest.mark.parametrize("seed", range(4))
def test_reuse_gives_what_a_fresh_analysis_gives(tmp_path: Path, seed: int) -> None:
    world = World(tmp_path / "ws", random.Random(seed))
    cache_file = tmp_path / "targets.json"
    _analyze(world.root, TargetCache(cache_file, {}))
    reused = 0
    for step in range(12):
        what = world.edit()
        fresh = _analyze(world.root, None)
        cache = TargetCache(cache_file, {})
        assert _analyze(world.root, cache) == fresh, f"step {step}: {what}"
        reused += cache.hits
        if "error" in fresh:
            world.repair()
    assert reused > 0


def test_an_edit_to_one_package_reuses_the_others(tmp_path: Path) -> None:
    world = World(tmp_path / "ws", random.Random(0))
    cache_file = tmp_path / "targets.json"
    _analyze(world.root, TargetCache(cache_file, {}))
    x_word, x_deps, x_env = world.model["c"]["v"]
    world.model["c"]["v"] = (x_word + "!", x_deps, x_env)  # a leaf: nothing depends on //c:v
    world.write_all()
    cache = TargetCache(cache_file, {})
    _analyze(world.root, cache)
    assert cache.hits == 8  # every target of a and b; //c:v and //c:v_g are analysed again


def test_an_edited_bzl_file_reuses_nothing(tmp_path: Path) -> None:
    world = World(tmp_path / "ws", random.Random(0))
    cache_file = tmp_path / "targets.json"
    _analyze(world.root, TargetCache(cache_file, {}))
    world.prefix = "?"
    world.write_all()
    cache = TargetCache(cache_file, {})
    assert _analyze(world.root, cache) == _analyze(world.root, None)
    assert cache.hits == 0


def test_reuse_can_be_turned_off(tmp_path: Path) -> None:
    world = World(tmp_path / "ws", random.Random(0))
    cache_file = tmp_path / "targets.json"
    _analyze(world.root, TargetCache(cache_file, {}))
    cache = TargetCache(cache_file, {}, reuse=False)
    _analyze(world.root, cache)
    assert cache.hits == 0


def _analysed(cache: TargetCache, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The outputs of the targets `cache` sees analysed (its entries made), as they are made."""
    made: list[str] = []
    put = cache.put

    def spy(key: str, providers: dict[str, Any], actions: list[Any], digest: str) -> None:
        made.extend(o for a in actions for o in a.outputs)
        put(key, providers, actions, digest)

    monkeypatch.setattr(cache, "put", spy)
    return made


def test_an_attribute_edit_re_analyses_the_target_and_its_dependents_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World(tmp_path / "ws", random.Random(0))
    cache_file = tmp_path / "targets.json"
    _analyze(world.root, TargetCache(cache_file, {}))
    word, deps, env = world.model["a"]["x"]
    world.model["a"]["x"] = (word + "!", deps, env)
    world.write_all()
    cache = TargetCache(cache_file, {})
    made = _analysed(cache, monkeypatch)
    assert _analyze(world.root, cache) == _analyze(world.root, None)
    # //a:x's Info changed: its dependents //a:x_g, //a:y and //b:w are analysed again; theirs
    # did not (y's and w's Info hold their own word), so nothing further is.
    assert sorted(made) == ["pyimg-out/a/x.out", "pyimg-out/a/x.txt", "pyimg-out/a/y.txt",
                            "pyimg-out/b/w.txt"]
    assert cache.hits == 6  # the other six of the ten


def test_unchanged_targets_are_keyed_without_their_dependencies_providers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A target's key holds its dependencies' provider digests: the providers themselves are
    serialised for the implementations that run, not for each of the 10,000 lookups."""
    from pyimg.analysis import analyzer

    world = World(tmp_path / "ws", random.Random(0))
    cache_file = tmp_path / "targets.json"
    _analyze(world.root, TargetCache(cache_file, {}))
    word, deps, env = world.model["c"]["v"]
    world.model["c"]["v"] = (word + "!", deps, env)  # a leaf: only //c:v and //c:v_g run
    world.write_all()
    serialised: list[str] = []
    real = analyzer._target_json

    def spy(result: Any) -> dict[str, Any]:
        serialised.append(result.label)
        return real(result)

    monkeypatch.setattr(analyzer, "_target_json", spy)
    cache = TargetCache(cache_file, {})
    _analyze(world.root, cache)
    assert sorted(serialised) == ["//b:w", "//c:v"]  # the deps of //c:v and of //c:v_g


def test_a_flag_change_reuses_nothing(tmp_path: Path) -> None:
    """The configuration the analyses were made in (--platforms, the default platform) is the
    cache's salt: another one serves nothing."""
    world = World(tmp_path / "ws", random.Random(0))
    cache_file = tmp_path / "targets.json"
    _analyze(world.root, TargetCache(cache_file, {"default": "linux/amd64", "platforms": []}))
    cache = TargetCache(cache_file, {"default": "linux/amd64", "platforms": ["linux/arm64"]})
    _analyze(world.root, cache)
    assert cache.hits == 0
    cache = TargetCache(cache_file, {"default": "linux/amd64", "platforms": ["linux/arm64"]})
    _analyze(world.root, cache)
    assert cache.hits == 10


def test_an_edit_appends_the_new_entries_only(tmp_path: Path) -> None:
    """The file is not rewritten for an edit: what was there stays byte for byte, the analyses
    made are appended (two lines: //c:v and //c:v_g), and the next build reuses them."""
    world = World(tmp_path / "ws", random.Random(0))
    cache_file = tmp_path / "targets.json"
    _analyze(world.root, TargetCache(cache_file, {}))
    before = cache_file.read_bytes()
    word, deps, env = world.model["c"]["v"]
    world.model["c"]["v"] = (word + "!", deps, env)
    world.write_all()
    _analyze(world.root, TargetCache(cache_file, {}))
    after = cache_file.read_bytes()
    assert after.startswith(before) and after[len(before):].count(b"\n") == 2
    cache = TargetCache(cache_file, {})
    _analyze(world.root, cache)
    assert cache.hits == 10


def test_a_torn_append_reuses_nothing_and_is_rewritten(tmp_path: Path) -> None:
    world = World(tmp_path / "ws", random.Random(0))
    cache_file = tmp_path / "targets.json"
    _analyze(world.root, TargetCache(cache_file, {}))
    cache_file.write_bytes(cache_file.read_bytes()[:-20])  # a crash in the middle of an append
    cache = TargetCache(cache_file, {})
    assert _analyze(world.root, cache) == _analyze(world.root, None)
    assert cache.hits == 0
    cache = TargetCache(cache_file, {})
    _analyze(world.root, cache)
    assert cache.hits == 10
