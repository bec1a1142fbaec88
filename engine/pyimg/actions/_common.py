"""Helpers shared by the built-in actions: checking params and finding inputs and outputs."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pyimg.core.builtin import BuiltinCall
from pyimg.core.digest import Digest
from pyimg.core.streams import ByteWriter
from pyimg.errors import UserInputError
from pyimg.oci.compress import HashingWriter

__all__ = [
    "layer_mtime",
    "write_tar_output",
    "input_path",
    "only_input",
    "opt_str",
    "opt_str_list",
    "output_dir",
    "output_with_suffix",
    "params_dict",
    "parse_mode",
    "parse_owner",
    "str_dict",
    "write_digest_file",
]


def params_dict(call: BuiltinCall, known: set[str], action: str) -> dict[str, Any]:
    """`call.params` as a dict; unknown keys are an error (they are usually typos)."""
    params = call.params if call.params is not None else {}
    if not isinstance(params, Mapping):
        raise UserInputError(f"{action}: params must be a JSON object")
    unknown = sorted(set(params) - known)
    if unknown:
        import difflib

        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise UserInputError(f"{action}: unknown params: {', '.join(hints)}")
    return dict(params)


def layer_mtime(params: Mapping[str, Any], what: str) -> int:
    """The `mtime` param of a tar-writing builtin: every entry's timestamp, 0 when unset."""
    mtime = params.get("mtime") or 0
    if not isinstance(mtime, int) or isinstance(mtime, bool) or mtime < 0:
        raise UserInputError(f"{what}: mtime must be a non-negative integer, got {mtime!r}")
    return mtime


def input_path(call: BuiltinCall, exec_path: Any, what: str) -> Path:
    if not isinstance(exec_path, str):
        raise UserInputError(f"{what}: expected an input exec path, got {exec_path!r}")
    try:
        return Path(call.inputs[exec_path])
    except KeyError:
        raise UserInputError(f"{what}: {exec_path!r} is not a declared input") from None


def only_input(call: BuiltinCall, what: str) -> tuple[str, Path]:
    if len(call.inputs) != 1:
        raise UserInputError(f"{what}: expected exactly one input, got {sorted(call.inputs)}")
    ((exec_path, path),) = call.inputs.items()
    return exec_path, Path(path)


def output_dir(call: BuiltinCall, what: str) -> Path:
    """The one declared output directory (created here)."""
    dirs = sorted(call.output_dirs)
    if len(dirs) != 1:
        raise UserInputError(f"{what}: expected exactly one output directory, got {dirs}")
    path = Path(call.outputs[dirs[0]])
    path.mkdir(parents=True, exist_ok=True)
    return path


def output_with_suffix(
    call: BuiltinCall, suffix: str, what: str, required: bool = True
) -> Path | None:
    """The one declared output file whose exec path ends with `suffix`."""
    found = sorted(k for k in call.outputs if k.endswith(suffix) and k not in call.output_dirs)
    if len(found) > 1 or (required and not found):
        raise UserInputError(f"{what}: expected one output ending in {suffix!r}, got {found}")
    return Path(call.outputs[found[0]]) if found else None


def write_digest_file(path: Path, digest: Digest) -> None:
    """The `.digest` output: `sha256:<hex>` with no trailing newline."""
    path.write_text(str(digest), encoding="ascii")


def parse_mode(value: Any, what: str) -> int:
    """A mode from an int or an octal string ('0755', '755', '0o755')."""
    if isinstance(value, bool):
        raise UserInputError(f"{what}: bad mode {value!r}")
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        try:
            mode = int(text, 8)
        except ValueError:
            raise UserInputError(
                f"{what}: bad mode {value!r} (expected octal, e.g. '0755')"
            ) from None
    else:
        raise UserInputError(f"{what}: bad mode {value!r}")
    if not 0 <= mode <= 0o7777:
        raise UserInputError(f"{what}: mode {value!r} is out of range (0 to 07777)")
    return mode


def parse_owner(value: Any, what: str) -> tuple[int, int]:
    """'uid.gid' (rules_pkg style) → (uid, gid)."""
    if not isinstance(value, str):
        raise UserInputError(f"{what}: expected 'uid.gid', got {value!r}")
    uid, sep, gid = value.partition(".")
    if not sep or not uid.isdigit() or not gid.isdigit():
        raise UserInputError(f"{what}: expected 'uid.gid' with numbers, got {value!r}")
    return int(uid), int(gid)


def opt_str(params: Mapping[str, Any], key: str, action: str) -> str | None:
    value = params.get(key)
    if value is not None and not isinstance(value, str):
        raise UserInputError(f"{action}: {key} must be a string, got {value!r}")
    return value


def opt_str_list(params: Mapping[str, Any], key: str, action: str) -> list[str] | None:
    value = params.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UserInputError(f"{action}: {key} must be a list of strings, got {value!r}")
    return list(value)


def str_dict(params: Mapping[str, Any], key: str, action: str) -> dict[str, str]:
    value = params.get(key) or {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise UserInputError(f"{action}: {key} must be a dict of strings, got {value!r}")
    return dict(value)


def write_tar_output(call: BuiltinCall, what: str,
                     write: Callable[[ByteWriter, Path], None]) -> None:
    """The builtins whose one output is a layer tar: `write(sink, scratch)` streams the tar into
    the output, hashed while it is written (the store then needs no second read), with a scratch
    directory beside it that is removed afterwards."""
    if len(call.outputs) != 1:
        raise UserInputError(f"{what}: expected one output, got {sorted(call.outputs)}")
    (out_path,) = call.outputs.values()
    with tempfile.TemporaryDirectory(dir=Path(out_path).parent, prefix=f".{what}-") as scratch:
        with open(out_path, "wb") as out:
            sink = HashingWriter(out)
            write(sink, Path(scratch))
    call.output_digests[str(out_path)] = sink.digest()
