"""core/tool_identity.py: what a host tool's identity digest covers, and what it ignores."""

from __future__ import annotations

import os
import shutil
import sys

import pytest
from pyimg.core.elf import library_closure, read_elf
from pyimg.core.file_digests import FileDigestCache
from pyimg.core.tool_identity import ToolSpec, changed_parts, tool_identity


@pytest.fixture
def digests():
    return FileDigestCache(None).digest_and_mode


def _toolchain(root):
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "sub").mkdir(parents=True)
    (root / "lib" / "a.txt").write_text("a\n")
    (root / "lib" / "sub" / "b.txt").write_text("b\n")
    os.symlink("a.txt", root / "lib" / "link")
    tool = root / "bin" / "tool"
    tool.write_text("#!/bin/sh\necho tool\n")
    tool.chmod(0o755)
    return ToolSpec(str(tool), "bytes", (str(root / "lib"),))


def _identity(spec, digests):
    return tool_identity(spec, digests).digest


def test_a_changed_data_file_changes_the_identity_and_mtime_alone_does_not(tmp_path, digests):
    spec = _toolchain(tmp_path / "t")
    before = _identity(spec, digests)
    b = tmp_path / "t" / "lib" / "sub" / "b.txt"
    os.utime(b, ns=(0, 10**9))
    assert _identity(spec, digests) == before
    b.write_text("B\n")
    assert _identity(spec, digests) != before


@pytest.mark.parametrize("change", ["add", "remove", "chmod", "relink", "mkdir", "program"])
def test_every_kind_of_change_changes_the_identity(tmp_path, digests, change):
    spec = _toolchain(tmp_path / "t")
    lib = tmp_path / "t" / "lib"
    before = _identity(spec, digests)
    if change == "add":
        (lib / "c.txt").write_text("c\n")
    elif change == "remove":
        (lib / "sub" / "b.txt").unlink()
    elif change == "chmod":
        (lib / "a.txt").chmod(0o755)
    elif change == "relink":
        (lib / "link").unlink()
        os.symlink("sub/b.txt", lib / "link")
    elif change == "mkdir":
        (lib / "empty").mkdir()
    else:
        (tmp_path / "t" / "bin" / "tool").write_text("#!/bin/sh\necho other\n")
    assert _identity(spec, digests) != before


def test_the_identity_does_not_depend_on_where_the_toolchain_is(tmp_path, digests):
    here = _toolchain(tmp_path / "here")
    shutil.copytree(tmp_path / "here", tmp_path / "elsewhere" / "deeper", symlinks=True)
    there = ToolSpec(str(tmp_path / "elsewhere" / "deeper" / "bin" / "tool"), "bytes",
                     (str(tmp_path / "elsewhere" / "deeper" / "lib"),))
    assert _identity(here, digests) == _identity(there, digests)


def test_auto_adds_the_elf_interpreter_and_libraries():
    interpreter, libraries = library_closure(sys.executable)
    info = read_elf(os.path.realpath(sys.executable))
    assert info is not None
    if interpreter is None:
        pytest.skip("a statically linked interpreter")
    assert any(name.startswith("libc.so") for name in libraries)
    assert all(path is not None and os.path.exists(path) for path in libraries.values())
    identity = tool_identity(ToolSpec("/bin/sh"), FileDigestCache(None).digest_and_mode)
    assert os.path.realpath(library_closure("/bin/sh")[0]) in identity.manifest["auto"]
    assert tool_identity(ToolSpec("/bin/sh", "bytes"),
                         FileDigestCache(None).digest_and_mode).digest != identity.digest


def _fake_python(root):
    """A CPython-shaped prefix: bin/python3.99 (a copy of /bin/true) and lib/python3.99/os.py."""
    (root / "bin").mkdir(parents=True)
    (root / "lib" / "python3.99" / "__pycache__").mkdir(parents=True)
    shutil.copy("/bin/true", root / "bin" / "python3.99")
    (root / "lib" / "python3.99" / "os.py").write_text("# os\n")
    (root / "lib" / "python3.99" / "__pycache__" / "os.cpython-399.pyc").write_text("pyc")
    script = root / "bin" / "script"
    script.write_text(f"#!{root}/bin/python3.99\nprint('hi')\n")
    script.chmod(0o755)
    return root


