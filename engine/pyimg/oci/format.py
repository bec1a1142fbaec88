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
    "ZSTD_JOB_SIZE",
    "ZSTD_LEVEL",
]

# gzip: every GZIP_CHUNK bytes of uncompressed input become one independent gzip member, so
# that members can be compressed in parallel while the bytes depend only on the input.
GZIP_CHUNK = 1 << 20
GZIP_LEVEL = 6
# The OS byte of every gzip member header: 255 = "unknown" (RFC 1952), so no host claim.
GZIP_OS = 255

# zstd: one frame, no content size (we stream), with a checksum. zstd's multi-threaded mode
# (nbWorkers >= 1) writes the same bytes for any worker count, but different bytes than the
# single-threaded mode (nbWorkers = 0), and its bytes depend on the job size: so we always use
# >= 1 worker (one per build job) and a fixed job size (tested in test_oci_compress.py).
ZSTD_LEVEL = 3
ZSTD_CHECKSUM = True
# 4 MiB jobs instead of level 3's default 8 MiB: two workers then hold about 40 MB instead of
# 75 MB at the same speed (tools/bench/layers.py keeps a 1 GiB layer under 200 MB).
ZSTD_JOB_SIZE = 4 << 20

# Folded into every action key by the engine (docs/sandbox-secrets-caches.md): change it whenever output bytes change.
OUTPUT_FORMAT_VERSION = (
    "pyimg-oci/1"
    " tar=pax,sorted,no-atime-ctime"
    f" gzip=zlib-{zlib.ZLIB_RUNTIME_VERSION},level-{GZIP_LEVEL},chunk-{GZIP_CHUNK},os-{GZIP_OS}"
    f" zstd=libzstd-{zstandard.ZSTD_VERSION[0]}.{zstandard.ZSTD_VERSION[1]}.{zstandard.ZSTD_VERSION[2]}"
    f",python-zstandard-{zstandard.__version__},level-{ZSTD_LEVEL},checksum-{int(ZSTD_CHECKSUM)},mt-job-{ZSTD_JOB_SIZE}"
    " json=canonical"
)
