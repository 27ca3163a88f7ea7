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
#: A file up to this size goes up in one Put Blob sent bare through the SDK's pipeline
#: (auth, retries, metrics), not by its upload_blob, whose objects cost more CPU than
#: the request: a 3 KiB file against Azurite cost 3.3 ms of CPU and 6.2 ms, bare
#: 2.5 ms and 4.9 ms. Larger files go by upload_blob (blocks side by side) or AzCopy.
BARE_PUT_MAX = 4 * MiB
#: A prefetch batch of at most this many files, each small enough for the SDK, goes
#: by SDK GETs: an AzCopy job costs about 2 s before its first byte (it reports after
#: its 2-second progress tick), a GET a few milliseconds, so 8 GETs side by side end
#: long before one job starts.
BATCH_SDK_MAX_FILES = 8
#: A close of a file up to this size journals its bytes in the row itself (journal.py),
#: so the row's one commit makes them durable: no fsync of the copy and its folder,
#: each a worker-thread trip (a close of a small file, under load: 26 ms, of which
#: the copy's fsync 13 ms, its folder's 6 ms, the commit 5 ms). A source file or a
#: git object is mostly smaller; a larger file costs more to write than to fsync.
JOURNAL_BYTES_MAX = 64 * 1024
#: Read-ahead (`read_ahead_files`) fetches files up to this size, one GET each, this
#: many at a time: a program walking a folder of small cold files otherwise waits on
#: a round trip per file.
READ_AHEAD_MAX_SIZE = SMALL_GET_MAX
READ_AHEAD_PARALLEL = 8
#: A reader of a blob by blocks reads ahead at most this far (BLOCKS_WINDOW_MAX), and
#: at most a quarter of a bounded cache, so that read-ahead never evicts what is
#: being read.
CACHE_SHARE_FOR_BLOCKS = 4

# -- a large download by the SDK, in ranges side by side (azure/ranges.py) -----------

#: The range sizes of a download (see range_size): one range per connection, so few
#: requests; ranges of 4 MiB (the SDK's own size) cost Azurite 0.75 s of CPU for
#: 256 MiB, four large ones 0.45 s. 64 MiB at most, so a cut answer costs little to
#: ask for again.
RANGE_MIN = 4 * MiB
RANGE_MAX = 64 * MiB
#: The largest range whose own MD5 the service computes (x-ms-range-get-content-md5):
#: Azure's limit, not a choice; a GET of blocks asks for no more (BLOCKS_RUN_MAX).
RANGE_MD5_MAX = 4 * MiB

# -- a large file read by blocks (blocks.py) ------------------------------------------

#: Bytes of a block: what a read of an uncached byte fetches at least. Small, so that
#: a random read costs about one small GET (from Azurite here, one GET with its MD5:
#: 4 KiB 7.7 ms, 128 KiB 8.2 ms, 512 KiB 12.9 ms, 1 MiB 21 ms; the first byte of a
#: cold file took 2x a 4 KiB GET with blocks of 512 KiB, 1.4x with these) and 100
#: random reads of a 3 GiB file fetch 0.4% of it. A cache of 100 GiB is 800,000 rows;
#: a stream costs no more CPU than with 512 KiB (1 GiB: 6.8 s of the daemon's either
#: way).
BLOCK = 128 * 1024
#: One GET of blocks asks for at most this much (blocks side by side): the largest
#: range the service gives an MD5 of.
RUN_MAX = RANGE_MD5_MAX
#: The read-ahead window of a handle reading in order: one block, doubling up to this
#: (and to a quarter of the entry's cache_max_bytes). 16 GETs of 4 MiB side by side
#: keep it busy.
BLOCKS_WINDOW_MAX = 128 * MiB
#: GETs of blocks side by side: for read-ahead, and (apart) for the blocks readers
#: wait on. From Azurite here, 512 MiB in 4 MiB ranges with their MD5 took 15 s by 8
#: SDK connections, 9 s by 16.
BLOCKS_PARALLEL = 16
#: A read this close to where the last one ended still goes "in order": the kernel's
#: read-ahead (1 MiB, read_ahead_kb) sends several requests at once, not in order.
IN_ORDER_SLACK = 2 * MiB

# -- an edit of such a file, uploaded by blocks (patch.py, blocklist.py) --------------

#: Blocks staged side by side by one upload: each task holds a block's bytes (4 MiB at
#: most, PUT_MAX) while it waits for a thread, so an upload of many blocks does not
#: read them all into memory at once. Not measured: as many as the SDK's read GETs
#: side by side in a download (the daemon's threads bound them all anyway).
STAGE_PARALLEL = 8
#: The most one Put Block From URL copies (more for files so large that the list
#: would pass blocklist.BLOCKS_MAX). Azurite copies about 20-25 MB/s here, whatever
#: the size and however many side by side: 8 side by side of 100 MiB each outlasted
#: the 10 s read timeout; 8 MiB ones take about 3 s.
COPY_MAX = 8 * MiB
#: The most one Put Block sends of the bytes written here.
PUT_MAX = 4 * MiB
#: A committed block that holds written bytes and is at most this large is fetched
#: and sent again whole; the unchanged parts of a larger one are copied server-side.
FETCH_MAX = 64 * MiB


def range_size(size: int, concurrency: int) -> int:
    """How much of a blob of `size` bytes one range asks for: an equal share for each
    of `concurrency` connections, so every connection stays busy to the end and each
    request costs the least, between RANGE_MIN and RANGE_MAX."""
    return min(RANGE_MAX, max(RANGE_MIN, -(-size // concurrency)))


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