def test_auto_adds_a_scripts_python_and_its_standard_library_but_not_pycache(tmp_path, digests):
    root = _fake_python(tmp_path / "py")
    spec = ToolSpec(str(root / "bin" / "script"))
    first = tool_identity(spec, digests)
    assert str(root / "lib" / "python3.99") in first.manifest["auto"]
    (root / "lib" / "python3.99" / "__pycache__" / "os.cpython-399.pyc").write_text("other")
    assert _identity(spec, digests) == first.digest
    (root / "lib" / "python3.99" / "os.py").write_text("# os, patched\n")
    second = tool_identity(spec, digests)
    assert second.digest != first.digest
    old = {"manifest": first.manifest, "display": first.display}
    new = {"manifest": second.manifest, "display": second.display}
    assert changed_parts(old, new) == [f"{root}/lib/python3.99/os.py changed"]


def test_changed_parts_names_data_files_at_their_host_paths(tmp_path, digests):
    spec = _toolchain(tmp_path / "t")
    first = tool_identity(spec, digests)
    (tmp_path / "t" / "lib" / "sub" / "b.txt").write_text("B\n")
    (tmp_path / "t" / "lib" / "c.txt").write_text("c\n")
    second = tool_identity(spec, digests)
    parts = changed_parts({"manifest": first.manifest, "display": first.display},
                          {"manifest": second.manifest, "display": second.display})
    lib = tmp_path / "t" / "lib"
    assert parts == [f"{lib}/c.txt added", f"{lib}/sub/b.txt changed"]
    assert changed_parts(None, {"manifest": {}}) == []


def test_a_missing_data_path_is_reported_by_name(tmp_path, digests):
    spec = _toolchain(tmp_path / "t")
    gone = ToolSpec(spec.path, "bytes", (str(tmp_path / "nope"),))
    with pytest.raises(FileNotFoundError) as e:
        tool_identity(gone, digests)
    assert e.value.filename == str(tmp_path / "nope")


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_auto_follows_runpath_origin_to_a_private_library(tmp_path, digests):
    """A program linked to its own library through RUNPATH=$ORIGIN/../lib: a change of that
    library changes the program's identity, and its absence is recorded, not fatal."""
    import subprocess

    (tmp_path / "bin").mkdir()
    (tmp_path / "lib").mkdir()
    (tmp_path / "greet.c").write_text('const char *greeting(void) { return "hi"; }\n')
    (tmp_path / "main.c").write_text(
        '#include <stdio.h>\nconst char *greeting(void);\nint main(void) { puts(greeting()); }\n')
    lib = tmp_path / "lib" / "libgreet.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(tmp_path / "greet.c")], check=True)
    program = tmp_path / "bin" / "main"
    subprocess.run(["cc", "-o", str(program), str(tmp_path / "main.c"), f"-L{lib.parent}", "-lgreet",
                    "-Wl,--enable-new-dtags,-rpath,$ORIGIN/../lib"], check=True)
    spec = ToolSpec(str(program))
    first = tool_identity(spec, digests)
    assert str(lib) in first.manifest["auto"]
    (tmp_path / "greet.c").write_text('const char *greeting(void) { return "hello"; }\n')
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(tmp_path / "greet.c")], check=True)
    assert _identity(spec, digests) != first.digest
    lib.unlink()
    assert tool_identity(spec, digests).manifest["auto"].get("missing:libgreet.so") == "missing"


def test_a_file_that_is_not_elf_has_no_libraries(tmp_path):
    script = tmp_path / "s"
    script.write_text("#!/bin/sh\n")
    assert read_elf(str(script)) is None
    assert library_closure(str(script)) == (None, {})
