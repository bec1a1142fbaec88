"""The persisted analysis is reused only while it is valid: every way its inputs can change."""

from __future__ import annotations


def _analysis_files(ws):
    """The whole-analysis entries (targets.json holds the analyses of single targets)."""
    return [p for p in ws.cache.glob("output_bases/*/analysis/*.json") if p.name != "targets.json"]


def _built(ws, *patterns):
    r = ws.run("build", "-v", *patterns)
    assert r.code == 0, r.err
    return r


def test_reused_when_nothing_changed(ws):
    ws.write("p/BUILD.pyimg", 'genrule(name = "a", outs = ["a"], cmd = "echo 1 > $@")\n')
    _built(ws, "//...")
    files = _analysis_files(ws)
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    _built(ws, "//...")
    assert files[0].stat().st_mtime_ns == mtime  # read, not rewritten


def test_build_file_change(ws):
    ws.write("p/BUILD.pyimg", 'genrule(name = "a", outs = ["a"], cmd = "echo 1 > $@")\n')
    _built(ws, "//p:all")
    ws.write("p/BUILD.pyimg", 'genrule(name = "a", outs = ["a"], cmd = "echo 2 > $@")\n')
    _built(ws, "//p:all")
    assert ws.out("p/a").read_text() == "2\n"


def test_bzl_change(ws):
    ws.write("p/defs.bzl", 'MSG = "one"\n')
    ws.write("p/BUILD.pyimg", 'load(":defs.bzl", "MSG")\ngenrule(name = "a", outs = ["a"], cmd = "echo " + MSG + " > $@")\n')
    _built(ws, "//p:a")
    ws.write("p/defs.bzl", 'MSG = "two"\n')
    _built(ws, "//p:a")
    assert ws.out("p/a").read_text() == "two\n"


def test_new_file_matching_a_glob(ws):
    ws.write("p/x.txt", "x")
    ws.write("p/BUILD.pyimg", 'genrule(name = "cat", srcs = glob(["*.txt"]), outs = ["all"], cmd = "cat $(SRCS) > $@")\n')
    _built(ws, "//p:cat")
    ws.write("p/y.txt", "y")
    _built(ws, "//p:cat")
    assert ws.out("p/all").read_text() == "xy"


def test_new_package_under_a_recursive_pattern(ws):
    ws.write("p/BUILD.pyimg", 'genrule(name = "a", outs = ["a"], cmd = "echo a > $@")\n')
    _built(ws, "//...")
    ws.write("q/BUILD.pyimg", 'genrule(name = "b", outs = ["b"], cmd = "echo b > $@")\n')
    _built(ws, "//...")
    assert ws.out("q/b").read_text() == "b\n"


def test_subpackage_takes_files_out_of_a_glob(ws):
    ws.write("p/sub/x.txt", "x")
    ws.write("p/y.txt", "y")
    ws.write("p/BUILD.pyimg", 'genrule(name = "cat", srcs = glob(["**/*.txt"]), outs = ["all"], cmd = "cat $(SRCS) > $@")\n')
    _built(ws, "//p:cat")
    assert ws.out("p/all").read_text() == "xy"
    ws.write("p/sub/BUILD.pyimg", "")
    _built(ws, "//p:cat")
    assert ws.out("p/all").read_text() == "y"


def test_build_file_renamed(ws):
    ws.write("p/BUILD", 'genrule(name = "a", outs = ["a"], cmd = "echo BUILD > $@")\n')
    _built(ws, "//p:a")
    ws.write("p/BUILD.pyimg", 'genrule(name = "a", outs = ["a"], cmd = "echo BUILD.pyimg > $@")\n')
    _built(ws, "//p:a")
    assert ws.out("p/a").read_text() == "BUILD.pyimg\n"


def test_module_file_change_invalidates(ws):
    ws.write("p/BUILD.pyimg", 'genrule(name = "a", outs = ["a"], cmd = "echo a > $@")\n')
    _built(ws, "//p:a")
    ws.write("MODULE.pyimg", 'http_file(name = "f", urls = ["http://127.0.0.1:1/f"])\n')
    r = ws.run("build", "//p:a")
    assert r.code == 2 and "pyimg lock" in r.err  # re-read: the new declaration is unpinned


def test_targets_of_another_entry_are_not_used(ws, monkeypatch):
    """The entry and its targets are two files: a crash between their writes (the targets of
    the previous analysis beside the new entry) is a miss, not the old targets' actions."""
    ws.write("p/BUILD.pyimg", 'genrule(name = "a", outs = ["a"], cmd = "echo 1 > $@")\n')
    _built(ws, "//p:all")
    (entry,) = _analysis_files(ws)
    targets = entry.with_suffix(".targets")
    old = targets.read_bytes()
    ws.write("p/BUILD.pyimg", 'genrule(name = "a", outs = ["a"], cmd = "echo 2 > $@")\n')
    _built(ws, "//p:all")
    targets.write_bytes(old)
    ws.out("p/a").unlink()
    monkeypatch.setenv("PYIMG_FAST_NOOP", "0")  # through the analysis cache, not the no-op record
    _built(ws, "//p:all")
    assert ws.out("p/a").read_text() == "2\n"
    assert targets.read_bytes() != old  # analysed again and saved


def test_a_stale_entry_does_not_read_its_targets(ws, monkeypatch):
    """After a BUILD edit the entry is checked before its targets (nearly all its bytes, 11 MB
    at 10,000 targets) are read: only the new analysis's save names the targets file."""
    from pyimg.analysis import cache

    ws.write("p/BUILD.pyimg", 'genrule(name = "a", outs = ["a"], cmd = "echo 1 > $@")\n')
    _built(ws, "//p:all")
    calls = []
    real = cache._targets_path
    monkeypatch.setattr(cache, "_targets_path", lambda entry: calls.append(entry) or real(entry))
    ws.write("p/BUILD.pyimg", 'genrule(name = "a", outs = ["a"], cmd = "echo 2 > $@")\n')
    _built(ws, "//p:all")
    assert len(calls) == 1  # put()'s
    monkeypatch.setenv("PYIMG_FAST_NOOP", "0")
    _built(ws, "//p:all")
    assert len(calls) == 2  # a valid entry: its targets are read


def test_saved_analysis_takes_reused_actions_as_they_were_saved(ws, monkeypatch):
    """After a BUILD edit, the saved analysis writes the reused targets' actions in the JSON the
    target cache holds: only the analysed target's are serialised again."""
    from pyimg.analysis import cache

    rules = "".join(f'genrule(name = "{n}", outs = ["{n}"], cmd = "echo {n} > $@")\n' for n in "abc")
    ws.write("p/BUILD.pyimg", rules)
    ws.write("q/BUILD.pyimg", 'genrule(name = "d", outs = ["d"], cmd = "echo d > $@")\n')
    _built(ws, "//...")
    serialised = []
    real = cache.action_to_json
    monkeypatch.setattr(cache, "action_to_json", lambda a: serialised.append(a.owner) or real(a))
    ws.write("q/BUILD.pyimg", 'genrule(name = "d", outs = ["d"], cmd = "echo D > $@")\n')
    _built(ws, "//...")
    assert serialised == []  # //q:d was analysed: the target cache made its JSON too
    assert ws.out("q/d").read_text() == "D\n"
    monkeypatch.setenv("PYIMG_FAST_NOOP", "0")
    ws.out("p/a").unlink()
    _built(ws, "//...")  # the saved analysis serves this build
    assert ws.out("p/a").read_text() == "a\n"
