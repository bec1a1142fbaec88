"""The per-action record of the last build that `pyimg explain` reads, and its journal.

`last_build.json` holds every action of the last build (key, hit or not, origin, key components)
and `previous_build.json` each action's latest record before that build; both are keyed by
"<owner> <mnemonic> <first output>". Rewriting them costs tens of milliseconds for a thousand
actions, more than an incremental build may spend, so a build that changes a few entries (an
incremental build, a replayed no-op) writes only `build_journal.json`:

    {"base": sha256 of the last_build.json it applies to,
     "cached": every entry of that file counts as a cache hit,
     "merged": null, or that file's entries are part of the previous record, as they are in it
               ("file") or each as a cache hit ("hits"),
     "last": entries that replace the file's, "previous": entries that replace the merged ones}

`load_build_records` composes the two views; a journal whose `base` does not match the file (a
save interrupted between its writes) is ignored. A full build whose record is the last one with
a few entries changed and every other action a local hit of the same (a BUILD edit that changes
a target or two) journals them too; any other full build rewrites both files and resets it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pyimg.core.cas import atomic_file, atomic_write_bytes
from pyimg.core.digest import canonical_json

if TYPE_CHECKING:
    from pyimg.core.executor import ExecutionRecord

__all__ = [
    "entries",
    "load_build_records",
    "mark_all_cached",
    "record_base",
    "save_build_record",
    "update_build_record",
]

LAST = "last_build.json"
PREVIOUS = "previous_build.json"
JOURNAL = "build_journal.json"
FILES = (LAST, PREVIOUS, JOURNAL)  # what `pyimg clean` removes
V = TypeVar("V")
# Below this many actions a full build rewrites the records: cheaper than comparing them.
_JOURNAL_FROM = 256
_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")


def entries(records: Iterable[ExecutionRecord]) -> dict[str, Any]:
    """The record of each action that ran or was looked up, by its id."""
    return {
        f"{r.action.owner} {r.action.mnemonic} {r.action.all_outputs[0]}": {
            "key": str(r.key),
            "cached": r.cached,
            # A hit from --remote-cache says so (`explain`), as does an action that ran on a
            # --remote-executor; any other hit was local, any other action ran here.
            **({"served": "remote"} if r.cached and r.served == "remote" else {}),
            **({"ran": "remote"} if not r.cached and r.served == "remote-exec" else {}),
            "origin": r.action.origin,
            "components": r.components,
        }
        for r in records
    }


def save_build_record(output_base: Path, data: dict[str, Any]) -> None:
    """Make `data` the last build's record; the one it replaces is merged into the previous one.

    The previous record keeps each action's latest record before this build, also for actions
    this build did not need, so `explain` compares with the previous build *of that action*.

    The records are merged as the JSON text of each entry, never parsed whole: at 10,000 actions
    the last record is 10 MB of text but 80 MiB of Python objects, held at the end of a build
    beside everything else the build holds (docs/benchmarks.md, "Scale").
    """
    base_raw = _read_bytes(output_base / LAST)
    journal = _journal_for(output_base, base_raw)
    if journal is not None and len(data) >= _JOURNAL_FROM:
        changed = _changed_since(base_raw, journal, data)
        if changed is not None and update_build_record(output_base, journal["base"], changed):
            return
    raw = canonical_json(data)
    if base_raw == raw and _plain(journal):
        if journal is None:
            _write_journal(output_base, _fresh_journal(raw, data))
        return  # a repeated build: both records already say the same
    older = _entry_texts(base_raw)
    del base_raw  # its entries' texts hold all of it (the peak is what counts here)
    previous: dict[str, bytes] | None = None
    if journal is not None:
        previous = _entry_texts(_read_bytes(output_base / PREVIOUS))
        older, previous = _views(older, previous, journal, _as_local_hit_text, canonical_json)
        if _joined(older) == raw:
            return
    if older:
        if previous is None:
            previous = _entry_texts(_read_bytes(output_base / PREVIOUS))
        previous.update(older)
        _write_joined(output_base / PREVIOUS, previous)
    atomic_write_bytes(output_base / LAST, raw)
    _write_journal(output_base, _fresh_journal(raw, data))


def _changed_since(base_raw: bytes, journal: dict[str, Any], data: dict[str, Any]
                   ) -> dict[str, Any] | None:
    """The entries of `data` that `update_build_record` must record for the whole of `data` to
    be the last record: every other entry is a local hit of the last record's (as a no-op
    records it). None when `data` has other actions, or when so many changed that the journal
    would hold a good part of the record (then the files are rewritten)."""
    texts = _entry_texts(base_raw)
    if texts.keys() != data.keys():
        return None
    newest = journal["last"]
    limit = len(data) // 4
    changed: dict[str, Any] = {}
    for k, entry in data.items():
        if not _local_hit(entry) or not _hit_of(entry, newest.get(k), texts[k]):
            changed[k] = entry
            if len(changed) > limit:
                return None
    # The journal keeps every entry changed since the files were written: bounded, too.
    return changed if len(newest.keys() | changed.keys()) <= limit else None


def _hit_of(entry: dict[str, Any], journaled: dict[str, Any] | None, text: bytes) -> bool:
    """Whether the local hit `entry` is what a no-op records for the last record's entry: the
    journal's (`journaled`), else the file's (`text`), compared as text first (no parse when the
    file already records the same hit, or the same action as run here)."""
    if journaled is not None:
        return _as_local_hit(journaled) == entry
    if text == canonical_json(entry) or text == canonical_json({**entry, "cached": False}):
        return True
    try:
        return _as_local_hit(json.loads(text)) == entry
    except ValueError:
        return False


def update_build_record(output_base: Path, base: str, changed: dict[str, Any]) -> bool:
    """Record a build of the same actions as the last one, in which only the entries `changed`
    differ and every other action was a cache hit, as `save_build_record` of the whole would.

    Every entry of `changed` must be an action of the recorded build with another key (one
    re-keyed); `base` is the `record_base` that build left. False (nothing written) when the
    record is another build's by now.
    """
    journal = _read_journal(output_base)
    if journal is None or journal["base"] != base:
        return False
    if not changed and journal["cached"] and all(map(_local_hit, journal["last"].values())):
        return True  # the same record again: nothing moves into the previous one
    # The previous record becomes (previous + last before this build). The journal's ids are
    # all in the file, so that is: the merged file, with the journal's last entries on top.
    _write_journal(output_base, {
        "base": base,
        "cached": True,
        "merged": "hits" if journal["cached"] else "file",
        "previous": journal["last"],
        "last": {**{k: _as_local_hit(v) for k, v in journal["last"].items()}, **changed},
    })
    return True


def mark_all_cached(output_base: Path) -> None:
    """What a no-op build records: the same actions and keys, every one a cache hit."""
    journal = _read_journal(output_base)
    if journal is None:  # an output base from before the journal
        raw = _read_bytes(output_base / LAST)
        if not raw:
            return
        journal = _fresh_journal(raw, _parse(raw))
        _write_journal(output_base, journal)
    update_build_record(output_base, journal["base"], {})


def record_base(output_base: Path) -> str | None:
    """The identity of the last build's record, for `update_build_record` by a later build."""
    journal = _read_journal(output_base)
    return None if journal is None else journal["base"]


