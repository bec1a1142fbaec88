"""The output-format version: every constant that shapes layer and image bytes, in one string."""

from __future__ import annotations

import zlib

import zstandard

__all__ = [
    "GZIP_CHUNK",
    "GZIP_LEVEL",
    "GZIP_OS",
    "OUTPUT_FORMAT_VERSION",
    "ZSTD_CHECKSUM",
    "ZSTD_LEVEL",
    "ZSTD_WORKERS",
]

# gzip: every GZIP_CHUNK bytes of uncompressed input become one independent gzip member, so
# that members can be compressed in parallel while the bytes depend only on the input.
GZIP_CHUNK = 1 << 20
GZIP_LEVEL = 6
# The OS byte of every gzip member header: 255 = "unknown" (RFC 1952), so no host claim.
GZIP_OS = 255

# zstd: one frame, no content size (we stream), with a checksum. zstd's multi-threaded mode
# (nbWorkers >= 1) writes the same bytes for any worker count, but different bytes than the
# single-threaded mode (nbWorkers = 0); we always use >= 1 worker (tested in test_compress.py).
ZSTD_LEVEL = 3
ZSTD_CHECKSUM = True
# zstd always runs in multi-threaded ("mt") mode, whose frames differ from single-threaded mode
# but not with the worker count (tested): one worker overlaps compression with tar writing and
# holds ~25 MB less than two on incompressible data, at the same speed (the tar side is slower).
ZSTD_WORKERS = 1

# Folded into every action key by the engine (SPEC 6): change it whenever output bytes change.
OUTPUT_FORMAT_VERSION = (
    "pyimg-oci/1"
    " tar=pax,sorted,no-atime-ctime"
    f" gzip=zlib-{zlib.ZLIB_RUNTIME_VERSION},level-{GZIP_LEVEL},chunk-{GZIP_CHUNK},os-{GZIP_OS}"
    f" zstd=libzstd-{zstandard.ZSTD_VERSION[0]}.{zstandard.ZSTD_VERSION[1]}.{zstandard.ZSTD_VERSION[2]}"
    f",python-zstandard-{zstandard.__version__},level-{ZSTD_LEVEL},checksum-{int(ZSTD_CHECKSUM)},mt"
    " json=canonical"
)
