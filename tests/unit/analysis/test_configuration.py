"""Configurations: keys and output paths, select() per platform, the split transition of
`cfg = "platforms"`, trimming of targets that do not depend on the platform, shared actions."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyimg.analysis.analyzer import Analyzer, select_choice
from pyimg.analysis.configuration import (
    Configuration,
    default_configuration,
    requested_configuration,
)
from pyimg.errors import UserInputError
from pyimg.labels import parse_label
from pyimg.loading.loader import Loader
from pyimg.oci.model import Platform

AMD64 = Configuration(Platform("linux", "amd64"))

RULES = '''
def _gen_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".txt")
    ctx.actions.write(out, ctx.attr.text + "".join([f.path for f in ctx.files.deps]))
    return [DefaultInfo(files = [out])]

gen = rule(implementation = _gen_impl, attrs = {
    "text": attr.string(),
    "deps": attr.label_list(),
})

def _plat_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".txt")
    ctx.actions.write(out, ctx.fragments.platform.platform)
    return [DefaultInfo(files = [out])]

plat = rule(implementation = _plat_impl, fragments = ["platform"])

def _each_impl(ctx):
    out = ctx.actions.declare_file(ctx.label.name + ".txt")
    ctx.actions.write(out, " ".join([f.path for f in ctx.files.deps]))
    return [DefaultInfo(files = [out])]

each = rule(implementation = _each_impl, attrs = {
    "deps": attr.label_list(cfg = "platforms"),
    "platforms": attr.string_list(),
})
'''


def _workspace(root: Path, build: str) -> Loader:
    (root / "tools").mkdir(parents=True)
    (root / "MODULE.pyimg").write_text("")
    (root / "tools/BUILD.pyimg").write_text("")
    (root / "tools/defs.bzl").write_text(RULES)
    (root / "p").mkdir()
    (root / "p/BUILD.pyimg").write_text('load("//tools:defs.bzl", "gen", "plat", "each")\n' + build)
    return Loader(root)


def _written(result, key: str) -> str:
    (action,) = result.targets[key].actions
    return str(action.params["content"])


def test_configuration_names_keys_and_paths() -> None:
    arm = requested_configuration("linux/arm64/v8", "--platforms")
    assert (arm.name, arm.out_subdir) == ("linux-arm64-v8", "platforms/linux-arm64-v8")
    assert arm.key("//a:b") == "//a:b [linux/arm64/v8]"
    default = default_configuration()
    assert (default.requested, default.out_subdir, default.key("//a:b")) == (False, "", "//a:b")
    # Asking for the machine's own platform is still a configuration of its own.
    assert requested_configuration(str(default.platform), "x") != default


def test_platform_values_are_checked() -> None:
    with pytest.raises(UserInputError, match=r"^--platforms: architecture 'x86_64' .*did you "
                                             r"mean \"amd64\""):
        requested_configuration("linux/x86_64", "--platforms")
    with pytest.raises(UserInputError, match="is not a platform like"):
        requested_configuration("linux", "--platforms")


@pytest.mark.parametrize(("platform", "want"), [
    (("linux", "arm64", "v8"), "linux_arm64_v8"),
    (("linux", "arm64", None), "linux_arm64"),
    (("linux", "amd64", None), "amd64"),
    (("windows", "amd64", None), "amd64"),
    (("linux", "386", None), "linux"),
    (("darwin", "386", None), "//conditions:default"),
])
def test_select_takes_the_most_specific_condition(platform, want) -> None:
    conditions = {
        "//conditions:default": "default",
        "//conditions:linux": "linux",
        "//conditions:amd64": "amd64",
        "//conditions:linux_arm64": "linux_arm64",
        "@pyimg//platforms:linux_arm64_v8": "linux_arm64_v8",
    }
    choice = select_choice(conditions, *platform)
    assert choice is not None and choice[0].endswith(want)
    assert select_choice({"//conditions:arm64": 1}, "linux", "amd64", None) is None


def test_select_resolves_per_configuration_and_trims_the_rest(tmp_path: Path) -> None:
    loader = _workspace(tmp_path / "ws", '''
gen(name = "fixed", text = "same")
gen(name = "arch", text = select({"//conditions:arm64": "arm", "//conditions:default": "x86"}))
gen(name = "user", deps = [":arch", ":fixed"])
plat(name = "reads")
''')
    arm = requested_configuration("linux/arm64", "x")
    labels = [parse_label(f"//p:{n}") for n in ("fixed", "arch", "user", "reads")]
    result = Analyzer(loader, AMD64).analyze(labels, [arm])
    # Only the targets whose analysis depends on the platform are configured.
    assert result.top_level == ["//p:fixed", "//p:arch [linux/arm64]", "//p:user [linux/arm64]",
                                "//p:reads [linux/arm64]"]
    assert _written(result, "//p:arch [linux/arm64]") == "arm"
    assert _written(result, "//p:reads [linux/arm64]") == "linux/arm64"
    # The configured target reads its configured dependency and the shared one.
    assert _written(result, "//p:user [linux/arm64]") == (
        "pyimg-out/platforms/linux-arm64/p/arch.txt" "pyimg-out/p/fixed.txt")
    (fixed,) = result.targets["//p:fixed"].actions
    assert fixed.outputs == ("pyimg-out/p/fixed.txt",)
    assert result.targets["//p:user [linux/arm64]"].actions[0].outputs == (
        "pyimg-out/platforms/linux-arm64/p/user.txt",)
    # The default configuration: the machine's platform, the paths of a plain build.
    plain = Analyzer(_workspace(tmp_path / "ws2", 'gen(name = "arch", text = select({'
                                '"//conditions:arm64": "arm", "//conditions:default": "x86"}))\n'),
                     AMD64).analyze([parse_label("//p:arch")])
    assert plain.top_level == ["//p:arch"] and _written(plain, "//p:arch") == "x86"


def test_split_transition_builds_each_dependency_per_platform(tmp_path: Path) -> None:
    loader = _workspace(tmp_path / "ws", '''
plat(name = "p1")
gen(name = "g")
each(name = "all", deps = [":p1", ":g"], platforms = ["linux/amd64", "linux/arm/v7"])
''')
    result = Analyzer(loader, AMD64).analyze([parse_label("//p:all")])
    assert result.top_level == ["//p:all"]
    assert _written(result, "//p:all").split() == [
        # platform-major; the target that does not read the platform is built once
        "pyimg-out/platforms/linux-amd64/p/p1.txt", "pyimg-out/p/g.txt",
        "pyimg-out/platforms/linux-arm-v7/p/p1.txt", "pyimg-out/p/g.txt",
    ]
    assert _written(result, "//p:p1 [linux/arm/v7]") == "linux/arm/v7"
    # Every action once, though `g` is reached from two configurations.
    outputs = sorted(a.outputs[0] for a in result.actions())
    assert outputs == sorted(set(outputs)) and len(outputs) == 4


def test_split_transition_refuses_bad_platforms_at_the_attribute(tmp_path: Path) -> None:
    loader = _workspace(tmp_path / "ws", '''
gen(name = "g")
each(
    name = "all",
    deps = [":g"],
    platforms = ["linux/amd64", "linux/armhf"],
)
''')
    with pytest.raises(UserInputError) as e:
        Analyzer(loader, AMD64).analyze([parse_label("//p:all")])
    assert e.value.origin == "p/BUILD.pyimg:7:5"
    assert "each //p:all: attribute 'platforms': architecture 'armhf'" in e.value.message
    assert 'did you mean architecture = "arm", variant = "v7"' in e.value.message
    loader = _workspace(tmp_path / "ws2", '''
gen(name = "g")
each(name = "all", deps = [":g"], platforms = ["linux/amd64", "linux/amd64"])
''')
    with pytest.raises(UserInputError, match="'linux/amd64' is listed twice"):
        Analyzer(loader, AMD64).analyze([parse_label("//p:all")])


def test_rule_fragments_are_checked(tmp_path: Path) -> None:
    loader = _workspace(tmp_path / "ws", "")
    (tmp_path / "ws/tools/bad.bzl").write_text(
        'def _i(ctx):\n    pass\n\nbad = rule(implementation = _i, fragments = ["cpp"])\n')
    (tmp_path / "ws/p/BUILD.pyimg").write_text('load("//tools:bad.bzl", "bad")\n')
    with pytest.raises(UserInputError, match='fragments = ...\\) must be a list of "platform"'):
        loader.expand_patterns([])
        loader.package_of(parse_label("//p:x"))


def test_shared_action_beside_another_targets_output(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    loader = _workspace(root, "")
    (root / "tools/share.bzl").write_text('''
def _impl(ctx):
    src = ctx.files.src[0]
    out = ctx.actions.declare_file(src.basename + ".copy/" + ctx.attr.how, sibling = src)
    ctx.actions.write(out, ctx.attr.how)
    return [DefaultInfo(files = [out])]

share = rule(implementation = _impl, attrs = {"src": attr.label_list(), "how": attr.string()})
''')
    (root / "p/BUILD.pyimg").write_text('''
load("//tools:defs.bzl", "gen")
load("//tools:share.bzl", "share")
gen(name = "g")
share(name = "a", src = [":g"], how = "x")
share(name = "b", src = [":g"], how = "x")
share(name = "c", src = [":g"], how = "y")
share(name = "d", src = [":g"], how = "y")
''')
    result = Analyzer(loader, AMD64).analyze(
        [parse_label(f"//p:{n}") for n in "abcd"])
    assert sorted(a.outputs[0] for a in result.actions()) == [
        "pyimg-out/p/g.txt", "pyimg-out/p/g.txt.copy/x", "pyimg-out/p/g.txt.copy/y"]
    # Another action for the same path is still a conflict.
    (root / "tools/share.bzl").write_text((root / "tools/share.bzl").read_text().replace(
        "ctx.actions.write(out, ctx.attr.how)", "ctx.actions.write(out, ctx.label.name)"))
    with pytest.raises(UserInputError, match="output path conflict: 'pyimg-out/p/g.txt.copy/x'"):
        Analyzer(Loader(root), AMD64).analyze([parse_label("//p:a"), parse_label("//p:b")])


def test_split_attribute_without_platforms_stays_in_the_configuration(tmp_path: Path) -> None:
    """An index of per-platform images without `platforms`, built with --platforms: it depends
    on the platform through its images, so it is configured too (its path is the platform's)."""
    loader = _workspace(tmp_path / "ws", '''
plat(name = "p1")
each(name = "all", deps = [":p1"])
''')
    arm = requested_configuration("linux/arm64", "x")
    result = Analyzer(loader, AMD64).analyze([parse_label("//p:all")], [AMD64, arm])
    assert result.top_level == ["//p:all", "//p:all [linux/arm64]"]
    assert _written(result, "//p:all [linux/arm64]") == "pyimg-out/platforms/linux-arm64/p/p1.txt"
    assert _written(result, "//p:all") == "pyimg-out/p/p1.txt"


def test_target_cache_keys_on_the_configuration(tmp_path: Path) -> None:
    """A configured target whose select() resolves alike on two platforms: the analysis reused
    for the second platform is that platform's (its own output paths), not the first's."""
    from pyimg.analysis.target_cache import TargetCache

    root = tmp_path / "ws"
    _workspace(root, 'gen(name = "g", text = select({"//conditions:default": "same"}))\n')
    cache_file = tmp_path / "targets.json"
    for platform in ("linux/arm64", "linux/s390x"):
        loader = Loader(root)
        reuse = TargetCache(cache_file, {}, loader.read_files)
        config = requested_configuration(platform, "x")
        result = Analyzer(loader, AMD64, reuse).analyze([parse_label("//p:g")], [config])
        reuse.save(loader.read_files, loader.read_paths)
        (action,) = result.targets[f"//p:g [{platform}]"].actions
        assert action.outputs == (f"pyimg-out/platforms/{config.name}/p/g.txt",)
    # The same platform again: served from the cache.
    loader = Loader(root)
    reuse = TargetCache(cache_file, {}, loader.read_files)
    Analyzer(loader, AMD64, reuse).analyze([parse_label("//p:g")],
                                           [requested_configuration("linux/arm64", "x")])
    assert reuse.hits == 1