def load_build_records(output_base: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(last, previous) as `explain` reads them; raises ValueError naming a file that is not a
    JSON object."""
    base_raw = _read_bytes(output_base / LAST)
    last = _parse(base_raw, strict=output_base / LAST)
    previous = _parse(_read_bytes(output_base / PREVIOUS), strict=output_base / PREVIOUS)
    journal = _journal_for(output_base, base_raw)
    if journal is None:
        return last, previous
    return _views(last, previous, journal, _as_local_hit, _same)


def _views(
    last: dict[str, V], previous: dict[str, V], journal: dict[str, Any],
    as_hit: Callable[[V], V], journaled: Callable[[Any], V],
) -> tuple[dict[str, V], dict[str, V]]:
    """(last, previous) with the journal applied; entries are objects or their JSON texts
    (`as_hit` turns one into a local hit, `journaled` makes one of a journal entry)."""
    hits = {k: as_hit(v) for k, v in last.items()} if journal["cached"] or journal["merged"] == "hits" else {}
    merged = dict(previous)
    if journal["merged"]:
        merged.update(hits if journal["merged"] == "hits" else last)
        merged.update({k: journaled(v) for k, v in journal["previous"].items()})
    newest = {k: journaled(v) for k, v in journal["last"].items()}
    return {**(hits if journal["cached"] else last), **newest}, merged


def _local_hit(entry: dict[str, Any]) -> bool:
    """Whether a record entry says what a replayed no-op says of every action: a local hit."""
    return bool(entry.get("cached")) and "served" not in entry


def _as_local_hit(entry: dict[str, Any]) -> dict[str, Any]:
    """The entry as a replayed no-op records it: a hit of the local cache."""
    return {**{k: v for k, v in entry.items() if k not in ("served", "ran")}, "cached": True}


def _as_local_hit_text(text: bytes) -> bytes:
    return canonical_json(_as_local_hit(json.loads(text)))


def _same(entry: Any) -> Any:
    return entry


def _entry_texts(raw: bytes) -> dict[str, bytes]:
    """The entries of a record file, each value as its own JSON text, parsed one at a time (the
    objects of one entry are dropped before the next is read); {} for a file that is not a JSON
    object, as `_parse` gives. A canonical file's texts are each value's canonical JSON."""
    texts: dict[str, bytes] = {}
    try:
        text = raw.decode()
        i = _skip_space(text, 0)
        if text[i] != "{":
            return {}
        i = _skip_space(text, i + 1)
        if text[i] == "}":
            return {} if text[i + 1:].strip() else texts
        while True:
            key, i = _DECODER.raw_decode(text, i)
            i = _skip_space(text, i)
            if not isinstance(key, str) or text[i] != ":":
                return {}
            start = _skip_space(text, i + 1)
            _value, end = _DECODER.raw_decode(text, start)
            texts[key] = text[start:end].encode()
            i = _skip_space(text, end)
            if text[i] == "}":
                return {} if text[i + 1:].strip() else texts
            if text[i] != ",":
                return {}
            i = _skip_space(text, i + 1)
    except (ValueError, IndexError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return {}


def _skip_space(text: str, i: int) -> int:
    blank = _SPACE.match(text, i)
    return blank.end() if blank else i


def _joined(texts: dict[str, bytes]) -> bytes:
    """The canonical JSON of the object whose entries' texts are `texts` (keys sorted, as
    canonical_json sorts them)."""
    return b"{" + b",".join(canonical_json(k) + b":" + v for k, v in sorted(texts.items())) + b"}"


def _write_joined(path: Path, texts: dict[str, bytes]) -> None:
    """Write `_joined(texts)` to `path` atomically, entry by entry (never the whole in memory)."""
    with atomic_file(path) as f:
        f.write(b"{")
        for n, (key, text) in enumerate(sorted(texts.items())):
            f.write(b"," if n else b"")
            f.write(canonical_json(key) + b":")
            f.write(text)
        f.write(b"}")


def _fresh_journal(raw: bytes, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "base": hashlib.sha256(raw).hexdigest(),
        "cached": all(map(_local_hit, data.values())),
        "merged": None,
        "previous": {},
        "last": {},
    }


def _plain(journal: dict[str, Any] | None) -> bool:
    """Whether the views are the files themselves: a journal that no build updated yet (its
    `cached` flag then says what the file says), or none."""
    return journal is None or not journal["merged"]


def _journal_for(output_base: Path, base_raw: bytes) -> dict[str, Any] | None:
    journal = _read_journal(output_base)
    if journal is None or journal["base"] != hashlib.sha256(base_raw).hexdigest():
        return None  # none, or left by a save interrupted between its writes
    return journal


def _read_journal(output_base: Path) -> dict[str, Any] | None:
    try:
        journal = json.loads(_read_bytes(output_base / JOURNAL) or b"null")
    except ValueError:
        return None
    if not isinstance(journal, dict) or not isinstance(journal.get("base"), str):
        return None
    return journal


def _write_journal(output_base: Path, journal: dict[str, Any]) -> None:
    atomic_write_bytes(output_base / JOURNAL, canonical_json(journal))


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


def _parse(raw: bytes, strict: Path | None = None) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw else {}
    except ValueError:
        if strict is not None:
            raise ValueError(str(strict)) from None
        return {}
    if not isinstance(data, dict):
        if strict is not None:
            raise ValueError(str(strict))
        return {}
    return data
