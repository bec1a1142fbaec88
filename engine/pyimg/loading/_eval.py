"""Evaluating one Starlark file: the implicit prelude load, export aliases, and user-facing errors.

Every BUILD and .bzl file gets the prelude's builtins through a `load()` that pyimg adds in front of
its first line (on the same line when Starlark allows it, so line numbers stay the user's). Errors
and call stacks are mapped back to the user's own line and column before anyone sees them.
"""

from __future__ import annotations

import io
import itertools
import keyword
import re
import tokenize
from dataclasses import dataclass, field

import starlark as sl

from pyimg.errors import UserInputError
from pyimg.loading.limits import check_nesting, run_limited, steps_message

__all__ = [
    "SourceFile",
    "StarlarkFailure",
    "edge_frame",
    "evaluate",
    "globals_",
    "parse_stack",
    "prepare_source",
    "render_error",
]

_GLOBALS: sl.Globals | None = None

# `NAME = rule(` / `NAME = provider(` at top level: pyimg adds a public alias for each so that the
# synthetic analysis module can load private rules and providers too (Bazel exports them by name).
_EXPORT = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(rule|provider)\s*\(", re.MULTILINE)
_COMPOUND = re.compile(r"^\s*(def|if|for|while)\b")
_FRAME = re.compile(r"^\s*\* (.+?):(\d+), in (.+)$")
_LOCATION = re.compile(r"^\s*--> (.+?):(\d+):(\d+)")


def globals_() -> sl.Globals:
    global _GLOBALS
    if _GLOBALS is None:
        ext = sl.LibraryExtension
        _GLOBALS = sl.Globals.extended_by(
            [ext.CallStack, ext.StructType, ext.Json, ext.Print, ext.Map, ext.Filter, ext.Typing]
        )
    return _GLOBALS


def export_alias(name: str) -> str:
    return f"pyimg_export_{name.lstrip('_')}__{'p' if name.startswith('_') else 'x'}"


@dataclass
class SourceFile:
    """A file as the user wrote it, and what pyimg evaluates in its place."""

    name: str  # display name: workspace-relative path, or @pyimg/... for bundled files
    text: str
    evaluated: str = ""
    first_line_prefix: int = 0  # characters added in front of line 1
    line_offset: int = 0  # lines added in front (when line 1 is a compound statement)
    exports: dict[int, str] = field(default_factory=dict)  # line -> top-level rule/provider name
    lines: list[str] | None = field(default=None, repr=False, compare=False)  # `text`, split
    # line -> (column, characters removed, characters inserted) of each attribute rewrite on it
    rewrites: dict[int, list[tuple[int, int, int]]] = field(default_factory=dict)

    def user_position(self, line: int, col: int) -> tuple[int, int]:
        line -= self.line_offset
        if line == 1 and self.first_line_prefix:
            col = max(1, col - self.first_line_prefix)
        shift = 0
        for at, removed, inserted in self.rewrites.get(line, ()):
            if col >= at + shift + inserted:
                shift += inserted - removed
            elif col >= at + shift:
                return max(line, 1), at  # inside text pyimg added: where it was added
        return max(line, 1), col - shift

    def line_text(self, line: int) -> str:
        lines = self._lines()
        return lines[line - 1] if 0 < line <= len(lines) else ""

    def _lines(self) -> list[str]:
        # Split once: every target of a BUILD file asks for its line.
        if self.lines is None:
            self.lines = self.text.splitlines()
        return self.lines

    def call_column(self, line: int, callee: str | None = None) -> int:
        """The column of a call to `callee` on `line` (1-based), or of the line's first
        non-blank character when `callee` is not there (a macro's call, `x = ...`)."""
        code = self.line_text(line)
        if callee:
            m = re.search(rf"(?<![\w]){re.escape(callee)}\s*\(", code)
            if m:
                return m.start() + 1
        return len(code) - len(code.lstrip()) + 1

    def end_position(self) -> tuple[int, int]:
        """(line, column) just after the last character: where "unexpected end of file" is."""
        lines = self._lines() or [""]
        return len(lines), len(lines[-1]) + 1

    def position(self, offset: int) -> tuple[int, int]:
        """(line, column), 1-based, of a character offset into `text`."""
        return self.text.count("\n", 0, offset) + 1, offset - self.text.rfind("\n", 0, offset)

    def load_position(self, module: str) -> tuple[int, int] | None:
        """Where the `load()` of `module` is, or None."""
        m = re.search(r"\bload\(\s*[\"']" + re.escape(module) + r"[\"']", self.text)
        return self.position(m.start()) if m else None

    def argument_position(self, line: int, col: int, name: str) -> tuple[int, int] | None:
        """Where `name = ...` is passed in the call whose callee starts at (line, col), or None
        (a macro that sets the attribute itself). Strings and comments are skipped."""
        text = self.text
        starts = [0]
        for m in re.finditer("\n", text):
            starts.append(m.end())
        if not 0 < line <= len(starts):
            return None
        i = text.find("(", starts[line - 1] + col - 1)
        depth = 0
        while 0 <= i < len(text):
            c = text[i]
            if c in "\"'":
                i = _string_end(text, i)
                continue
            if c == "#":
                i = text.find("\n", i)
                continue
            if c in "([{":
                depth += 1
            elif c in ")]}":
                depth -= 1
                if depth == 0:
                    return None
            elif depth == 1 and (c.isalpha() or c == "_") and not _IDENT_CHAR.match(text[i - 1]):
                ident = _IDENTIFIER.match(text, i)
                assert ident is not None
                if ident.group(0) == name and re.match(r"\s*=(?!=)", text[ident.end():]):
                    return self.position(i)
                i = ident.end()
                continue
            i += 1
        return None


_IDENT_CHAR = re.compile(r"[A-Za-z0-9_.]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _column(sources: dict[str, SourceFile], file: str, line: int, callee: str) -> int:
    src = sources.get(file)
    return src.call_column(line, callee) if src is not None else 1


def _string_end(text: str, i: int) -> int:
    """The index just after the string literal that starts at `i` (its quote)."""
    quote = text[i : i + 3] if text[i : i + 3] in ('"""', "'''") else text[i]
    j = i + len(quote)
    while j < len(text):
        if text[j] == "\\":
            j += 2
            continue
        if text.startswith(quote, j):
            return j + len(quote)
        if text[j] == "\n" and len(quote) == 1:
            return j  # an unterminated string: Starlark has already reported it
        j += 1
    return len(text)


# Bazel's Label has fields (`ctx.label.name`) and prints as `//pkg:name`; its Target has a
# `.label` and is indexed by providers (`dep[MyInfo]`). starlark-pyo3 can define no type that
# prints as it likes or has both fields and `[]`, so labels are canonical strings and targets
# dicts, and in files that load it `X.label`, `X.name`, ... read through ATTR_HELPER, which gives
# those strings and dicts these fields and reads every other value's attribute as Starlark does.
ATTR_HELPER = "pyimg_attr__"
LABEL_FIELDS = ("label", "name", "package", "workspace_name", "repo_name", "to_list")
_LABEL_FIELD_ACCESS = re.compile(r"\.\s*(?:" + "|".join(LABEL_FIELDS) + r")\b")
_OPENERS = {")": "(", "]": "[", "}": "{"}


def rewrite_label_fields(text: str) -> tuple[str, dict[int, list[tuple[int, int, int]]]]:
    """`X.name` -> `pyimg_attr__(X, "name")` for each of LABEL_FIELDS, and where each edit is
    (line -> (column, removed, inserted), 1-based) so that errors keep the user's columns.
    Text that does not tokenize is returned as is: Starlark reports the syntax error."""
    if not _LABEL_FIELD_ACCESS.search(text):
        return text, {}
    try:
        tokens = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
                  if t.type not in (tokenize.NL, tokenize.COMMENT)]
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return text, {}
    edits: list[tuple[tuple[int, int], tuple[int, int], str]] = []  # (start, end, replacement)
    for i in range(1, len(tokens) - 1):
        dot, name = tokens[i], tokens[i + 1]
        if dot.string != "." or name.type != tokenize.NAME or name.string not in LABEL_FIELDS:
            continue
        start = _operand_start(tokens, i - 1)
        if start is None:
            continue
        edits.append((tokens[start].start, tokens[start].start, ATTR_HELPER + "("))
        edits.append((dot.start, name.end, f', "{name.string}")'))
    if not edits:
        return text, {}
    lines = text.splitlines(keepends=True)
    rewrites: dict[int, list[tuple[int, int, int]]] = {}
    # Right to left, so that earlier positions stay valid; edits never span lines.
    for (row, col), (_, end_col), new in sorted(edits, key=lambda e: e[0], reverse=True):
        line = lines[row - 1]
        lines[row - 1] = line[:col] + new + line[end_col:]
        rewrites.setdefault(row, []).insert(0, (col + 1, end_col - col, len(new)))
    return "".join(lines), rewrites


def _operand_start(tokens: list[tokenize.TokenInfo], j: int) -> int | None:
    """The index of the first token of the primary expression that ends at token `j` (a name, a
    call, an index, an attribute chain, a bracketed literal), or None when there is none."""
    while j >= 0:
        tok = tokens[j]
        if tok.type == tokenize.OP and tok.string in _OPENERS:
            depth = 0
            while j >= 0:
                s = tokens[j].string if tokens[j].type == tokenize.OP else ""
                if s in _OPENERS:
                    depth += 1
                elif s in _OPENERS.values():
                    depth -= 1
                    if depth == 0:
                        break
                j -= 1
            if j < 0:
                return None
            opener = tokens[j].string
            prev = tokens[j - 1] if j > 0 else None
            is_suffix = opener != "{" and prev is not None and (
                (prev.type == tokenize.NAME and not keyword.iskeyword(prev.string))
                or prev.type == tokenize.STRING
                or (prev.type == tokenize.OP and prev.string in _OPENERS)
            )
            if not is_suffix:
                return j
            j -= 1
        elif tok.type in (tokenize.STRING, tokenize.NUMBER) or (
            tok.type == tokenize.NAME and not keyword.iskeyword(tok.string)
        ):
            if j > 0 and tokens[j - 1].string == "." and tokens[j - 1].type == tokenize.OP:
                j -= 2
                continue
            return j
        else:
            return None
    return None


def prepare_source(name: str, text: str, prelude_loads: list[tuple[str, list[str]]]) -> SourceFile:
    check_nesting(text, name)  # before the parser, whose stack such a file would overflow
    src = SourceFile(name, text)
    if any(ATTR_HELPER in symbols for _, symbols in prelude_loads):
        text, src.rewrites = rewrite_label_fields(text)
    for m in _EXPORT.finditer(text):
        src.exports[text.count("\n", 0, m.start()) + 1] = m.group(1)
    aliases = "".join(f"\n{export_alias(n)} = {n}" for n in sorted(set(src.exports.values())))
    prefix = "".join(
        "load({}, {}); ".format(_q(module), ", ".join(_q(s) for s in symbols))
        for module, symbols in prelude_loads
    )
    body = text if text.endswith("\n") or not text else text + "\n"
    if not prefix:
        src.evaluated = body + aliases
    elif _COMPOUND.match(body.split("\n", 1)[0]):
        src.evaluated = prefix.rstrip("; ") + "\n" + body + aliases
        src.line_offset = 1
    else:
        src.evaluated = prefix + body + aliases
        src.first_line_prefix = len(prefix)
    return src


def evaluate(name: str, source: str, module: sl.Module, loader: sl.FileLoader | None = None) -> object:
    """Parse and evaluate `source` into `module` within pyimg's limits (limits.py); returns the
    value of its last statement. Errors are starlark's, for `render_error`."""

    def run(options: sl.EvalOptions) -> object:
        return sl.eval_with(options, module, sl.parse(name, source), globals_(), loader).value

    return run_limited(run, name)


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Frame:
    file: str
    line: int
    function: str


def parse_stack(text: str, sources: dict[str, SourceFile]) -> list[Frame]:
    """Frames of a `call_stack()` text, outermost first, in the user's line numbers."""
    frames = []
    for raw in text.splitlines():
        m = _FRAME.match(raw)
        if m:
            file, line = m.group(1), int(m.group(2))
            src = sources.get(file)
            if src is not None:
                line, _ = src.user_position(line, 1)
            frames.append(Frame(file, line, m.group(3)))
    return frames


def edge_frame(text: str, sources: dict[str, SourceFile], skip: str, outermost: bool = False
               ) -> Frame | None:
    """The innermost (or outermost) frame of a `call_stack()` text that is not in file `skip`,
    as `parse_stack` gives it; None when there is none. Every action and declared file of an
    analysis asks this, and parsing the frames it does not need cost 3% of an analysis."""
    lines = text.splitlines()
    for raw in lines if outermost else reversed(lines):
        m = _FRAME.match(raw)
        if m is None or m.group(1) == skip:
            continue
        file, line = m.group(1), int(m.group(2))
        src = sources.get(file)
        if src is not None:
            line, _ = src.user_position(line, 1)
        return Frame(file, line, m.group(3))
    return None


class StarlarkFailure(UserInputError):
    """A Starlark evaluation error, rendered with the user's file:line:col."""


def render_error(error: sl.StarlarkError, sources: dict[str, SourceFile]) -> UserInputError:
    text = str(error)
    lines = text.splitlines()
    message = ""
    for raw in lines:
        if raw.startswith("error: "):
            message = raw[len("error: ") :]
            break
    if not message:
        message = lines[0] if lines else "Starlark error"
    message = message.removeprefix("fail: ")
    if message == "Evaluation cancelled":  # the step budget ran out (Ctrl-C never gets here)
        message = steps_message()
    origin = None
    snippet = ""
    for raw in lines:
        m = _LOCATION.match(raw)
        if m:
            file, line, col = m.group(1), int(m.group(2)), int(m.group(3))
            src = sources.get(file)
            if "Parse error" in message and line == 1 and col == 1 and not re.search(r"^\s*1 \|", text, re.M):
                # starlark reports errors at end of input as 1:1 with no snippet: the end is where.
                end = src.end_position() if src is not None else None
                origin = f"{file}:{end[0]}:{end[1]}" if end else file
                message += " (at end of file)"
                break
            if src is not None:
                line, col = src.user_position(line, col)
                code = src.line_text(line)
                if code:
                    snippet = f"\n    {code}\n    {' ' * (col - 1)}^"
            origin = f"{file}:{line}:{col}"
            break
    frames = parse_stack(text, sources)
    if len(frames) >= 2 and frames[-1].function == ATTR_HELPER:
        # A field the value does not have, read through the rewrite: the read is the user's.
        caller = frames[-2]
        src = sources.get(caller.file)
        if src is not None:
            edits = src.rewrites.get(caller.line)
            col = edits[0][0] if edits else src.call_column(caller.line)
            code = src.line_text(caller.line)
            snippet = f"\n    {code}\n    {' ' * (col - 1)}^" if code else ""
            origin = f"{caller.file}:{caller.line}:{col}"
            frames = frames[:-1]
    trace = [
        f"  called from {f.file}:{f.line}:{_column(sources, f.file, f.line, callee.function)} "
        f"({f.function})"
        for f, callee in itertools.pairwise(frames)
        if not f.file.startswith("@pyimg/")
    ]
    trace = _shorten_trace(trace)
    full = message + snippet + ("\n" + "\n".join(trace) if trace else "")
    return StarlarkFailure(full, origin=origin)


_TRACE_HEAD, _TRACE_TAIL = 10, 5


def _shorten_trace(trace: list[str]) -> list[str]:
    """A readable trace of a deep recursion: runs of the same call folded into one line, and
    only the outermost and innermost calls of a trace still longer than a screen."""
    folded: list[str] = []
    i = 0
    while i < len(trace):
        j = i
        while j + 1 < len(trace) and trace[j + 1] == trace[i]:
            j += 1
        folded.append(trace[i] + (f" [{j - i + 1} times]" if j > i else ""))
        i = j + 1
    if len(folded) <= _TRACE_HEAD + _TRACE_TAIL + 1:
        return folded
    hidden = len(folded) - _TRACE_HEAD - _TRACE_TAIL
    return [*folded[:_TRACE_HEAD], f"  ... {hidden} more calls ...", *folded[-_TRACE_TAIL:]]
