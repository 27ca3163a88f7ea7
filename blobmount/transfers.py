"""Moving bytes between the container and the cache.

One download per file however many readers wait for it (single-flight on the cache
path). Small blobs come by one SDK GET, which costs milliseconds; larger ones by SDK
ranges side by side, readable as they arrive (a `Filling`); the largest by an AzCopy
job, which costs about two seconds to start.
Batches (prefetch) are batches.py's; every size and tool choice is decide.py's.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import trio

from .azcopy import AzCopy
from .azure import AsyncContainer
from .batches import STAGING_FOLDER as STAGING_FOLDER  # manage.py's
from .batches import BatchDownloads, Wanted
from .blocks import BlockReader, Blocks
from .cache import Cache
from .config import MountEntry, Settings
from .decide import (
    BLOCKS_WINDOW_MAX,
    READ_AHEAD_PARALLEL,
    blocks_window,
    download_by_sdk,
    fill_in_ranges,
)
from .errors import BlobmountError, RemoteError, RemoteUnreachable, ToolNotFound
from .eviction import ROOM_MARGIN, free_bytes
from .patch import Patches
from .singleflight import SingleFlight
from .supervise import fault

log = logging.getLogger(__name__)

#: Bounds of what is remembered per path: downloads counted for `status`, and files
#: fetched ahead that were not opened (yet).
STARTED_PATHS_MAX = 10_000
FETCHED_AHEAD_MAX = 4096


class Filling:
    """A large file being downloaded, readable while its bytes arrive.

    A read waits until the bytes it asks for are written. The read that reaches the
    end of the file waits until the whole download has matched the blob's Content-MD5
    (not for the disk: making the copy durable is the cache's business): no program
    reads to the end of bytes that failed their check.
    """

    def __init__(self, path: Path, temp: Path, size: int) -> None:
        self.path = path    # where the copy will be
        self.temp = temp    # where it is written meanwhile
        self.size = size    # as listed: where the end of the file is
        self.ready = 0      # the first `ready` bytes are written
        self.good = False   # all of them are, and matched the blob's Content-MD5
        self.done = False
        self.error: BlobmountError | None = None
        self.started = trio.Event()  # set at the first bytes written, or failure
        self._moved = trio.Event()

    def advance(self, ready: int) -> None:
        self.ready = max(self.ready, ready)
        self.started.set()
        self._wake()

    def passed(self) -> None:
        """Every byte is written and matched the blob's Content-MD5."""
        self.good = True
        self._wake()

    def finish(self, error: BlobmountError | None = None) -> None:
        self.done, self.error = True, error
        self.started.set()
        self._wake()

    def _wake(self) -> None:
        self._moved.set()
        self._moved = trio.Event()

    def check(self) -> None:
        """Raise the download's failure, if it failed."""
        if self.error is not None:
            failure = type(self.error)(str(self.error))  # one object per raise: same errno
            raise failure

    def open(self) -> int:
        """A file descriptor for reading the file, wherever it is now (the rename into
        the cache keeps the inode)."""
        try:
            return os.open(self.temp, os.O_RDONLY)
        except FileNotFoundError:
            self.check()  # failed: the temporary file is gone
            return os.open(self.path, os.O_RDONLY)

    async def wait_for(self, end: int) -> None:
        """Return once the bytes before `end` can be read: all of them checked, where
        `end` reaches the end of the file. Bytes that passed stay readable even if
        putting them in the cache fails afterwards."""
        while not (self.good or self.done or (end < self.size and self.ready >= end)):
            await self._moved.wait()
        if not self.good:
            self.check()


class Downloads(BatchDownloads):
    """Brings blobs into the cache, and counts the downloads it starts."""

    def __init__(self, cache: Cache, azcopy_for: Callable[[MountEntry], AzCopy] | None, *,
                 sdk_max: int,
                 block_min: int = Settings.block_read_min) -> None:
        self.cache = cache
        #: large files, read by blocks (blocks.py)
        self.blocks = Blocks(cache, min_size=block_min)
        self.blocks.on_fetched = lambda: self.on_downloaded()
        #: large files edited by blocks (patch.py)
        self.patches = Patches(cache, self.blocks)
        self.patches.on_changed = lambda: self.on_downloaded()
        self._azcopy_for = azcopy_for
        self.sdk_max = sdk_max
        self._flights = SingleFlight()
        #: downloads started since the mount, by path relative to the mount point (the
        #: last STARTED_PATHS_MAX paths; `started_total` counts them all)
        self.started: Counter[str] = Counter()
        self.started_total = 0
        #: cache files a caller of cached_copy is about to open: not to be evicted
        self.busy: Counter[str] = Counter()
        #: called after new bytes land in the cache (the eviction task listens)
        self.on_downloaded: Callable[[], None] = lambda: None
        #: make_room(folder, bytes): drop clean copies until the disk of `folder` has
        #: that much free; the bytes dropped (the evictor's)
        self.make_room: Callable[[Path, int], int] = lambda folder, needed: 0
        #: files and bytes prefetch brought in since the mount
        self.prefetched = {"files": 0, "bytes": 0}
        self._background: trio.Nursery | None = None
        self._ahead: set[Path] = set()      # being fetched ahead
        self._fetched_ahead: dict[Path, None] = {}  # fetched ahead, not opened yet
        # A count of files, not of threads: read-ahead takes a few connections only.
        self._ahead_files = trio.Semaphore(READ_AHEAD_PARALLEL)
        self._fillings: dict[Path, Filling] = {}

    def _count(self, shown_path: str) -> None:
        """One more download of `shown_path`; the oldest paths go past the bound."""
        self.started_total += 1
        self.started[shown_path] += 1
        if len(self.started) > STARTED_PATHS_MAX:
            del self.started[next(iter(self.started))]

    def _fetched(self, path: Path) -> None:
        """`path` was fetched ahead: remembered (the newest FETCHED_AHEAD_MAX) until it
        is opened, a sign the walk goes on."""
        self._fetched_ahead[path] = None
        if len(self._fetched_ahead) > FETCHED_AHEAD_MAX:
            del self._fetched_ahead[next(iter(self._fetched_ahead))]

    def run_in(self, nursery: trio.Nursery) -> None:
        """Where background downloads (read-ahead) run: the daemon's nursery."""
        self._background = nursery
        self.blocks.run_in(nursery)
        self.patches.run_in(nursery)

    def read_ahead(self, entry: MountEntry, remote: AsyncContainer,
                   wanted: Sequence[Wanted]) -> None:
        """Fetch these files in the background, a few at a time.

        Small cold files cost a round trip each; a program walking a folder reads the
        next ones soon, so fetching them side by side hides most of that. The window
        is the caller's: it moves only while the program keeps opening files.
        """
        if self._background is None:
            return
        for item in wanted:
            path = self.cache.path_for(entry, item.blob)
            # The cheap checks first: inside a walk most of the window is known here.
            if path in self._ahead or path in self._fetched_ahead or self._flights.running(
                    path) or self.cache.usable(path, item.etag):
                continue
            self._ahead.add(path)
            self._background.start_soon(self._fetch_ahead, entry, remote, item, path)

    def walking(self, path: Path, downloaded: bool) -> bool:
        """Whether opening `path` looks like a walk through its folder: its bytes had
        to be downloaded, or read-ahead guessed it would be opened. A warm open of
        anything else costs no read-ahead work."""
        if path in self._fetched_ahead:
            del self._fetched_ahead[path]
            return True
        return downloaded or path in self._ahead

    async def _fetch_ahead(self, entry: MountEntry, remote: AsyncContainer, item: Wanted,
                           path: Path) -> None:
        try:
            async with self._ahead_files:
                fault("read_ahead")
                await self.cached_copy(entry, remote, item.blob, size=item.size,
                                       etag=item.etag, shown_path=item.shown_path)
            self._fetched(path)
        except BlobmountError as exc:
            # Only a guess failed: a reader that opens the file downloads it itself.
            log.debug("read-ahead of %s: %s", item.shown_path, exc)
        except Exception:
            # Not expected (a full disk, no descriptors left): this fetch alone fails.
            log.exception("read-ahead of %s failed; the mount goes on", item.shown_path)
        finally:
            self._ahead.discard(path)

    def in_use(self) -> set[str]:
        """Cache files being downloaded, or just downloaded and about to be opened."""
        return ({str(key) for key in self._flights.running_keys()} | set(self.busy)
                | self.blocks.in_use())

    async def settle(self, path: Path) -> None:
        """Return once no download into `path` is under way (whatever its outcome):
        a writer about to replace the file's bytes must not have them replaced again
        by a download (a reader's, a read-ahead's, a prefetch's) that began before."""
        while self._flights.running(path):
            with contextlib.suppress(Exception):
                await self._flights.run(path, _nothing)
        await self.blocks.settle(path)
        # Renamed or replaced: an edit by blocks becomes a whole copy first.
        await self.patches.complete(path)

    async def cached_copy(self, entry: MountEntry, remote: AsyncContainer, blob: str, *, size: int,
                          etag: str | None, shown_path: str) -> tuple[Path, bool]:
        """The cache file holding `blob` at `etag`, and whether it was downloaded now."""
        path = self.cache.path_for(entry, blob)
        if not self._flights.running(path) and self.cache.usable(path, etag):
            return path, False

        async def download() -> Path:
            # Another flight may have finished just before this one started.
            if self.cache.usable(path, etag):
                return path
            if remote.offline():
                raise RemoteUnreachable(f"{remote.label}/{blob}: not in the cache, and the"
                                        " account did not answer just now")
            self._count(shown_path)
            await self._download(entry, remote, blob, size, etag, path)
            self.on_downloaded()
            return path

        # Held until the caller has opened the file: the return below is no checkpoint.
        self.busy[str(path)] += 1
        try:
            joined = self._flights.running(path)
            await self._flights.run(path, download)
            if joined and not self.cache.usable(path, etag):
                # The download joined began earlier (before a rename, say, or a change
                # in the container) and brought another version: fetch the one asked.
                await self._flights.run(path, download)
        finally:
            self.busy[str(path)] -= 1
            if not self.busy[str(path)]:
                del self.busy[str(path)]
        return path, True

    async def readable_copy(self, entry: MountEntry, remote: AsyncContainer, blob: str, *,
                            size: int, etag: str | None, shown_path: str,
                            ) -> tuple[Path, bool, Filling | BlockReader | None]:
        """Like cached_copy, for a reader: a large file that comes by SDK ranges is
        handed over once its first bytes are in, with the Filling to wait on; one
        larger than `block_min`, at once, with the BlockReader to read it through
        (unless a whole copy is there, or on its way)."""
        path = self.cache.path_for(entry, blob)
        # Being edited by blocks: another reader gets the whole file (the rest fetched).
        await self.patches.complete(path)
        filling = self._fillings.get(path)
        if (filling is None and etag and self.blocks.takes(size, etag)
                and not self._flights.running(path)):
            if self.cache.usable(path, etag):
                return path, False, None
            window = blocks_window(entry.cache_max_bytes, BLOCKS_WINDOW_MAX)
            reader, fresh = self.blocks.open(remote, blob, path, size=size, etag=etag,
                                             window_max=window)
            if fresh:
                self._count(shown_path)
            return path, fresh, reader
        if (filling is None and self._background is not None and fill_in_ranges(size)
                and self._by_sdk(remote, size) and not self._flights.running(path)):
            if self.cache.usable(path, etag):  # asked once: a warm open's only question
                return path, False, None
            if await self._background.start(self._fill, entry, remote, blob, size, etag,
                                            shown_path, path):
                # None again if it already failed (say, the account is away): the
                # download below says why.
                filling = self._fillings.get(path)
        if filling is None:
            return (*await self.cached_copy(entry, remote, blob, size=size, etag=etag,
                                            shown_path=shown_path), None)
        await filling.started.wait()
        filling.check()
        return path, True, filling

    async def writable_copy(self, entry: MountEntry, remote: AsyncContainer, blob: str, *,
                            size: int, etag: str | None, shown_path: str) -> tuple[Path, bool]:
        """Like cached_copy, for a writer: a blob read by blocks is edited by blocks
        (patch.py), with no download, when a snapshot of it can be taken, nothing else
        has its copy open, and AzCopy's signing (a SAS) can reach its snapshot."""
        path = self.cache.path_for(entry, blob)
        if self.patches.get(path) is not None:
            return path, False
        if (etag and self.blocks.takes(size, etag) and remote.azcopy_can_sign
                and not self._flights.running(path) and path not in self._fillings
                and not self.blocks.is_open(path) and not self.cache.usable(path, etag)
                and await self.patches.start(remote, blob, path, size=size, etag=etag)):
            self._count(shown_path)
            return path, True
        return await self.cached_copy(entry, remote, blob, size=size, etag=etag,
                                      shown_path=shown_path)

    async def before_read(self, path: Path, offset: int, size: int) -> None:
        """A writer's read: the bytes it asks for are in the copy once this returns."""
        await self.patches.before_read(path, offset, size)

    async def before_write(self, path: Path, offset: int, size: int) -> None:
        await self.patches.before_write(path, offset, size)

    async def before_truncate(self, path: Path, size: int) -> None:
        await self.patches.before_truncate(path, size)

    async def _fill(self, entry: MountEntry, remote: AsyncContainer, blob: str, size: int,
                    etag: str | None, shown_path: str, path: Path, *,
                    task_status: trio.TaskStatus[bool] = trio.TASK_STATUS_IGNORED) -> None:
        """The download of a Filling, in the background: it outlives the open() that
        started it. Reports (to `task_status`) whether it leads the file's flight."""
        if self._flights.running(path):
            task_status.started(False)  # another download got there first
            return
        filling = Filling(path, self.cache.temp_path(path), size)

        async def download() -> Path:
            self._fillings[path] = filling
            task_status.started(True)
            if remote.offline():
                raise RemoteUnreachable(f"{remote.label}/{blob}: not in the cache, and the"
                                        " account did not answer just now")
            self._count(shown_path)
            await self._download(entry, remote, blob, size, etag, path, filling=filling)
            self.on_downloaded()
            return path

        try:
            await self._flights.run(path, download)
            filling.finish()
        except BlobmountError as exc:
            filling.finish(exc)
        except Exception as exc:
            log.exception("download of %s failed", shown_path)
            filling.finish(RemoteError(f"download of {shown_path}: {type(exc).__name__}"))
        finally:
            if not filling.done:  # cancelled: the daemon is stopping
                filling.finish(RemoteError(f"download of {shown_path}: stopped"))
            if self._fillings.get(path) is filling:
                del self._fillings[path]

    def _by_sdk(self, remote: AsyncContainer, size: int) -> bool:
        return download_by_sdk(size, self.sdk_max,
                               azcopy_usable=self._azcopy_for is not None and remote.azcopy_usable)

    def write(self, fd: int, path: Path, data: bytes, offset: int) -> int:
        """Write to a cache file open for writing, making room on a full disk first:
        clean copies are dropped, whatever the limits say. ENOSPC only when there is
        no room to be made. The disk keeps ROOM_MARGIN free, for the store's journal:
        a write that would take it fails here, before the disk is full."""
        self._room_for(path, len(data))
        try:
            return os.pwrite(fd, data, offset)
        except OSError as exc:
            if exc.errno != errno.ENOSPC or not self.make_room(path.parent, len(data)):
                raise
        return os.pwrite(fd, data, offset)

    def _room_for(self, path: Path, size: int) -> None:
        """Make room for `size` more bytes beside `path`, or raise ENOSPC."""
        if free_bytes(path.parent) >= size + ROOM_MARGIN:
            return
        self.make_room(path.parent, size)
        if free_bytes(path.parent) < size + ROOM_MARGIN:
            raise OSError(errno.ENOSPC, f"no room for {size} bytes in the cache", str(path))

    async def _download(self, entry: MountEntry, remote: AsyncContainer, blob: str, size: int,
                        etag: str | None, path: Path, *, filling: Filling | None = None,
                        ) -> int:
        """Download `blob` into `path` and record it; the bytes it holds. A `filling`
        gives the temporary name and hears of each new stretch of bytes written.

        A full disk first gets clean copies dropped to make room, and a download that
        meets ENOSPC all the same is tried once more after dropping more (not a
        filling's: readers may have its first bytes already)."""
        self._room_for(path, size)
        try:
            return await self._download_once(entry, remote, blob, size, etag, path,
                                              filling=filling)
        except OSError as exc:
            if (exc.errno != errno.ENOSPC or filling is not None
                    or not self.make_room(path.parent, size)):
                raise
        log.warning("download of %s/%s met a full disk; trying again after making room",
                    remote.label, blob)
        return await self._download_once(entry, remote, blob, size, etag, path)

    async def _download_once(self, entry: MountEntry, remote: AsyncContainer, blob: str, size: int,
                             etag: str | None, path: Path, *,
                             filling: Filling | None = None) -> int:
        temp = filling.temp if filling else self.cache.temp_path(path)
        try:
            if self._by_sdk(remote, size):
                progress = None
                if filling is not None:
                    os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
                    token = trio.lowlevel.current_trio_token()

                    def progress(ready: int) -> None:  # called from the ranges' threads
                        token.run_sync_soon(filling.advance, ready)
                # Each connection of the download holds a token of the daemon's limiter.
                item = await remote.download(blob, temp, size=size, on_progress=progress)
                etag = item.etag
                if filling is not None:
                    filling.passed()
            else:
                if self._azcopy_for is None:  # _by_sdk chooses AzCopy only where there is one
                    raise ToolNotFound("AzCopy was chosen, but this mount runs without it")
                # AzCopy keeps retrying an account that does not answer for minutes; one
                # HEAD, bounded like every SDK call, finds that out first.
                before = await remote.properties(blob)
                access = await remote.azcopy_blob(blob, size=size)
                azcopy = self._azcopy_for(entry)
                await azcopy.copy(access.url, str(temp), from_to="BlobLocal", env=access.env,
                                  extra_args=access.args)
                # The bytes are of the version both looks saw, whatever the listing said.
                after = await remote.properties(blob)
                if after.etag != before.etag:
                    raise RemoteError(f"{remote.label}/{blob} changed while it downloaded")
                etag = before.etag
            # Not fsynced: the record says so, and copysync.py syncs the copies in bulk.
            # A rename and a stat, so in this thread: cheaper than a trip to a worker.
            size = self.cache.install(temp, path, durable=False)
            self.cache.record(path, blob=blob, etag=etag or "", size=size, synced=False)
            log.info("downloaded %s/%s (%d bytes)", remote.label, blob, size)
            return size
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise

async def _nothing() -> None:
    pass
