"""Build secrets: the `SecretProvider` the executor asks, and `SecretStore`, the `--secret` values.

A secret's value lives in this process's memory and, while an action that declared it runs, in one
file of a private 0700 directory outside the cache root (docs/sandbox-secrets-caches.md,
"Secrets"). Everything else sees only `SecretStore.keyed_hash(id)`: an HMAC-SHA256 under a random
per-user key kept at `<cache_root>/secret.key`, so a cache entry changes with the secret but does
not allow guessing it.
"""

from __future__ import annotations

import base64
import hmac
import os
import re
import secrets as _random
import shutil
import tempfile
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pyimg.errors import UsageError

__all__ = [
    "KEY_FILE",
    "SecretLeak",
    "SecretProvider",
    "SecretSource",
    "SecretStore",
    "contains_secret",
    "leak_patterns",
    "parse_secret_flag",
    "redact",
    "scan_files",
    "valid_secret_id",
]

KEY_FILE = "secret.key"
_KEY_BYTES = 32
_ID_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Encoded forms shorter than this are not searched for: they would match ordinary output by chance.
# The raw value is always searched for, whatever its length.
_MIN_ENCODED_LEN = 6
_CHUNK = 1 << 20


def valid_secret_id(sid: str) -> bool:
    """Ids become environment variable names (`PYIMG_SECRET_<id>`), hence the C-identifier rule."""
    return bool(_ID_RE.match(sid))


@dataclass(frozen=True)
class SecretSource:
    """Where one `--secret` comes from: a file (`src`) or an environment variable (`env`)."""

    id: str
    src: str | None = None
    env: str | None = None


def parse_secret_flag(text: str) -> SecretSource:
    """`id=ID,src=PATH` or `id=ID,env=VAR` (docker/buildkit syntax). Raises UsageError."""
    fields: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or key not in ("id", "src", "env") or key in fields:
            raise UsageError(f"--secret {_shown(text)}: expected id=ID,src=PATH or id=ID,env=VAR")
        fields[key] = value
    sid = fields.get("id", "")
    if not valid_secret_id(sid):
        raise UsageError(f"--secret: id {sid!r} must match [A-Za-z_][A-Za-z0-9_]*")
    if ("src" in fields) == ("env" in fields):
        raise UsageError(f"--secret id={sid}: give exactly one of src=PATH or env=VAR")
    if "src" in fields:
        if not fields["src"]:
            raise UsageError(f"--secret id={sid}: src= is empty")
        return SecretSource(sid, src=os.path.expanduser(fields["src"]))
    if not fields["env"]:
        raise UsageError(f"--secret id={sid}: env= is empty")
    return SecretSource(sid, env=fields["env"])


def _shown(text: str) -> str:
    # The flag holds paths and variable names, never values; still, keep error lines short.
    return text if len(text) <= 80 else text[:77] + "..."


class SecretProvider(Protocol):
    """The secrets of one build, as the executor uses them; called from several threads at once.

    The build closes the provider when it ends, also on failure and Ctrl-C: no file that
    `private_file` handed out may outlive it.
    """

    def ids(self) -> frozenset[str]:
        """The ids of the secrets given."""
        ...

    def keyed_hash(self, sid: str) -> str:
        """What enters the action key for secret `sid`: changes with the value, reveals nothing."""
        ...

    def private_file(self, sid: str) -> Path:
        """A fresh read-only file holding the value, for one command; `release` removes it."""
        ...

    def release(self, path: Path) -> None:
        """Removes a file `private_file` returned."""
        ...

    def redact(self, sids: Collection[str], text: bytes) -> bytes:
        """A command's log with the values (raw or encoded) of the secrets `sids` hidden."""
        ...

    def find_leak(
        self, sids: Collection[str], files: Iterable[tuple[str, Path]]
    ) -> SecretLeak | None:
        """The first (output name, path) of `files` holding a value of the secrets `sids`."""
        ...

    def close(self) -> None:
        """Removes every file handed out."""
        ...


