"""The loader's compact representation of targets: what thousands of targets share."""

from pathlib import Path

from pyimg.loading.loader import Loader


def test_targets_share_their_attribute_names(tmp_path: Path):
    # Each target's attributes arrive as their own JSON document: without interning, 50,000
    # targets held 50,000 copies of "srcs", "outs" and "cmd".
    (tmp_path / "MODULE.pyimg").write_text("")
    (tmp_path / "p").mkdir()
    stanza = 'genrule(name = "{0}", srcs = [], outs = ["{0}.out"], cmd = "true > $@")\n'
    (tmp_path / "p/BUILD.pyimg").write_text(stanza.format("a") + stanza.format("b"))
    targets = Loader(tmp_path).package("p").targets
    a, b = (list(targets[n].attrs) for n in ("a", "b"))
    assert "cmd" in a and a == b
    assert all(x is y for x, y in zip(a, b, strict=True))
