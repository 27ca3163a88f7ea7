"""Large files read by blocks: a sparse cached copy that holds what was read.

A blob larger than `min_size` bytes is not downloaded at open(). Its copy is a sparse
file of the blob's size, recorded 'partial', and the store's cached_blocks says which
BLOCK-sized blocks of it are there, all of the version (ETag) its record names; a copy
of another version is made anew. A read fetches the blocks it lacks by ranged GETs
(If-Match on that version, each range's MD5 checked: remote.read_blocks), one fetch
per block however many readers wait for it. A handle that reads in order gets a
read-ahead window that starts at one block and doubles up to BLOCKS_WINDOW_MAX, fetched
by up to BLOCKS_PARALLEL connections side by side. Eviction drops blocks one at a time
(eviction.py), never one a read is using or one being fetched (`in_use`).
"""

from __future__ import annotations

import logging
import os
import zlib
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import trio

from .azure import AsyncContainer
from .cache import Cache, block_key
from .cachetables import CopyState

# Sizes and counts of reads by blocks: decide.py says why each.
from .decide import (
    BLOCK,
    BLOCKS_PARALLEL,
    BLOCKS_WINDOW_MAX,
    IN_ORDER_SLACK,
    RUN_MAX,
    read_by_blocks,
)
from .errors import BlobmountError, RemoteError, RemoteUnreachable

log = logging.getLogger(__name__)

#: A block is looked for this many times (fetched, then found evicted...) at most.
ENSURE_TRIES = 4


def block_start(offset: int) -> int:
    return offset - offset % BLOCK


