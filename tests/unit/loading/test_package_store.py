"""Package records: written on a thread of their own while loading goes on, complete once the
loader saves, served to the next loader; and load() strings resolved once per loading file."""

from pathlib import Path

import pytest
from pyimg.core.file_digests import FileDigestCache
from pyimg.loading.package_store import PackageStore, StoredLoader

_GENRULE = 'genrule(name = "{0}", srcs = [], outs = ["{0}.out"], cmd = "true > $@")\n'


def _workspace(root: Path, packages: dict[str, str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "MODULE.pyimg").write_text("")
    for name, text in packages.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "BUILD.pyimg").write_text(text)
    return root


def _store(tmp_path: Path) -> PackageStore:
    return PackageStore(tmp_path / "out" / "packages", FileDigestCache(None))


def test_records_written_later_are_all_there_after_flush(tmp_path: Path):
    store = _store(tmp_path)
    for i in range(50):
        store.write_later(f"p{i}", {"n": i})
    store.flush()
    assert all(store.read(f"p{i}")["n"] == i for i in range(50))
    assert not list(store.directory.glob(".tmp-*"))


def test_a_failed_write_is_raised_by_flush_and_the_store_works_after(tmp_path: Path):
    store = _store(tmp_path)
    store.directory.parent.mkdir(parents=True)
    store.directory.write_text("a file where the directory should be")
    store.write_later("p", {"n": 1})
    with pytest.raises(OSError):
        store.flush()
    store.directory.unlink()
    store.write_later("p", {"n": 2})
    store.flush()
    assert store.read("p")["n"] == 2


def test_a_record_is_encoded_when_it_is_handed_over(tmp_path: Path):
    store = _store(tmp_path)
    record = {"targets": {"a": 1}}
    store.write_later("p", record)
    record["targets"]["b"] = 2  # the loader's structures may change after the hand-over
    store.flush()
    assert store.read("p")["targets"] == {"a": 1}


def test_packages_evaluated_by_one_loader_are_served_to_the_next(tmp_path: Path):
    ws = _workspace(tmp_path / "ws", {f"p{i}": _GENRULE.format("t") for i in range(20)})
    first = StoredLoader(ws, None, _store(tmp_path))
    for i in range(20):
        first.package(f"p{i}")
    first.save()
    second = StoredLoader(ws, None, _store(tmp_path))
    assert [sorted(second.package(f"p{i}").targets) for i in range(20)] == [["t"]] * 20
    assert second.served == 20


def test_the_same_relative_load_means_another_file_in_another_package(tmp_path: Path):
    # load(":defs.bzl") is resolved once per loading file: two packages get their own file.
    ws = _workspace(tmp_path / "ws", {
        "a": 'load(":defs.bzl", "N")\ngenrule(name = N, srcs = [], outs = ["o"], cmd = "true > $@")\n',
        "b": 'load(":defs.bzl", "N")\ngenrule(name = N, srcs = [], outs = ["o"], cmd = "true > $@")\n',
    })
    (ws / "a/defs.bzl").write_text('N = "from_a"\n')
    (ws / "b/defs.bzl").write_text('N = "from_b"\n')
    loader = StoredLoader(ws, None, _store(tmp_path))
    assert list(loader.package("a").targets) == ["from_a"]
    assert list(loader.package("b").targets) == ["from_b"]
    loader.save()
