"""MODULE.pyimg: the pip_lock declaration and its refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pyimg.errors import UserInputError
from pyimg.loading.module_file import PipLock, parse_module


def _parse(tmp_path: Path, text: str) -> PipLock:
    (tmp_path / "requirements.txt").write_text("flask==3.0.0 --hash=sha256:" + "a" * 64 + "\n")
    (tmp_path / "pylock.toml").write_text('lock-version = "1.0"\n')
    decl = parse_module(text, tmp_path / "MODULE.pyimg").declarations[0]
    assert isinstance(decl, PipLock)
    return decl


def test_pip_lock(tmp_path: Path) -> None:
    decl = _parse(tmp_path, """
pip_lock(name = "pypi", requirements = "requirements.txt", python_version = "3.11",
         platforms = ["linux/amd64", "linux/arm64"], index_url = "https://idx/simple/",
         extra_index_urls = ["https://other/simple"], glibc = "2.36")
""")
    assert decl.origin == "MODULE.pyimg:2:1" and decl.source == "requirements.txt"
    assert decl.source_sha256 == hashlib.sha256(
        (tmp_path / "requirements.txt").read_bytes()).hexdigest()
    assert decl.platforms == ("linux/amd64", "linux/arm64")
    assert decl.index_url == "https://idx/simple" and decl.extra_index_urls == ("https://other/simple",)
    assert (decl.glibc, decl.musl, decl.is_pylock) == ("2.36", None, False)
    lock = _parse(tmp_path, 'pip_lock(name = "p", lock = "pylock.toml", python_version = "3.12")')
    assert lock.is_pylock and lock.platforms == ("linux/amd64",)
    assert lock.index_url == "https://pypi.org/simple"


@pytest.mark.parametrize(("args", "message"), [
    ('python_version = "3.11"', "give one of 'requirements'"),
    ('requirements = "requirements.txt", lock = "pylock.toml", python_version = "3.11"', "give one of"),
    ('requirements = "../requirements.txt", python_version = "3.11"', "inside the workspace"),
    ('requirements = "missing.txt", python_version = "3.11"', "cannot read 'missing.txt'"),
    ('lock = "requirements.txt", python_version = "3.11"', "PEP 751 file"),
    ('requirements = "requirements.txt"', "'python_version'"),
    ('requirements = "requirements.txt", python_version = "3"', "'python_version'"),
    ('requirements = "requirements.txt", python_version = "3.11", platforms = ["windows/amd64"]',
     "'platforms'"),
    ('requirements = "requirements.txt", python_version = "3.11", index_url = "ftp://x"',
     "must start with https://"),
    ('requirements = "requirements.txt", python_version = "3.11", glibc = "2_28"', "'glibc'"),
])
def test_bad_pip_lock(tmp_path: Path, args: str, message: str) -> None:
    with pytest.raises(UserInputError) as e:
        _parse(tmp_path, f'pip_lock(name = "pypi", {args})')
    assert "MODULE.pyimg:1:1: pip_lock 'pypi'" in str(e.value) and message in str(e.value)