class SecretStore:
    """The `--secret` values of one build: a `SecretProvider`. Thread-safe.

    Values are read when the store is made (a missing file or variable is a UsageError then, before
    anything runs). The store never puts a value into an exception message or a repr.
    """

    def __init__(
        self,
        sources: Iterable[SecretSource],
        cache_root: Path,
        environ: Mapping[str, str] | None = None,
        private_parent: Path | None = None,
    ) -> None:
        environ = os.environ if environ is None else environ
        self._cache_root = cache_root
        self._values: dict[str, bytes] = {}
        for s in sources:  # a later flag wins: the command line overrides .pyimgrc
            self._values[s.id] = _read_value(s, environ)
        self._key: bytes | None = None
        self._private_parent = private_parent
        self._dir: Path | None = None
        self._lock = threading.Lock()
        self._counter = 0
        self._patterns: dict[str, tuple[bytes, ...]] = {}

    def __repr__(self) -> str:
        return f"SecretStore(ids={sorted(self._values)})"

    def ids(self) -> frozenset[str]:
        return frozenset(self._values)

    def __contains__(self, sid: object) -> bool:
        return sid in self._values

    def keyed_hash(self, sid: str) -> str:
        """What enters the action key for secret `sid`: HMAC-SHA256 under the per-user key."""
        value = self._value(sid)
        with self._lock:
            if self._key is None:
                self._key = load_or_create_key(self._cache_root)
            key = self._key
        return "hmac-sha256:" + hmac.new(key, value, "sha256").hexdigest()

    def private_file(self, sid: str) -> Path:
        """A fresh read-only file holding the value, for one action; the caller deletes it when the
        action ends (and `close()` deletes whatever is left)."""
        value = self._value(sid)
        with self._lock:
            if self._dir is None:
                self._dir = _private_dir(self._private_parent, self._cache_root)
            self._counter += 1
            d = self._dir / str(self._counter)
            d.mkdir(mode=0o700)
        path = d / sid
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
        try:
            os.write(fd, value)
        finally:
            os.close(fd)
        return path

    def release(self, path: Path) -> None:
        """Deletes a file `private_file()` returned (and its per-action directory)."""
        shutil.rmtree(path.parent, ignore_errors=True)

    def redact(self, sids: Collection[str], text: bytes) -> bytes:
        return redact(text, {sid: self.patterns(sid) for sid in sids})

    def find_leak(
        self, sids: Collection[str], files: Iterable[tuple[str, Path]]
    ) -> SecretLeak | None:
        return scan_files(files, {sid: self.patterns(sid) for sid in sids})

    def patterns(self, sid: str) -> tuple[bytes, ...]:
        """The byte strings whose presence in an output means the secret leaked."""
        with self._lock:
            hit = self._patterns.get(sid)
        if hit is None:
            hit = leak_patterns(self._value(sid))
            with self._lock:
                self._patterns[sid] = hit
        return hit

    def close(self) -> None:
        with self._lock:
            d, self._dir = self._dir, None
        if d is not None:
            shutil.rmtree(d, ignore_errors=True)

    def __enter__(self) -> SecretStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _value(self, sid: str) -> bytes:
        try:
            return self._values[sid]
        except KeyError:
            raise UsageError(f"secret '{sid}' was not given (--secret id={sid},...)") from None


def _read_value(s: SecretSource, environ: Mapping[str, str]) -> bytes:
    if s.src is not None:
        try:
            with open(s.src, "rb") as f:
                return f.read()
        except OSError as e:
            raise UsageError(f"--secret id={s.id}: cannot read {s.src}: {e.strerror}") from None
    assert s.env is not None
    if s.env not in environ:
        raise UsageError(f"--secret id={s.id}: environment variable {s.env} is not set")
    return os.fsencode(environ[s.env])


def load_or_create_key(cache_root: Path) -> bytes:
    """The per-user HMAC key, made once with mode 0600; concurrent builds agree on one key."""
    path = cache_root / KEY_FILE
    for _ in range(3):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            _create_key(path)
            continue
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_mode & 0o077:
                os.fchmod(f.fileno(), 0o600)  # never leave the key readable by others
            key = f.read()
        if len(key) == _KEY_BYTES:
            return key
        raise UsageError(f"{path} is not a pyimg secret key (remove it to make a new one)")
    raise UsageError(f"cannot create {path}")


def _create_key(path: Path) -> None:
    # Written to a temp file with mode 0600 from the start, then linked into place: link() fails
    # when another build made the key first, so nobody ever reads a half-written key.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-secret-key-")
    try:
        os.write(fd, _random.token_bytes(_KEY_BYTES))
        os.fsync(fd)
        os.close(fd)
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)


