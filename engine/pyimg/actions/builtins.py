"""The table of built-in actions that rules/ declares with `ctx.actions.builtin(...)`.

Each is a pure function from input files to output files, run in-process by the engine:
`fn(call: BuiltinCall) -> None`. The contract:

- `call.params` is the JSON value the rule passed; it is part of the action key.
- `call.inputs` maps each declared input's exec path (`pkg/file`, `pyimg-out/pkg/out`) to a
  readable path; a declared directory input maps to a directory. `call.input_digests` holds the
  sha256 of every input *file* (so a builtin never needs to re-hash an input to verify it).
- `call.outputs` maps each declared output exec path to the path to write. Parents exist. A path in
  `call.output_dirs` must be created as a directory. Inputs may be hard-linked into outputs
  (`os.link`): the engine recognises them and does not hash them again.
- Output bytes must depend only on params and input bytes: never on time, paths, `jobs` or hash
  seeds. `call.jobs` may be used for parallelism only.
- Long loops call `call.check_cancelled()` now and then (raises on Ctrl-C).
- A problem with the user's input raises `pyimg.errors.UserInputError` (or another
  `PyimgError`) with a message naming the attribute or blob; the engine prefixes the action's
  target and origin.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pyimg.core.builtin import BuiltinCall

__all__ = ["BUILTINS", "builtin", "load_builtins"]


BUILTINS: dict[str, Callable[[BuiltinCall], None]] = {}


def builtin(name: str) -> Callable[[Callable[[BuiltinCall], None]], Callable[[BuiltinCall], None]]:
    """Register a built-in action under `name` (the `kind` rules pass to ctx.actions.builtin)."""

    def register(fn: Callable[[BuiltinCall], None]) -> Callable[[BuiltinCall], None]:
        BUILTINS[name] = fn
        return fn

    return register


def load_builtins() -> Mapping[str, Callable[[BuiltinCall], None]]:
    """Import the modules that register builtins (kept out of start-up until a build needs them)."""
    import importlib
    import pkgutil
    from pathlib import Path

    package = __name__.rpartition(".")[0]
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
    return BUILTINS
