"""The actions of targets with the keys a build would compute now (`pyimg aquery`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyimg.core.session import cwd_package
from pyimg.errors import UserInputError
from pyimg.labels import LabelError, parse_pattern
from pyimg.query.graph import SOURCE_FILE

if TYPE_CHECKING:
    from pyimg.core.action import Action

__all__ = ["action_rows"]


def action_rows(session: Any, text: str, platforms: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The actions of the targets `text` matches, in each configuration they are analysed in
    (for `platforms`, and those transitions reach), with the keys a build would compute now.

    A key needs the digests of all inputs; a generated input's digest is known only when the action
    that produces it is in the action cache (then `cached` is true for that action). Otherwise
    `key` is null and `key_note` says which input is missing.
    """
    from pyimg.build.build import analyze, repositories
    from pyimg.query.language import Word, parse_query
    from pyimg.query.serve import query_engine

    expr = parse_query(text, session.cache_root / "parsers")
    repos = repositories(session)
    try:
        if isinstance(expr, Word) and _is_wildcard(expr.text, session.workspace):
            # `//...` or `:all` goes straight to analysis (one loading pass, as in `pyimg build`).
            _, analysis = analyze(session, [expr.text], repos, platforms=platforms)
            owners = {analysis.targets[k].label for k in analysis.top_level}
        else:
            engine = query_engine(session, text, repos)
            graph = engine.graph
            wanted = [
                str(graph.labels[n])
                for n in engine.sorted_nodes(engine.evaluate(expr))
                if graph.kind(n) != SOURCE_FILE
            ]
            if not wanted:
                return []
            _, analysis = analyze(session, wanted, repos, platforms=platforms)
            owners = set(wanted)
    finally:
        repos.close()
    from pyimg.oci.platforms import host_platform

    host = str(host_platform())
    targets = sorted((t for t in analysis.targets.values() if t.label in owners),
                     key=lambda t: (t.label, t.configuration))
    selected = [(t, a) for t in targets for a in t.actions]
    keys = _keys(session, analysis.actions(), [a for _, a in selected], repos.source_path)
    return [_row(a, keys.get(a.all_outputs[0]), t.configuration, host) for t, a in selected]


def _is_wildcard(text: str, workspace: Path) -> bool:
    try:
        p = parse_pattern(text, cwd_package(workspace))
    except LabelError:
        return False
    return p.recursive or p.name is None


def _keys(
    session: Any, actions: list[Action], selected: list[Action], source_root: Any
) -> dict[str, tuple[Any, ...]]:
    """(key, cached, note) per action (by its first output), computed exactly as ActionExecutor.execute does."""
    import threading

    from pyimg.actions.builtins import load_builtins
    from pyimg.build.execution import current_format_version
    from pyimg.core.action import action_key
    from pyimg.core.executor import ActionExecutor, BuildContext
    from pyimg.core.scheduler import ActionGraph

    graph = ActionGraph(actions)
    digests = session.digest_cache()
    cas, cache = session.stores(digests)
    ctx = BuildContext(
        workspace=session.workspace,
        cache_root=session.cache_root,
        scratch_root=session.output_base / "scratch",
        source_root=source_root,
        format_version=current_format_version(),
        builtins=load_builtins(),
        cancel=threading.Event(),
    )
    executor = ActionExecutor(ctx, cas, cache, digests)
    out: dict[str, tuple[Any, ...]] = {}
    order = graph.closure(p for a in selected for p in a.all_outputs)
    for action in order:
        missing = [
            p
            for p in action.inputs + action.tools
            if p in graph.producer and executor.produced(p) is None
        ]
        if missing:
            out[action.all_outputs[0]] = (None, False, f"unknown until {missing[0]} is built")
            continue
        try:
            components = executor.components(action)
        except UserInputError as e:
            out[action.all_outputs[0]] = (None, False, e.message)
            continue
        key = action_key(components)
        result = cache.get(key)
        if result is not None:
            executor.record_result(action, result)
        out[action.all_outputs[0]] = (key, result is not None, "")
    return out


def _row(action: Action, key: tuple[Any, ...] | None, configuration: str,
         host: str) -> dict[str, Any]:
    digest, cached, note = key or (None, False, "not analyzed")
    row: dict[str, Any] = {
        "mnemonic": action.mnemonic,
        "target": action.owner,
        # The requested configuration's platform ("": the default one, this machine's platform).
        "configuration": configuration,
        "platform": configuration or host,
        "origin": action.origin,
        "kind": action.kind,
        "inputs": list(action.inputs),
        "tools": list(action.tools),
        "host_tools": list(action.host_tools),
        "outputs": list(action.outputs),
        "output_dirs": list(action.output_dirs),
        "argv": list(action.argv),
        "builtin": action.builtin,
        "params": action.params,
        # Names only: values may be credentials, and the key already covers them.
        "env": sorted(name for name, _ in action.env),
        "secrets": sorted(action.secrets),
        "key": str(digest) if digest is not None else None,
        "cached": cached,
    }
    if note:
        row["key_note"] = note
    return row
