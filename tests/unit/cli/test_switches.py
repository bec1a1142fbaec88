"""The PYIMG_* switches: what each value means once cli/ has read it."""

from pyimg.cli.switches import Switches


def test_unset_switches_keep_the_defaults():
    assert Switches.read({"PATH": "/bin"}) == Switches(True, True, None, None)


def test_each_switch_is_read():
    s = Switches.read({"PYIMG_FAST_NOOP": "0", "PYIMG_ANALYSIS_REUSE": "0",
                       "PYIMG_SCHEDULE_SEED": "7", "PYIMG_DISK_CACHE": "/c"})
    assert s == Switches(fast_noop=False, analysis_reuse=False, schedule_seed="7",
                         disk_cache="/c")


def test_only_zero_turns_a_fast_path_off_and_empty_values_are_unset():
    s = Switches.read({"PYIMG_FAST_NOOP": "1", "PYIMG_SCHEDULE_SEED": "",
                       "PYIMG_DISK_CACHE": ""})
    assert s == Switches()
