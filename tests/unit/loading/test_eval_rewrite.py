"""The rewrite of label-field reads (`X.label`, `X.name`, ...) into calls of the prelude's helper."""

from __future__ import annotations

from pyimg.loading._eval import prepare_source, rewrite_label_fields


def test_operands_of_every_shape_are_wrapped_whole():
    text = (
        'a = ctx.label.name\n'
        'b = ctx.attr.deps[0].label\n'
        'c = f(x)[1].package + "s"\n'
        'd = [t.label for t in ts if not t.label]\n'
        'e = (x or y).repo_name\n'
    )
    out, _ = rewrite_label_fields(text)
    assert out.splitlines() == [
        'a = pyimg_attr__(pyimg_attr__(ctx, "label"), "name")',
        'b = pyimg_attr__(ctx.attr.deps[0], "label")',
        'c = pyimg_attr__(f(x)[1], "package") + "s"',
        'd = [pyimg_attr__(t, "label") for t in ts if not pyimg_attr__(t, "label")]',
        'e = pyimg_attr__((x or y), "repo_name")',
    ]


def test_strings_comments_and_other_fields_are_left_alone():
    text = 'x = "a.label" # y.name\nz = f.basename + struct(label = 1).path\n'
    assert rewrite_label_fields(text) == (text, {})


def test_text_that_does_not_tokenize_is_left_for_starlark_to_report():
    text = 'x = (ctx.label.name\n'
    assert rewrite_label_fields(text) == (text, {})


def test_errors_map_back_to_the_users_columns():
    text = 'x = ctx.label.name + y.bogus\n'
    src = prepare_source("f.bzl", text, [("@pyimg//:prelude.bzl", ["pyimg_attr__"])])
    evaluated_line = src.evaluated.splitlines()[0]
    bogus = evaluated_line.index("y.bogus") + 1
    assert src.user_position(1, bogus) == (1, text.index("y.bogus") + 1)
    # Inside the text pyimg added, the position is where it was added (the operand's start).
    added = evaluated_line.index("pyimg_attr__(", src.first_line_prefix) + 1
    assert src.user_position(1, added + 3) == (1, text.index("ctx") + 1)


def test_files_without_the_helper_are_not_rewritten():
    text = 'x = y.name\n'
    assert prepare_source("MODULE.pyimg", text, []).evaluated == text
