"""The pre-parse checks of limits.py: nesting bound and UTF-8, each at the user's file:line:col."""

from __future__ import annotations

import pytest
from pyimg.errors import UserInputError
from pyimg.loading.limits import (
    StarlarkLimitError,
    _nesting_bound,
    _scan_nesting,
    check_nesting,
    decode_source,
)


def _deepest_ok(text_for_depth) -> int:
    """The largest depth the check accepts for a family of sources, with a limit of 50."""
    depth = 1
    while True:
        try:
            check_nesting(text_for_depth(depth + 1), "f", limit=50)
        except StarlarkLimitError:
            return depth
        depth += 1


@pytest.mark.parametrize("make, expected", [
    (lambda n: "x = " + "[" * n + "]" * n, 50),  # each bracket is a level
    (lambda n: "x = " + "+".join(["1"] * (n + 1)), 50),  # each operator of a chain
    (lambda n: "x = " + "not " * n + "True", 50),
    (lambda n: "x = a" + ".b" * n, 50),
    (lambda n: "x = a" + "[0]" * n, 49),  # each index, plus the bracket open at the last
    (lambda n: "x = f" + "()" * n, 49),
    (lambda n: "".join(" " * i + "if x:\n" for i in range(n)) + " " * n + "pass\n", 50),
])
def test_what_counts_as_a_level(make, expected):
    assert _deepest_ok(make) == expected


def test_siblings_strings_and_comments_do_not_count():
    check_nesting("x = [" + ", ".join(["1 + 1"] * 5000) + "]\n", "f", limit=5)
    check_nesting('x = "' + "[(" * 5000 + '"  # ' + "(" * 5000 + "\n", "f", limit=5)
    check_nesting("x = '''\n" + "(" * 5000 + "\n'''\n" + "y = r'\\'' + '[['\n", "f", limit=5)
    check_nesting("\n".join(["x = 1 + 1 + 1"] * 5000), "f", limit=5)  # statements are siblings


def test_the_quick_bound_is_never_below_what_the_scan_counts():
    # check_nesting skips the scan when _nesting_bound says the file cannot reach the limit:
    # on random token soups, the scan never passes that bound.
    import random

    pieces = ["(", ")", "[", "]", "{", "}", "f(", "x[", ",", ";", "\n", "\n  ", "\n    ", " + ",
              " - ", ".b", " and ", " not ", " in ", " if ", " else ", " for ", "lambda ", "**",
              "'s(['", '"x"', "# c(\n", "\\\n", "1", "name", "'''a\n(('''", "\t", "\r\n"]
    rng = random.Random(7)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 120)))
        _scan_nesting(text, "f", _nesting_bound(text))  # raises if the scan counted more


def test_the_error_is_where_the_limit_is_passed():
    with pytest.raises(StarlarkLimitError) as e:
        check_nesting('# comment\ns = "(((("\nx = ((((((1))))))\n', "p/BUILD", limit=4)
    assert e.value.origin == "p/BUILD:3:9" and "nested too deeply" in e.value.message


def test_invalid_utf8_points_at_the_first_bad_byte():
    assert decode_source("é\n".encode(), "f") == "é\n"
    with pytest.raises(UserInputError) as e:
        decode_source("# é\nx = 'ü\xff'".encode("latin-1").replace(b"\xe9", "é".encode()), "p/BUILD")
    assert e.value.origin == "p/BUILD:2:6" and "byte 0xfc" in e.value.message
