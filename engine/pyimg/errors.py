"""The exception tree of pyimg: one root, one class per kind of failure a user can meet.

    PyimgError                  exit 1 unless a subclass says otherwise
    ├── UsageError              exit 2: bad flags, bad labels on the command line
    ├── UserInputError          exit 2: a bad BUILD/.bzl/MODULE file or attribute; has an origin
    │   ├── UnpinnedInputError  exit 2: an external input without a digest
    │   └── SourceLinkError     exit 2: a source's symlink leaves the workspace, dangles or loops
    ├── ActionFailedError       exit 1: an action ran and failed (label, mnemonic, output tail)
    ├── IntegrityError          exit 1: bytes did not match their digest
    ├── DiskFullError           exit 1: no space left where pyimg writes (cache, pyimg-out)
    ├── RegistryError           exit 1: a registry request failed for good
    ├── RemoteError             exit 1: an REAPI server refused or failed `pyimg worker` for good
    ├── SigningKeyError         exit 2: a key that cannot be read, decrypted or used to sign
    ├── VerificationError       exit 1: a signature or attestation did not verify, or is missing
    ├── AuditDifferenceError    exit 3: a reproducibility audit found a difference
    └── InterruptedBuildError   exit 130: Ctrl-C

Every message a user sees starts with the origin (`svc/BUILD.pyimg:12:5: ...`) when there is one.
"""

from __future__ import annotations

__all__ = [
    "ActionFailedError",
    "AuditDifferenceError",
    "DiskFullError",
    "IntegrityError",
    "InterruptedBuildError",
    "PyimgError",
    "RegistryError",
    "RemoteError",
    "SigningKeyError",
    "SourceLinkError",
    "UnpinnedInputError",
    "UsageError",
    "UserInputError",
    "VerificationError",
]


class PyimgError(Exception):
    """Root of every error pyimg reports to a user (never a Python traceback)."""

    exit_code = 1

    def __init__(self, message: str, origin: str | None = None) -> None:
        self.origin = origin
        self.message = message
        super().__init__(f"{origin}: {message}" if origin else message)


class UsageError(PyimgError):
    exit_code = 2


class UserInputError(PyimgError):
    exit_code = 2


class UnpinnedInputError(UserInputError):
    pass


class SourceLinkError(UserInputError):
    pass


class ActionFailedError(PyimgError):
    pass


class IntegrityError(PyimgError):
    pass


class DiskFullError(PyimgError):
    pass


class RegistryError(PyimgError):
    # The distribution-spec error codes of the registry's answer (e.g. MANIFEST_BLOB_UNKNOWN).
    codes: tuple[str, ...] = ()


class RemoteError(PyimgError):
    pass


class SigningKeyError(PyimgError):
    exit_code = 2


class VerificationError(PyimgError):
    pass


class AuditDifferenceError(PyimgError):
    exit_code = 3


class InterruptedBuildError(PyimgError):
    exit_code = 130
