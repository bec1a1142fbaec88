"""tools/bench/vs_bazel.py writes one workspace for both tools: the same graph, sources and BUILD
text for pyimg and Bazel, so that the side-by-side figures compare the same work (no Bazel run)."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools" / "bench"))
import vs_bazel  # noqa: E402


def _files(ws: Path) -> dict[str, str]:
    return {p.relative_to(ws).as_posix(): p.read_text() for p in ws.rglob("*") if p.is_file()}


def test_both_workspaces_hold_the_same_graph_and_sources(tmp_path):
    ws = vs_bazel.write_workspaces(tmp_path, targets=60)
    pyimg, bazel = _files(ws.pyimg), _files(ws.bazel)
    # Each tool's own files, and nothing else differs.
    assert pyimg.pop("MODULE.pyimg") == ""
    assert bazel.pop("WORKSPACE") == 'workspace(name = "ws")\n'
    assert "build --nosandbox_debug --color=no --curses=no\n" in bazel.pop(".bazelrc")
    assert set(bazel.pop(".bazelignore").split()) >= {"bazel-bin", "bazel-out", "bazel-testlogs",
                                                      f"bazel-{ws.bazel.name}"}
    renamed = {k.replace("BUILD.pyimg", "BUILD.bazel"): v for k, v in pyimg.items()}
    assert renamed == bazel
    # targets/5 packages, every target's deps parsed, each naming a target declared before it.
    assert len(ws.labels) == 60
    assert sum(k.endswith("BUILD.bazel") for k in bazel) == 12
    assert sorted(ws.deps) == sorted(ws.labels)
    for i, label in enumerate(ws.labels):
        assert set(ws.deps[label]) <= set(ws.labels[:i])
    assert sum(map(len, ws.deps.values())) > 0


def test_the_edited_sources_are_a_leaf_and_a_root(tmp_path):
    ws = vs_bazel.write_workspaces(tmp_path, targets=200)
    assert ws.dependents(ws.leaf) == 1
    # The first target is reached by much of the graph: the "most of the graph re-runs" row.
    assert ws.dependents(ws.root) > len(ws.labels) // 2
    for base in (ws.pyimg, ws.bazel):
        assert (base / ws.source(ws.leaf)).is_file()
        assert (base / ws.source(ws.root)).is_file()


@pytest.mark.slow
def test_pyimg_only_times_every_scenario_without_bazel(tmp_path, capsys):
    # --pyimg-only: the 50,000-target figures of pyimg alone (no Bazel server on a shared machine).
    rep = vs_bazel.measure(20, 1, tmp_path, warmup=False, skip={"root source edited"},
                           with_bazel=False)
    scenarios = rep["scenarios"]
    assert list(scenarios) == ["cold", "no-op", "leaf source edited", "BUILD file comment"]
    assert scenarios["cold"]["pyimg_actions"] == [20] and scenarios["cold"]["bazel"] == []
    assert scenarios["no-op"]["pyimg_actions"] == [0]
    assert rep["pyimg_peak_rss_mib"] > 0 and rep["bazel_server_vmhwm_mib"] == 0
    vs_bazel.print_table(rep)
    assert "| cold | - |" in capsys.readouterr().out