class _Flight:
    """One GET of blocks under way: the readers of any of them wait on it."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: Exception | None = None

    def check(self) -> None:
        if self.error is not None:
            failure = type(self.error)(*self.error.args)  # one object per raise: same errno
            raise failure


class BlockFile:
    """One partial copy being read, shared by every handle of its path and version."""

    def __init__(self, path: Path, blob: str, etag: str, size: int, remote: AsyncContainer,
                 fd: int) -> None:
        self.path = path
        self.key = str(path)
        self.blob = blob
        self.etag = etag
        self.size = size
        self.remote = remote
        self.fd = fd  # read and written by this daemon only
        self.inode = os.fstat(fd).st_ino
        self.fd_users: Counter[int] = Counter()  # descriptor -> fetches writing into it
        self.flights: dict[int, _Flight] = {}  # block start -> its GET under way
        self.pins: Counter[int] = Counter()    # block start -> reads using it now
        self.checked: set[int] = set()  # blocks known good in this run (fetched, checked)
        #: the cache path holds something else now (a whole copy, another version): the
        #: bytes this file fetched since are in `fd` only, their blocks in `local`
        self.detached = False
        self.local: set[int] = set()
        self.users = 0  # open handles


class Blocks:
    """Every partial copy being read, and the fetches of their blocks."""

    def __init__(self, cache: Cache, *, min_size: int) -> None:
        self.cache = cache
        self.store = cache.store
        self.min_size = min_size
        self._files: dict[Path, BlockFile] = {}
        # Counts of GETs, not threads (those are the daemon's): read-ahead and the
        # blocks readers wait on have a bound each, so a window being filled never
        # keeps a reader's own block waiting behind it.
        self._ahead = trio.Semaphore(BLOCKS_PARALLEL)
        self._demand = trio.Semaphore(BLOCKS_PARALLEL)
        self._background: trio.Nursery | None = None
        #: called after blocks land in the cache (the eviction task listens)
        self.on_fetched: Callable[[], None] = lambda: None
        #: blocks and bytes fetched since the mount
        self.fetched = {"blocks": 0, "bytes": 0}

    def run_in(self, nursery: trio.Nursery) -> None:
        """Where fetches run: the daemon's nursery (they outlive the read that asked)."""
        self._background = nursery

    def takes(self, size: int, etag: str | None) -> bool:
        """Whether a blob of this size and version is read by blocks."""
        return self._background is not None and bool(etag) and read_by_blocks(size, self.min_size)

    def is_open(self, path: Path) -> bool:
        """Whether a reader has the partial copy at `path` open."""
        return path in self._files

    def in_use(self) -> set[str]:
        """Blocks (cache.block_key) being read or fetched: not to be evicted."""
        return {block_key(file.key, start) for file in self._files.values()
                for start in (*file.pins, *file.flights)}

    def arriving(self) -> dict[str, int]:
        """Blocks (cache.block_key) being fetched, with their sizes: bytes about to be
        in the cache, which its limit must leave room for."""
        return {block_key(file.key, start): min(BLOCK, file.size - start)
                for file in self._files.values() for start in file.flights}

    # -- opening and closing ------------------------------------------------------

    def open(self, remote: AsyncContainer, blob: str, path: Path, *, size: int, etag: str,
             window_max: int = BLOCKS_WINDOW_MAX) -> tuple[BlockReader, bool]:
        """A reader of the blob's version `etag` through its partial copy at `path`,
        and whether the copy was made anew (none of that version was there)."""
        file = self._files.get(path)
        fresh = False
        if file is None or file.etag != etag or not self._holds(file):
            file, fresh = self._copy(remote, blob, path, size, etag)
            self._files[path] = file
        file.users += 1
        return BlockReader(self, file, max(BLOCK, min(BLOCKS_WINDOW_MAX, window_max))), fresh

    def _copy(self, remote: AsyncContainer, blob: str, path: Path, size: int, etag: str,
              ) -> tuple[BlockFile, bool]:
        """The partial copy of that version kept from before, or a new empty one."""
        record = self.store.cached_file(str(path))
        if record is not None and record.state == CopyState.PARTIAL and record.etag == etag:
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                pass
            else:
                if os.fstat(fd).st_size == size:
                    return BlockFile(path, blob, etag, size, remote, fd), False
                os.close(fd)
        # A new file under the same name: handles of the old one keep their bytes.
        temp = self.cache.temp_path(path)
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            os.replace(temp, path)
        except BaseException:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        self.store.drop_cached_file(str(path))  # and the blocks of any other version
        self.cache.record(path, blob=blob, etag=etag, size=0, state=CopyState.PARTIAL)
        log.info("reading %s/%s by blocks (%d bytes)", remote.label, blob, size)
        return BlockFile(path, blob, etag, size, remote, fd), True

    def _holds(self, file: BlockFile) -> bool:
        """Whether the cache path still holds this partial copy (not a whole copy
        downloaded since, another version, or nothing); if not, the file goes on in
        its own descriptor alone."""
        if file.detached:
            return False
        record = self.store.cached_file(file.key)
        try:
            same = os.stat(file.path).st_ino == file.inode
        except FileNotFoundError:
            same = False
        if not (same and record is not None and record.state == CopyState.PARTIAL
                and record.etag == file.etag):
            file.detached = True
            file.local.clear()  # what its records said is gone with them
        return not file.detached

    async def settle(self, path: Path) -> None:
        """Before a writer changes the cache file at `path` in place (O_TRUNC): the
        partial copy there goes on in a file of its own, and no fetch still writes
        into the writer's file when this returns."""
        file = self._files.get(path)
        if file is None:
            return
        del self._files[path]
        file.detached = True
        file.local.clear()
        old, file.fd = file.fd, _private_file(path, file.size)
        if not file.fd_users[old]:
            os.close(old)
        while file.fd_users[old]:
            await next(iter(file.flights.values())).done.wait()

    def release(self, file: BlockFile) -> None:
        file.users -= 1
        self._close_if_idle(file)

    def _close_if_idle(self, file: BlockFile) -> None:
        # A fetch under way still writes into the descriptor.
        if file.users == 0 and not file.flights:
            os.close(file.fd)
            file.fd = -1
            if self._files.get(file.path) is file:
                del self._files[file.path]

    # -- blocks -------------------------------------------------------------------

    def _present(self, file: BlockFile, first: int, last: int) -> dict[int, int | None]:
        """The blocks starting in [first, last] the copy holds: start -> CRC-32 (None:
        known good already)."""
        if file.detached:
            return {start: None for start in file.local if first <= start <= last}
        found = self.store.cached_blocks_in(file.key, first, last)
        return {start: None if start in file.checked else crc for start, crc in found.items()}

    async def ensure(self, file: BlockFile, first: int, last: int) -> None:
        """Return once the copy holds the blocks starting in [first, last] (the caller
        has pinned them); fetch those it lacks, or wait for their fetch under way."""
        for _ in range(ENSURE_TRIES):
            present = self._present(file, first, last)
            unchecked = {start: crc for start, crc in present.items() if crc is not None}
            if unchecked:
                await self._check(file, unchecked)
                continue
            missing = [start for start in range(first, last + 1, BLOCK) if start not in present]
            if not missing:
                return
            self._fetch([start for start in missing if start not in file.flights], file,
                        self._demand)
            for start in missing:
                flight = file.flights.get(start)
                if flight is not None:
                    await flight.done.wait()
                    flight.check()
        raise RemoteError(f"read of {file.remote.label}/{file.blob}: blocks kept going"
                          " missing from the cache")

    def fetch_ahead(self, file: BlockFile, start: int, end: int) -> None:
        """Fetch, in the background, the blocks of [start, end) not there or on their
        way (start is a block's)."""
        if start >= end:
            return
        present = self._present(file, start, end - 1)
        self._fetch([block for block in range(start, end, BLOCK)
                     if block not in present and block not in file.flights], file,
                    self._ahead)

    async def _check(self, file: BlockFile, blocks: dict[int, int]) -> None:
        """Blocks an earlier daemon wrote, not fsynced one by one: each is used once it
        matches its CRC-32, and dropped (fetched again) if not."""
        for start, crc in blocks.items():
            size = min(BLOCK, file.size - start)
            file.pins[start] += 1
            try:
                data = await file.remote.run_sync(os.pread, file.fd, size, start)
            finally:
                _unpin(file, [start])
            if len(data) == size and zlib.crc32(data) == crc:
                file.checked.add(start)
            else:
                if crc >= 0:  # -1: recorded at another block size (store.py), never known
                    log.warning("%s/%s: the cached block at %d does not match its CRC-32;"
                                " it is fetched again", file.remote.label, file.blob, start)
                self.store.drop_cached_blocks(file.key, [start])

    def _fetch(self, starts: list[int], file: BlockFile, bound: trio.Semaphore) -> None:
        """Start a GET for each run of adjacent blocks (at most RUN_MAX each)."""
        if self._background is None:
            raise RemoteError("the mount is stopping")
        for run in _runs(starts):
            flight = _Flight()
            for start in run:
                file.flights[start] = flight
            self._background.start_soon(self._get, file, run, flight, bound)

    async def _get(self, file: BlockFile, run: list[int], flight: _Flight,
                   bound: trio.Semaphore) -> None:
        low, high = run[0], min(run[-1] + BLOCK, file.size)
        what = f"read of {file.remote.label}/{file.blob}"
        fd = file.fd
        file.fd_users[fd] += 1
        try:
            if file.remote.offline():
                raise RemoteUnreachable(f"{what}: not in the cache, and the account did not"
                                        " answer just now")
            async with bound:
                crcs = await file.remote.read_blocks(file.blob, fd, low, high, file.etag,
                                                     BLOCK)
            if fd != file.fd:
                pass  # moved to a file of its own meanwhile (settle): fetched again there
            elif self._holds(file):
                self.store.add_cached_blocks(file.key, [
                    (start, min(BLOCK, file.size - start), crc)
                    for start, crc in zip(run, crcs, strict=True)])
            else:
                file.local.update(run)
            file.checked.update(run)
            self.fetched["blocks"] += len(run)
            self.fetched["bytes"] += high - low
            self.on_fetched()
        except (BlobmountError, OSError) as exc:
            log.debug("%s, bytes %d-%d: %s", what, low, high - 1, exc)
            flight.error = exc
        except Exception as exc:
            log.exception("%s, bytes %d-%d failed", what, low, high - 1)
            flight.error = RemoteError(f"{what}: {type(exc).__name__}")
        finally:
            file.fd_users[fd] -= 1
            if not file.fd_users[fd]:
                del file.fd_users[fd]
                if fd != file.fd:
                    os.close(fd)
            for start in run:
                if file.flights.get(start) is flight:
                    del file.flights[start]
            flight.done.set()
            self._close_if_idle(file)


