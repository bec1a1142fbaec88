"""package-lock.json checks, the layout plan's edges and .npmrc credentials (no network)."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import pytest
from pyimg.errors import UserInputError
from pyimg.external.npm_lock import auth_header, check_lock, read_npmrc
from pyimg.loading.module_file import NpmLock

DECL = NpmLock("npm", "MODULE.pyimg:3:1", "web/package-lock.json", "web/package.json")
SRI = "sha512-" + base64.b64encode(hashlib.sha512(b"t").digest()).decode()


def _entry(version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {"version": version, "resolved": "https://registry.npmjs.org/x/-/x.tgz",
            "integrity": SRI, **extra}


def _check(packages: dict[str, Any], manifest: dict[str, Any] | None = None,
           version: int = 3):
    lock = {"lockfileVersion": version, "packages": packages}
    pj = manifest if manifest is not None else {
        k: v for k, v in packages[""].items() if k.endswith("ependencies")}
    return check_lock(DECL, json.dumps(lock).encode(), json.dumps(pj).encode())


def test_tree_edges_follow_node_resolution() -> None:
    tree = _check({
        "": {"dependencies": {"a": "1", "c": "1"}, "optionalDependencies": {"o": "1"}},
        "node_modules/a": _entry(),
        "node_modules/c": _entry(dependencies={"a": "2"}),
        "node_modules/c/node_modules/a": _entry("2.0.0"),
        "node_modules/o": _entry(optional=True, os=["darwin"], dependencies={"a": "1"}),
    })
    by_path = {p.path: p for p in tree.packages}
    assert by_path["node_modules/c"].deps == ("node_modules/c/node_modules/a",)
    assert by_path["node_modules/o"].deps == ("node_modules/a",)
    assert tree.root_deps == ("node_modules/a", "node_modules/c", "node_modules/o")
    assert by_path["node_modules/c/node_modules/a"].name == "a"


def test_public_registry_urls_move_to_a_mirror() -> None:
    decl = NpmLock("npm", "M:1:1", "package-lock.json", "package.json",
                   registry="https://npm.example.com/repo")
    lock = {"lockfileVersion": 3, "packages": {"": {"dependencies": {"x": "1"}},
                                                "node_modules/x": _entry()}}
    tree = check_lock(decl, json.dumps(lock).encode(), b'{"dependencies": {"x": "1"}}')
    assert tree.packages[0].url == "https://npm.example.com/repo/x/-/x.tgz"


@pytest.mark.parametrize(("packages", "manifest", "message"), [
    ({"": {"dependencies": {"x": "1"}}, "node_modules/x": _entry()}, {"dependencies": {"x": "2"}},
     "out of date with web/package.json: dependencies of 'x' is '2' in web/package.json but "
     "'1' in the lock"),
    ({"": {"dependencies": {"x": "1"}}}, None, "depends on 'x', which has no entry"),
    ({"": {}, "node_modules/y": _entry(dependencies={"z": "1"})}, None,
     "package 'node_modules/y' depends on 'z'"),
    ({"": {}, "node_modules/y": {"version": "1.0.0", "resolved": "https://r/y.tgz"}}, None,
     "has no 'integrity'"),
    ({"": {}, "node_modules/y": _entry(resolved="git+ssh://git@github.com/y.git")}, None,
     "git, file: and directory dependencies are not supported"),
    ({"": {}, "packages/y": _entry(), "node_modules/y": {"resolved": "packages/y", "link": True}},
     None, "web/package-lock.json: package 'node_modules/y' is a link to the local directory "
     "'packages/y' (an npm workspace or a `file:` dependency): pyimg installs only registry "
     "tarballs pinned by integrity"),
    ({"": {}, "packages/y": _entry()}, None,
     "package 'packages/y' is a local directory, not a node_modules entry"),
    ({"": {}, "node_modules/y": _entry(bin={"y": "../../etc/passwd"})}, None,
     "points outside the package"),
    ({"": {}, "node_modules/y": _entry(bin={"../y": "y.js"})}, None, "is not a file name"),
])
def test_refusals(packages: dict[str, Any], manifest: dict[str, Any] | None,
                  message: str) -> None:
    with pytest.raises(UserInputError, match=None) as e:
        _check(packages, manifest)
    assert message in e.value.message and e.value.origin == "MODULE.pyimg:3:1"
    assert "npm_lock 'npm'" in e.value.message


def test_lockfile_v1_refused() -> None:
    with pytest.raises(UserInputError, match="lockfileVersion 1"):
        check_lock(DECL, b'{"lockfileVersion": 1, "dependencies": {}}', b"{}")


def test_npmrc_tokens() -> None:
    settings = read_npmrc([
        "//registry.example.com/:_authToken=user-token\n",
        "; comment\n//registry.example.com/team/:_authToken=${TEAM_TOKEN}\n"
        "//other.example.com:8080/:_auth=dTpw\nregistry=https://x\n",
    ], {"TEAM_TOKEN": "team"})
    assert auth_header("https://registry.example.com/team/a/-/a-1.tgz", settings) == "Bearer team"
    assert auth_header("https://registry.example.com/b/-/b-1.tgz", settings) == "Bearer user-token"
    assert auth_header("http://other.example.com:8080/c/-/c.tgz", settings) == "Basic dTpw"
    assert auth_header("https://registry.npmjs.org/c/-/c.tgz", settings) is None
