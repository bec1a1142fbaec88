"""attest/provenance.py: the source identity outside git is a digest of what the build read."""

from __future__ import annotations

from pathlib import Path

from pyimg.attest.provenance import source_identity


def test_source_identity_outside_git_is_the_digest_of_the_files_read(tmp_path: Path) -> None:
    one = source_identity(tmp_path, {"a.txt": "1" * 64, "BUILD.pyimg": "2" * 64})
    assert set(one) == {"digest"}
    # The order of reading does not matter; a file's content does.
    assert one == source_identity(tmp_path, {"BUILD.pyimg": "2" * 64, "a.txt": "1" * 64})
    assert one != source_identity(tmp_path, {"a.txt": "3" * 64, "BUILD.pyimg": "2" * 64})