def _private_dir(parent: Path | None, cache_root: Path) -> Path:
    # /dev/shm is a tmpfs: the value never reaches a disk. Never under the cache root (that would
    # put it next to the content store and into anything that copies the cache).
    candidates = [parent] if parent is not None else []
    candidates += [Path("/dev/shm"), Path(tempfile.gettempdir())]
    root = os.path.realpath(cache_root)
    for c in candidates:
        if c is None or not c.is_dir() or not os.access(c, os.W_OK | os.X_OK):
            continue
        real = os.path.realpath(c)
        if real == root or real.startswith(root.rstrip("/") + "/"):
            continue
        try:
            return Path(tempfile.mkdtemp(prefix="pyimg-secrets-", dir=c))  # mode 0700
        except OSError:
            continue
    raise UsageError("no private temporary directory for secrets (tried /dev/shm and $TMPDIR)")


def leak_patterns(value: bytes) -> tuple[bytes, ...]:
    """The raw value, its hex (lower and upper) and base64 forms (standard and URL-safe, at each of
    the three alignments a value can have inside a longer base64 stream), for the value as given and
    with surrounding whitespace stripped (`echo token > file` adds a newline nobody copies)."""
    found: set[bytes] = set()
    for v in {value, value.strip()}:
        if not v:
            continue
        found.add(v)
        encoded = [v.hex().encode(), v.hex().upper().encode()]
        for k in range(3):
            full = base64.b64encode(b"\0" * k + v)
            # Only the characters whose 6 bits all come from v are fixed whatever precedes it.
            first = -(-8 * k // 6)
            last = (8 * (k + len(v))) // 6
            part = full[first:last]
            encoded += [part, part.translate(bytes.maketrans(b"+/", b"-_"))]
        found.update(e for e in encoded if len(e) >= _MIN_ENCODED_LEN)
    return tuple(sorted(found, key=lambda p: (-len(p), p)))


@dataclass(frozen=True)
class SecretLeak:
    secret_id: str
    path: str  # the output's exec path (a file inside an output directory: "dir/rel")


def _regex(patterns: Iterable[bytes]) -> re.Pattern[bytes]:
    return re.compile(b"|".join(re.escape(p) for p in patterns))


def _unwrapped(data: bytes) -> bytes:
    # base64 and hex dumps are usually wrapped (`base64` at 76 columns, PEM at 64, `od`, `xxd`).
    return data.translate(None, b"\r\n")


def contains_secret(data: bytes, secrets: Mapping[str, Iterable[bytes]]) -> str | None:
    """The id of a secret `data` holds (as is, or once line breaks are removed), else None."""
    flat = _unwrapped(data)
    for sid, ps in sorted(secrets.items()):
        ps = tuple(ps)
        if ps:
            rx = _regex(ps)
            if rx.search(data) or rx.search(flat):
                return sid
    return None


def scan_files(
    files: Iterable[tuple[str, Path]], secrets: Mapping[str, Iterable[bytes]]
) -> SecretLeak | None:
    """The first (output, secret) where an output file holds one of the secret's patterns, as is
    or with line breaks removed.

    Streams each file in chunks that overlap by twice the longest pattern (room for the line
    breaks of a wrapped encoding), so memory stays bounded.
    """
    compiled = [(sid, _regex(ps), max(map(len, ps))) for sid, ps in sorted(secrets.items()) if ps]
    if not compiled:
        return None
    overlap = 2 * max(n for _, _, n in compiled)
    for name, path in files:
        for chunk in _chunks(path, overlap):
            flat = _unwrapped(chunk)
            for sid, rx, _ in compiled:
                if rx.search(chunk) or rx.search(flat):
                    return SecretLeak(sid, name)
    return None


def _chunks(path: Path, overlap: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        tail = b""
        while True:
            data = f.read(_CHUNK)
            if not data:
                return
            buf = tail + data
            yield buf
            tail = buf[-(overlap - 1) :] if overlap > 1 else b""


def redact(text: bytes, secrets: Mapping[str, Iterable[bytes]]) -> bytes:
    """`text` with every pattern of every secret replaced by `[secret ID]`; when a secret is still
    there once line breaks are removed (a wrapped encoding), the whole text is withheld."""
    for sid, ps in sorted(secrets.items()):
        ps = tuple(ps)
        if ps:
            text = _regex(ps).sub(f"[secret {sid}]".encode(), text)
    leaked = contains_secret(text, secrets)
    if leaked is not None:
        return f"[output withheld: it holds secret {leaked} across line breaks]\n".encode()
    return text
