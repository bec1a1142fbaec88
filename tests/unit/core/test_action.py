import dataclasses
import pickle

from pyimg.core.action import KIND_RUN, Action, action_key, key_components


def _key(action, digests=None, fmt="v1"):
    digests = digests or {p: "sha256:" + "0" * 64 for p in action.inputs + action.tools}
    return action_key(key_components(action, digests, fmt))


def test_display_fields_do_not_change_the_key():
    a = Action(kind="run", outputs=("o",), argv=("sh",), owner="//a:b", mnemonic="X", origin="f:1")
    b = Action(kind="run", outputs=("o",), argv=("sh",), owner="//c:d", mnemonic="Y", origin="g:2",
               progress_message="hi")
    assert a == b and _key(a) == _key(b)


def test_everything_that_shapes_outputs_changes_the_key():
    base = Action(kind="run", outputs=("o",), inputs=("i",), argv=("sh",), env=(("A", "1"),))
    keys = {
        _key(base),
        _key(Action(kind="run", outputs=("o2",), inputs=("i",), argv=("sh",), env=(("A", "1"),))),
        _key(Action(kind="run", outputs=("o",), inputs=("i",), argv=("bash",), env=(("A", "1"),))),
        _key(Action(kind="run", outputs=("o",), inputs=("i",), argv=("sh",), env=(("A", "2"),))),
        _key(base, {"i": "sha256:" + "1" * 64}),
        _key(base, fmt="v2"),
    }
    assert len(keys) == 6


def test_actions_have_slots_not_a_dict():
    # Slots halve an Action's size: one per target and more at 50,000 targets.
    a = Action(kind=KIND_RUN, outputs=("o",), inputs=("i",), argv=("true",))
    assert not hasattr(a, "__dict__")
    assert pickle.loads(pickle.dumps(a)) == a and dataclasses.replace(a, argv=("x",)) != a


def test_exec_paths_are_one_string_each():
    # A consumer's input and its producer's output, decoded apart, end up one object.
    out = "".join(["pyimg-out/p/", "gen.h"])
    produced = Action(kind=KIND_RUN, outputs=(out,), argv=("true",))
    consumed = Action(kind=KIND_RUN, outputs=("o",), inputs=("".join(["pyimg-out/p/", "gen.h"]),),
                      argv=("true",))
    assert consumed.inputs[0] is produced.outputs[0]
