"""The `pyimg build` command line an attestation command stands for (cli/sbom.py)."""

from __future__ import annotations

from pyimg.cli.sbom import build_command_line

SBOM = {"--format": True, "-o": True, "--output": True}
PROVENANCE = {"-o": True, "--output": True, "--include-run-details": False}


def test_the_command_s_own_options_are_left_out_in_every_form() -> None:
    argv = ["sbom", "--disk-cache", "/c", "//:i", "--format", "cyclonedx-json", "-o", "f",
            "--output=g", "-oh", "--format=spdx-json", "--jobs", "2"]
    assert build_command_line(argv, SBOM) == ["build", "--disk-cache", "/c", "//:i", "--jobs",
                                              "2"]
    argv = ["provenance", "//:a", "--include-run-details", "//:b", "--output", "x"]
    assert build_command_line(argv, PROVENANCE) == ["build", "//:a", "//:b"]


def test_words_after_a_double_dash_are_patterns() -> None:
    assert build_command_line(["sbom", "--", "-o"], SBOM) == ["build", "--", "-o"]
