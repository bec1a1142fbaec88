"""Scratch slots: reused from one action to the next, emptied in between down to their own
directories (what a command left kept as spares for the next one's directories and input copies,
or removed); a slot whose directories a command replaced is removed and a fresh one made."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from pyimg.core.cas import ContentStore
from pyimg.core.executor import COPY_INPUTS_UP_TO, HOST_TOOLS_DIR, _ScratchSlots, _StagedInputs


def _tree(top: Path, skip: str = "spare") -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), top)
                  for d, ds, fs in os.walk(top) for n in ds + fs
                  if not os.path.relpath(os.path.join(d, n), top).startswith(skip))


def test_a_slot_comes_back_empty_with_its_directories_kept(tmp_path):
    slots = _ScratchSlots(tmp_path / "scratch")
    slot = slots.take()
    (slot / "execroot/p/deep").mkdir(parents=True)
    (slot / "execroot/p/deep/out").write_text("left behind")
    (slot / "execroot/p").chmod(0)
    (slot / "sandbox/tmp").mkdir(parents=True, exist_ok=True)
    (slot / "sandbox/tmp/t").write_text("left behind")
    (slot / "out").mkdir()
    os.symlink("/etc", slot / "execroot/link")
    slots.give_back(slot)
    execroot = os.stat(slot / "execroot").st_ino
    again = slots.take()
    assert again == slot and os.stat(again / "execroot").st_ino == execroot
    assert _tree(again) == ["execroot", "sandbox", "sandbox/home", "sandbox/tmp"]
    for d, ds, _files in os.walk(again / "spare"):  # the spares: empty directories, lone files
        assert all(not os.listdir(os.path.join(d, n)) for n in ds)
    assert os.stat(again / "execroot").st_mode & 0o7777 == 0o755


def test_a_slot_whose_execroot_was_replaced_is_not_reused(tmp_path):
    slots = _ScratchSlots(tmp_path / "scratch")
    slot = slots.take()
    os.symlink(tmp_path, slot / "execroot")  # what a command without a sandbox could do
    (tmp_path / "kept.txt").write_text("not ours to empty")
    slots.give_back(slot)
    assert not slot.exists()
    assert (tmp_path / "kept.txt").read_text() == "not ours to empty"
    assert slots.take() != slot


def test_the_next_command_gets_spare_directories_and_copies_with_fresh_bytes_and_modes(tmp_path):
    cas = ContentStore(tmp_path / "cache")
    short = cas.put_bytes(b"new\n")
    slots = _ScratchSlots(tmp_path / "scratch")
    slot = slots.take()
    (slot / "execroot").mkdir()
    first = _StagedInputs(allow_binds=True, spares=slots.spares(slot))
    first.make_dir(slot / "execroot", "a/b")
    first.copy(cas, cas.put_bytes(b"much longer content\n" * 50, executable=True),
               slot / "execroot/a/b/in", executable=True)
    os.chmod(slot / "execroot/a/b/in", 0o777)
    inodes = {os.stat(slot / "execroot" / p).st_ino for p in ("a", "a/b", "a/b/in")}
    slots.give_back(slot)
    assert slots.take() == slot and _tree(slot / "execroot") == []
    second = _StagedInputs(allow_binds=True, spares=slots.spares(slot))
    second.make_dir(slot / "execroot", "x/y")
    second.copy(cas, short, slot / "execroot/x/y/in", executable=False)
    assert {os.stat(slot / "execroot" / p).st_ino for p in ("x", "x/y", "x/y/in")} == inodes
    copy = slot / "execroot/x/y/in"
    assert copy.read_bytes() == b"new\n"
    assert os.stat(copy).st_mode & 0o7777 == os.stat(cas.path(short)).st_mode & 0o7777 == 0o444
    assert os.stat(copy).st_mtime_ns == os.stat(cas.path(short)).st_mtime_ns
    assert _tree(slot / "execroot") == ["x", "x/y", "x/y/in"]


def test_what_could_carry_something_over_is_removed_not_kept(tmp_path):
    slots = _ScratchSlots(tmp_path / "scratch")
    slot = slots.take()
    ex = slot / "execroot"
    (ex / "xattr_dir").mkdir(parents=True)
    os.setxattr(ex / "xattr_dir", "user.mark", b"1")
    (ex / "xattr_file").write_text("x")
    os.setxattr(ex / "xattr_file", "user.mark", b"1")
    (ex / "linked").write_text("x")
    os.link(ex / "linked", tmp_path / "elsewhere")
    with open(ex / "large", "wb") as f:
        f.truncate(COPY_INPUTS_UP_TO + 1)
    os.symlink("/etc", ex / "link")
    os.mkfifo(ex / "fifo")
    (ex / "closed/inner").mkdir(parents=True)
    (ex / "closed/inner/f").write_text("x")
    os.chmod(ex / "closed", 0o500)  # its entries cannot be moved out: all of it goes
    slots.give_back(slot)
    assert slots.take() == slot and _tree(ex) == []
    spare = slot / "spare"
    kept = {os.path.relpath(os.path.join(d, n), spare): os.lstat(os.path.join(d, n))
            for d, ds, fs in os.walk(spare) for n in ds + fs}
    # Kept: closed/inner/f, and as root (who may move out of a closed directory) closed/inner
    # and closed, emptied; nothing else.
    assert [st.st_size for st in kept.values() if stat.S_ISREG(st.st_mode)] == [1]
    dirs = [p for p, st in kept.items() if stat.S_ISDIR(st.st_mode)]
    assert len(dirs) == (2 if os.getuid() == 0 else 0) and len(kept) == len(dirs) + 1
    assert all(not os.listdir(spare / d) and not os.listxattr(spare / d)
               and kept[d].st_mode & 0o7777 == 0o755 for d in dirs)
    assert (tmp_path / "elsewhere").read_text() == "x"


def test_the_host_tools_links_are_kept_only_for_a_command_with_the_same_ones(tmp_path):
    slots = _ScratchSlots(tmp_path / "scratch")
    slot = slots.take()
    tools = slot / "execroot" / HOST_TOOLS_DIR
    tools.mkdir(parents=True)
    os.symlink("/bin/sh", tools / "sh")
    inode = os.lstat(tools / "sh").st_ino
    slots.give_back(slot)
    assert slots.take() == slot and _tree(slot / "execroot") == []
    spares = slots.spares(slot)
    assert spares.take_links({"sh": "/bin/sh"}, tools)
    assert os.lstat(tools / "sh").st_ino == inode and os.readlink(tools / "sh") == "/bin/sh"
    slots.give_back(slot)
    assert not slots.spares(slot).take_links({"sh": "/bin/dash"}, tools)
    assert not tools.exists() and _tree(slot / "spare", skip="-") == []
    tools.mkdir()
    os.symlink("/bin/sh", tools / "sh")
    (tools / "extra").write_text("a file is not a host tool link")
    slots.give_back(slot)
    assert not slots.spares(slot).take_links({"sh": "/bin/sh"}, tools)
    assert not tools.exists()
