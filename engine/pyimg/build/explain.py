"""Why each action of the last build ran (`pyimg explain`), by diffing its key components.

Reads the two records that `pyimg build` keeps in the output base (`build/build_record.py`): the
last build (every action: key, hit or not, key components) and each action's latest record before
that build. Both are keyed by "<owner> <mnemonic> <first output>".
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from typing import Any

from pyimg.errors import UsageError

# A host tool's stored manifest by identity digest (core/tool_identity.py's ManifestStore.get).
ManifestLookup = Callable[[str], "dict[str, Any] | None"]

__all__ = ["diff_components", "explain"]


def _owner(entry_id: str) -> str:
    return entry_id.split(" ", 1)[0]


def _producers(record: dict[str, Any]) -> dict[str, str]:
    """Output exec path -> entry id."""
    out = {}
    for entry_id, entry in record.items():
        c = entry.get("components") or {}
        for p in (c.get("outputs") or []) + (c.get("output_dirs") or []):
            out[p] = entry_id
    return out


def _closure(record: dict[str, Any], roots: list[str]) -> list[str]:
    """The entries `roots` depend on through their inputs, dependencies first, then by id."""
    producers = _producers(record)
    order: list[str] = []
    done: set[str] = set()

    def visit(entry_id: str, stack: tuple[str, ...]) -> None:
        if entry_id in done or entry_id in stack:
            return
        inputs = (record[entry_id].get("components") or {}).get("inputs") or {}
        for p in sorted(inputs):
            dep = producers.get(p)
            if dep is not None:
                visit(dep, (*stack, entry_id))
        done.add(entry_id)
        order.append(entry_id)

    for r in sorted(roots):
        visit(r, ())
    return order


def explain(
    last: dict[str, Any],
    previous: dict[str, Any],
    label: str,
    include_hits: bool = False,
    deps: bool = True,
    manifests: ManifestLookup | None = None,
) -> str:
    """The report for `label` as text; raises UsageError when the last build had no action of it.
    With `manifests`, a changed host tool is explained by the files of its identity that changed."""
    roots = [e for e in last if _owner(e) == label]
    if not roots:
        owners = sorted({_owner(e) for e in last})
        close = difflib.get_close_matches(label, owners, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UsageError(f"the last build ran no action of {label}{hint}")
    entries = _closure(last, roots) if deps else sorted(roots)
    producers = _producers(last)
    lines: list[str] = []
    ran = hits = remote_hits = 0
    for entry_id in entries:
        entry = last[entry_id]
        before = previous.get(entry_id)
        if entry.get("cached"):
            hits += 1
            remote = entry.get("served") == "remote"
            remote_hits += remote
            # A remote hit is news (work another machine did); a local one only with --all.
            if include_hits or remote:
                lines.append(f"{entry_id}: {'remote' if remote else 'local'} cache hit")
                if before is not None and before.get("key") != entry.get("key"):
                    # Served from an older result: say what differs from the previous build.
                    lines.extend(
                        "  " + d
                        for d in diff_components(
                            before.get("components") or {}, entry.get("components") or {}, producers,
                            manifests,
                        )
                    )
            continue
        ran += 1
        where = " remotely" if entry.get("ran") == "remote" else ""
        lines.append(f"{entry_id}: ran{where} ({entry.get('origin') or 'no origin'})")
        if before is None:
            lines.append("  new action: not in any previous build recorded in this output base")
        elif before.get("key") == entry.get("key"):
            lines.append(
                "  key unchanged since the previous build: its result was not in the "
                "action cache (evicted, another --disk-cache, or that build failed)"
            )
        else:
            changes = diff_components(
                before.get("components") or {}, entry.get("components") or {}, producers, manifests
            )
            lines.extend("  " + d for d in changes or ["key changed (components not recorded)"])
    from_remote = f" ({remote_hits} remote)" if remote_hits else ""
    lines.append(f"{label}: {len(entries)} actions, {ran} ran, {hits} cache hits{from_remote}")
    return "\n".join(lines) + "\n"


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."


def diff_components(
    old: dict[str, Any], new: dict[str, Any], producers: dict[str, str] | None = None,
    manifests: ManifestLookup | None = None,
) -> list[str]:
    """What differs between two key-component records, one line per difference, in key order.

    Env values and secret HMACs are never printed, only their names.
    """
    producers = producers or {}
    out: list[str] = []
    if old.get("format") != new.get("format"):
        out.append(f"output-format version: {old.get('format')} -> {new.get('format')}")
    for field in ("kind", "builtin"):
        if old.get(field) != new.get(field):
            out.append(f"{field}: {old.get(field)!r} -> {new.get(field)!r}")
    out += _diff_inputs(old.get("inputs") or {}, new.get("inputs") or {}, producers)
    out += _diff_argv(old.get("argv") or [], new.get("argv") or [])
    out += _diff_names("env", old.get("env") or {}, new.get("env") or {}, show_values=False)
    out += _diff_params(old.get("params"), new.get("params"))
    if old.get("tools") != new.get("tools"):
        out.append(f"tools: {old.get('tools')} -> {new.get('tools')}")
    out += _diff_host_tools(old.get("host_tools") or {}, new.get("host_tools") or {}, manifests)
    for field in ("outputs", "output_dirs", "cache_dirs"):
        if old.get(field) != new.get(field):
            out.append(f"{field}: {old.get(field)} -> {new.get(field)}")
    out += _diff_names(
        "secret", old.get("secrets") or {}, new.get("secrets") or {}, show_values=False
    )
    known = {
        "format",
        "kind",
        "builtin",
        "inputs",
        "argv",
        "env",
        "params",
        "tools",
        "host_tools",
        "outputs",
        "output_dirs",
        "cache_dirs",
        "secrets",
    }
    for field in sorted((set(old) | set(new)) - known):
        if old.get(field) != new.get(field):
            out.append(f"{field} changed")
    return out


def _diff_inputs(old: dict[str, str], new: dict[str, str], producers: dict[str, str]) -> list[str]:
    out = []
    for path in sorted(set(old) | set(new)):
        a, b = old.get(path), new.get(path)
        if a == b:
            continue
        via = f" (output of {producers[path].rsplit(' ', 1)[0]})" if path in producers else ""
        if a is None:
            out.append(f"input {path}{via}: added ({b})")
        elif b is None:
            out.append(f"input {path}: removed (was {a})")
        else:
            out.append(f"input {path}{via}: {a} -> {b}")
    return out


def _diff_host_tools(
    old: dict[str, str], new: dict[str, str], manifests: ManifestLookup | None
) -> list[str]:
    """One line per host tool added, removed or changed; a changed one names the files of its
    identity that changed when both manifests are still stored, else shows the two digests."""
    from pyimg.core.tool_identity import changed_parts

    out = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            out.append(f"host tool {name}: added")
        elif name not in new:
            out.append(f"host tool {name}: removed")
        elif old[name] != new[name]:
            parts = (changed_parts(manifests(old[name]), manifests(new[name]))
                     if manifests is not None else [])
            out += [f"host tool {name}: {p}" for p in parts] or [
                f"host tool {name}: {old[name]} -> {new[name]}"]
    return out


def _diff_argv(old: list[str], new: list[str]) -> list[str]:
    out = []
    for i in range(max(len(old), len(new))):
        a = old[i] if i < len(old) else None
        b = new[i] if i < len(new) else None
        if a == b:
            continue
        if a is None:
            out.append(f"argv[{i}]: added {_short(b)!r}")
        elif b is None:
            out.append(f"argv[{i}]: removed {_short(a)!r}")
        else:
            out.append(f"argv[{i}]: {_short(a)!r} -> {_short(b)!r}")
    return out


def _diff_names(
    what: str, old: dict[str, Any], new: dict[str, Any], show_values: bool
) -> list[str]:
    out = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            out.append(f"{what} {name}: added")
        elif name not in new:
            out.append(f"{what} {name}: removed")
        elif old[name] != new[name]:
            detail = f": {old[name]} -> {new[name]}" if show_values else ": value changed"
            out.append(f"{what} {name}{detail}")
    return out


def _diff_params(old: Any, new: Any, prefix: str = "params") -> list[str]:
    if old == new:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            if key not in old:
                out.append(f"{prefix}.{key}: added {_short(new[key])}")
            elif key not in new:
                out.append(f"{prefix}.{key}: removed")
            elif old[key] != new[key]:
                out += _diff_params(old[key], new[key], f"{prefix}.{key}")
        return out
    return [f"{prefix}: {_short(old)} -> {_short(new)}"]
