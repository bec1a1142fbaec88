"""Scratch slots: reused from one action to the next, emptied in between down to their own
directories; a slot whose directories a command replaced is removed and a fresh one made."""

from __future__ import annotations

import os

from pyimg.core.executor import _ScratchSlots


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
    found = sorted(os.path.relpath(os.path.join(d, n), again)
                   for d, ds, fs in os.walk(again) for n in ds + fs)
    assert found == ["execroot", "sandbox", "sandbox/home", "sandbox/tmp"]
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
