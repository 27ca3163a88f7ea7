"""Every size and tool decision of a transfer, as small pure functions.

SDK or AzCopy, whole or by blocks, one job or one per file, what read-ahead takes:
callers ask here, and each constant names the measurement that chose it (README,
"Benchmarks"; 2-core machine, loopback Azurite). The thresholds a user may change
(`sdk_download_max`, `sdk_upload_max`, `block_read_min`) come from the settings and
are passed in; their defaults are in config/model.py with the same reasons.
"""

from __future__ import annotations

from collections.abc import Sequence

MiB = 1024 * 1024

#: One GET for a blob up to this size; larger ones come in ranges side by side,
#: readable as they arrive. A small GET costs a few milliseconds (0.79 ms of CPU for
#: 4 KiB); below 4 MiB, ranges would only add requests (the SDK's own range size).
SMALL_GET_MAX = 4 * MiB
#: A prefetch batch of at most this many files, each small enough for the SDK, goes
#: by SDK GETs: an AzCopy job costs about 2 s before its first byte (it reports after
#: its 2-second progress tick), a GET a few milliseconds, so 8 GETs side by side end
#: long before one job starts.
BATCH_SDK_MAX_FILES = 8
#: Read-ahead (`read_ahead_files`) fetches files up to this size, one GET each, this
#: many at a time: a program walking a folder of small cold files otherwise waits on
#: a round trip per file.
READ_AHEAD_MAX_SIZE = SMALL_GET_MAX
READ_AHEAD_PARALLEL = 8
#: A reader of a blob by blocks reads ahead at most this far (blocks.WINDOW_MAX, 16
#: GETs of 4 MiB side by side), and at most a quarter of a bounded cache, so that
#: read-ahead never evicts what is being read.
CACHE_SHARE_FOR_BLOCKS = 4


def download_by_sdk(size: int, sdk_download_max: int, *, azcopy_usable: bool) -> bool:
    """Whether a whole download goes by the SDK (else one AzCopy job). Up to
    `sdk_download_max` (1 GiB) the SDK: its download can be read while it runs, which
    an AzCopy job cannot (a cold `cat` of 1 GiB: 3.6 s by the SDK, 8.2 s by AzCopy)."""
    return size <= sdk_download_max or not azcopy_usable


def upload_by_sdk(size: int, sdk_upload_max: int, *, azcopy_usable: bool) -> bool:
    """Whether an upload goes by one SDK put (else one AzCopy job). Up to
    `sdk_upload_max` (256 MiB) the SDK: it put 64 MiB in 0.23 s where AzCopy took
    2.04 s (`--quick`), and only the SDK's put is conditional (If-Match)."""
    return size <= sdk_upload_max or not azcopy_usable


def fill_in_ranges(size: int) -> bool:
    """Whether a reader's download by the SDK comes in ranges, handed over once its
    first bytes are in (a `Filling`), rather than by one GET read when done."""
    return size > SMALL_GET_MAX


def read_by_blocks(size: int, block_read_min: int) -> bool:
    """Whether a reader of a blob this large gets blocks as it reads (a sparse copy)
    rather than the whole file. Over `block_read_min` (1 GiB): streaming by blocks is
    where Azurite is slow (512 MiB in 4 MiB ranges: 9-15 s; the whole-file path 3-4 s),
    while a random read by blocks costs one small GET (100 random reads of 3 GiB
    fetched 50 MiB)."""
    return size > block_read_min


def blocks_window(cache_max_bytes: int | None, window_max: int) -> int:
    """How far a reader by blocks may read ahead, within a bounded cache."""
    return cache_max_bytes // CACHE_SHARE_FOR_BLOCKS if cache_max_bytes else window_max


def batch_by_sdk(sizes: Sequence[int], sdk_download_max: int) -> bool:
    """Whether a prefetch batch goes by SDK GETs, one per file, rather than one AzCopy
    job of the whole list: a few files, each one the SDK would download anyway."""
    return (len(sizes) <= BATCH_SDK_MAX_FILES
            and all(size <= sdk_download_max for size in sizes))


def read_ahead_takes(size: int) -> bool:
    """Whether read-ahead fetches a file of this size (one GET)."""
    return size <= READ_AHEAD_MAX_SIZE


def upload_jobs(paths: Sequence[str]) -> list[list[str]]:
    """The journaled uploads a batch window gathered, as jobs for the upload workers
    (one worker takes each job). One file each: an upload is conditional on the
    version it replaces (If-Match), which one AzCopy job of many files cannot be, and
    an AzCopy job costs about 2 s whatever it carries against milliseconds for a small
    SDK put; a large file is one AzCopy job of its own (upload_by_sdk)."""
    return [[path] for path in paths]