class BlockReader:
    """One handle's reads of a partial copy, with its read-ahead window."""

    def __init__(self, blocks: Blocks, file: BlockFile, window_max: int) -> None:
        self.blocks = blocks
        self.file = file
        self.window_max = window_max
        self.window = 0  # bytes read ahead of the reads; 0 while they jump about
        self._next = -1  # where the next read starts if the reads go in order
        self._ahead = 0  # read-ahead was asked for up to here

    def open(self) -> int:
        """A descriptor of the copy for the handle (closed by the handle)."""
        return os.dup(self.file.fd)

    def close(self) -> None:
        self.blocks.release(self.file)

    async def read(self, offset: int, size: int) -> bytes:
        file = self.file
        end = min(offset + size, file.size)
        if offset >= end:
            return b""
        first, last = block_start(offset), block_start(end - 1)
        self._follow(offset, end)
        pinned = list(range(first, last + 1, BLOCK))
        for start in pinned:
            file.pins[start] += 1
        try:
            await self.blocks.ensure(file, first, last)
            data = os.pread(file.fd, end - offset, offset)
        finally:
            _unpin(file, pinned)
        if not file.detached:
            self.blocks.store.touch_cached_blocks(file.key, first, last)
        return data

    def _follow(self, offset: int, end: int) -> None:
        """Grow the window while reads go on where the last ended (the kernel's own
        read-ahead may send them a little out of order), drop it when they jump; ask
        for what it covers that was not asked for yet. The first read of a handle gets
        none: a program that reads a header and seeks costs one GET."""
        if self._next >= 0 and abs(offset - self._next) <= IN_ORDER_SLACK:
            self.window = min(self.window_max, max(BLOCK, self.window * 2))
            self._next = max(self._next, end)
        else:
            self.window, self._next, self._ahead = 0, end, 0
            return
        start = max(self._ahead, block_start(end - 1) + BLOCK)
        # Up to the next RUN_MAX edge: the window moves on a block at a time, and one
        # GET per block would cost Azurite several times what one per RUN_MAX does.
        stop = min(-(-(end + self.window) // RUN_MAX) * RUN_MAX, self.file.size)
        if stop > start:
            self.blocks.fetch_ahead(self.file, start, stop)
            self._ahead = block_start(stop - 1) + BLOCK


def _private_file(beside: Path, size: int) -> int:
    """A descriptor of a new sparse file of `size` bytes that has no name."""
    try:
        fd = os.open(beside.parent, os.O_TMPFILE | os.O_RDWR, 0o600)
    except OSError:  # a file system without O_TMPFILE
        temp = Cache.temp_path(beside)
        fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        temp.unlink()
    os.ftruncate(fd, size)
    return fd


def _unpin(file: BlockFile, starts: list[int]) -> None:
    for start in starts:
        file.pins[start] -= 1
        if not file.pins[start]:
            del file.pins[start]


def _runs(starts: list[int]) -> list[list[int]]:
    """Sorted block starts cut into runs of adjacent blocks, each within one RUN_MAX
    -aligned stretch (so a stream's GETs line up with the 4 MiB blocks the SDK and
    AzCopy put blobs in)."""
    runs: list[list[int]] = []
    for start in sorted(starts):
        if runs and start == runs[-1][-1] + BLOCK and start % RUN_MAX:
            runs[-1].append(start)
        else:
            runs.append([start])
    return runs
