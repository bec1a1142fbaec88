"""pip_lock entries: what they pin, refusing a hand-edited one, the repository they become."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from pyimg.errors import UserInputError
from pyimg.external.python_lock import (
    WheelPin,
    pip_entry_covers,
    pip_entry_pins,
    render_pip_entry,
    target_name,
    write_pip_repo,
)
from pyimg.loading.module_file import PipLock

DECL = PipLock("pypi", "MODULE.pyimg:1:1", "requirements.txt", "f" * 64, "3.11",
               ("linux/amd64",), "https://pypi.org/simple")


def _wheel(name: str, deps: list[str]) -> dict[str, object]:
    return {"deps": deps, "file": f"{name}-1.0-py3-none-any.whl", "sha256": "a" * 64,
            "url": f"https://files/{name}-1.0-py3-none-any.whl", "version": "1.0"}


ENTRY = {
    "digest": "sha256:" + "0" * 64, "glibc": "2.28", "index_urls": ["https://pypi.org/simple"],
    "kind": "pip_lock", "musl": None, "platforms": ["linux/amd64"], "python_version": "3.11",
    "source": "requirements.txt", "source_sha256": "f" * 64,
    "wheels": {"linux/amd64": {"flask": _wheel("flask", ["jinja2"]), "jinja2": _wheel("jinja2", []),
                               "typing-extensions": _wheel("typing_extensions", [])}},
}


def test_pins_and_covers() -> None:
    assert pip_entry_covers(DECL, ENTRY)
    pins = pip_entry_pins(DECL, ENTRY)["linux/amd64"]
    assert [p.name for p in pins] == ["flask", "jinja2", "typing-extensions"]
    assert pins[0].deps == ("jinja2",)
    edited = PipLock(**{**DECL.__dict__, "source_sha256": "e" * 64})
    assert not pip_entry_covers(edited, ENTRY)  # requirements.txt changed: stale


@pytest.mark.parametrize("edit", [
    lambda w: w["flask"].update(file="../../etc/passwd.whl"),
    lambda w: w["flask"].update(sha256="nothex"),
    lambda w: w["flask"].update(deps=["not-in-the-lock"]),
    lambda w: w.pop("jinja2") and None,
    lambda w: w["flask"].pop("url"),
])
def test_hand_edited_entry_refused(edit) -> None:  # noqa: ANN001
    entry = copy.deepcopy(ENTRY)
    edit(entry["wheels"]["linux/amd64"])
    with pytest.raises(UserInputError, match="pip_lock 'pypi' is malformed"):
        pip_entry_pins(DECL, entry)


def test_render_one_wheel_per_line() -> None:
    import json

    text = render_pip_entry(ENTRY)
    assert json.loads(text) == ENTRY
    assert len([line for line in text.splitlines() if '"sha256"' in line]) == 3


def test_repository(tmp_path: Path) -> None:
    pins = pip_entry_pins(DECL, ENTRY)
    linked: list[str] = []

    def link(pin: WheelPin, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(pin.name)
        linked.append(path.name)

    write_pip_repo(DECL, pins, tmp_path, link)
    assert sorted(linked) == sorted(p.filename for p in pins["linux/amd64"])
    flask = (tmp_path / "flask" / "BUILD.pyimg").read_text()
    assert ('closure = {"linux/amd64": "flask-1.0-py3-none-any.whl '
            'jinja2-1.0-py3-none-any.whl"}') in flask
    assert target_name("typing-extensions") == "typing_extensions"
    assert (tmp_path / "typing_extensions" / "BUILD.pyimg").is_file()
    assert 'py_package(name = "all"' in (tmp_path / "BUILD.pyimg").read_text()
    assert "exports_files" in (tmp_path / "wheels" / "BUILD.pyimg").read_text()
