"""Prefetch batches: many files of one entry into the cache in one go.

The files go in one AzCopy job with a list of files (a few small ones: SDK GETs side
by side, decide.batch_by_sdk). Each file of the batch is a flight of its own while the
job runs, so an open() of it waits for the job instead of downloading it again, and
gets its own download if the job fails.
"""

from __future__ import annotations

import logging
import os
import posixpath
import shutil
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from .azcopy import AzCopy, JobSummary
from .azure import AsyncContainer
from .cache import Cache, fsync_file, fsync_folder
from .config import MountEntry
from .decide import batch_by_sdk
from .errors import BlobmountError, ToolNotFound
from .singleflight import SingleFlight

log = logging.getLogger(__name__)

#: Where a batch's AzCopy job writes, under the entry's cache folder.
STAGING_FOLDER = "staging"


@dataclass(frozen=True, slots=True)
class Wanted:
    """One file of a batch: the blob as a listing found it, and its path in the mount."""

    blob: str
    size: int
    etag: str | None
    shown_path: str


@dataclass
class BatchResult:
    cached: int = 0          # files already in the cache: nothing to do
    downloaded: int = 0      # files downloaded now (by this batch, or a reader's download)
    bytes: int = 0           # bytes downloaded now
    failed: dict[str, str] = field(default_factory=dict)  # shown path -> why


def _listable(blob: str) -> bool:
    """Whether AzCopy's --list-of-files can name this blob (one name a line, trimmed)."""
    return all(segment == segment.strip() for segment in blob.split("/")) and not any(
        char in blob for char in "\n\r\\")


class BatchDownloads:
    """The batches of Downloads (a mixin: the flights and downloads are transfers.py's)."""

    cache: Cache
    sdk_max: int
    prefetched: dict[str, int]
    on_downloaded: Callable[[], None]
    _azcopy_for: Callable[[MountEntry], AzCopy] | None
    _flights: SingleFlight
    #: Downloads' own: count a download of a shown path; download a blob into a path
    _count: Callable[[str], None]
    _download: Callable[..., Awaitable[int]]

    async def fetch_batch(self, entry: MountEntry, remote: AsyncContainer,
                          wanted: Sequence[Wanted], *,
                          on_progress: Callable[[int, int], None] = lambda files, size: None,
                          ) -> BatchResult:
        """Bring every file of `wanted` (all of one entry) into the cache.

        Files already cached are left alone. The rest go in one AzCopy job with a list
        of files (a few small ones: SDK GETs side by side); a file the job could not
        bring gets a download of its own. `on_progress(files, bytes)` is told how much
        of the batch is done so far. Failures are returned, by shown path, not raised.
        """
        result = BatchResult()
        todo = []
        for item in wanted:
            path = self.cache.path_for(entry, item.blob)
            if not self._flights.running(path) and self.cache.usable(path, item.etag):
                result.cached += 1
            else:
                todo.append(item)
        if not todo:
            return result
        small = batch_by_sdk([item.size for item in todo], self.sdk_max)
        progress = _Progress(on_progress)
        done = trio.Event()
        installed: set[Path] = set()
        async with trio.open_nursery() as nursery:
            owned: list[Wanted] = []
            for item in todo:
                if await nursery.start(self._batch_flight, entry, remote, item, done,
                                       installed, result, progress):
                    owned.append(item)
            batch = [item for item in owned if _listable(item.blob)]
            try:
                if (batch and self._azcopy_for is not None and not small
                        and remote.azcopy_usable):
                    await self._azcopy_batch(entry, remote, batch, installed, result, progress)
            except BlobmountError as exc:
                log.warning("prefetch of %d files of %s by one AzCopy job failed; each gets"
                            " a download of its own: %s", len(batch), entry.local, exc)
            finally:
                done.set()
        self.prefetched["files"] += result.downloaded
        self.prefetched["bytes"] += result.bytes
        self.on_downloaded()
        return result

    async def _batch_flight(self, entry: MountEntry, remote: AsyncContainer, item: Wanted,
                            done: trio.Event, installed: set[Path], result: BatchResult,
                            progress: _Progress, *,
                            task_status: trio.TaskStatus[bool] = trio.TASK_STATUS_IGNORED,
                            ) -> None:
        """One file of a batch as a flight: it waits for the job, else downloads alone.

        Reports (to `task_status`) whether this batch leads the file's flight; when a
        reader's download was already under way, it waits for that one instead.
        """
        path = self.cache.path_for(entry, item.blob)
        leading = not self._flights.running(path)

        async def work() -> Path:
            task_status.started(True)
            await done.wait()
            if path in installed:
                return path
            if self.cache.usable(path, item.etag):  # cached meanwhile (a write, say)
                return path
            self._count(item.shown_path)
            size = await self._download(entry, remote, item.blob, item.size, item.etag, path)
            result.downloaded += 1
            result.bytes += size
            progress.add(1, size)
            return path

        if not leading:
            task_status.started(False)
        try:
            await self._flights.run(path, work)
            if not leading:  # a reader's download brought it
                result.cached += 1
                progress.add(1, item.size)
        except BlobmountError as exc:
            result.failed[item.shown_path] = str(exc)
        except OSError as exc:  # a full disk, say: this file fails, the batch goes on
            result.failed[item.shown_path] = f"{exc.strerror or exc}"

    async def _azcopy_batch(self, entry: MountEntry, remote: AsyncContainer, batch: list[Wanted],
                            installed: set[Path], result: BatchResult,
                            progress: _Progress) -> None:
        """One AzCopy job for the whole batch, into a staging folder; then each file is
        moved to its cache path and recorded with the ETag its listing gave."""
        if self._azcopy_for is None:  # fetch_batch batches only where there is one
            raise ToolNotFound("AzCopy was chosen, but this mount runs without it")
        names = [item.blob for item in batch]
        common = posixpath.commonprefix(names)
        folder = common[:common.rfind("/") + 1]  # '' or 'a/b/'
        staging = entry.cache_dir / STAGING_FOLDER / uuid.uuid4().hex[:12]
        destination = staging / "out"
        listing = staging / "files.txt"

        def prepare() -> None:
            destination.mkdir(parents=True)
            listing.write_text("".join(f"{name[len(folder):]}\n" for name in names),
                               encoding="utf-8", errors="surrogateescape")

        try:
            await remote.run_sync(prepare)
            access = await remote.azcopy_folder(folder, size=sum(item.size for item in batch))
            # AzCopy puts the files under the source's last segment.
            root = destination / (folder.rstrip("/").rsplit("/", 1)[-1] if folder
                                  else remote.container)

            def job_progress(summary: JobSummary) -> None:
                progress.job(summary.transfers_completed, summary.bytes_transferred)

            started = trio.current_time()
            await self._azcopy_for(entry).copy(access.url, str(destination),
                                               from_to="BlobLocal", list_of_files=listing,
                                               on_progress=job_progress, env=access.env,
                                               extra_args=access.args)
            copied = trio.current_time()
            # A file changed in the container since its listing (before or during the
            # job) holds bytes of an unknown version: it is left for its next open.
            now = {item.name: item.etag async for item in remote.list_files(folder)}
            unchanged = [item for item in batch if item.etag and now.get(item.blob) == item.etag]
            moves = [(root / item.blob[len(folder):], self.cache.path_for(entry, item.blob))
                     for item in unchanged]
            sizes = await remote.run_sync(_install_all, moves)
            for item, (_, path), size in zip(unchanged, moves, sizes, strict=True):
                if size is None:
                    continue
                self.cache.record(path, blob=item.blob, etag=item.etag or "", size=size)
                installed.add(path)
                self._count(item.shown_path)
                result.downloaded += 1
                result.bytes += size
            progress.job_done(len(installed), sum(s for s in sizes if s is not None))
            log.info("prefetched %d files of %s/%s (%d bytes) in one AzCopy job: %.1f s,"
                     " then %.1f s to move them into the cache", len(installed), remote.label,
                     folder, sum(s or 0 for s in sizes), copied - started,
                     trio.current_time() - copied)
        finally:
            with trio.CancelScope(shield=True):  # cancelled too (Ctrl-C on prefetch)
                await remote.run_sync(partial(shutil.rmtree, staging, ignore_errors=True))


class _Progress:
    """A batch's progress: AzCopy's counters while its job runs, plus files done alone."""

    def __init__(self, report: Callable[[int, int], None]) -> None:
        self._report = report
        self._job = (0, 0)
        self._alone = (0, 0)

    def job(self, files: int, size: int) -> None:
        self._job = (files, size)
        self._tell()

    def job_done(self, files: int, size: int) -> None:
        self.job(files, size)

    def add(self, files: int, size: int) -> None:
        self._alone = (self._alone[0] + files, self._alone[1] + size)
        self._tell()

    def _tell(self) -> None:
        self._report(self._job[0] + self._alone[0], self._job[1] + self._alone[1])


def _install_all(moves: list[tuple[Path, Path]]) -> list[int | None]:
    """Move each downloaded file to its cache path, durably; each one's size (None: the
    job left no such file). Blocks: run it in a worker thread."""
    sizes: list[int | None] = []
    folders = set()
    for source, target in moves:
        try:
            fsync_file(source)
            size = source.stat().st_size
        except FileNotFoundError:
            sizes.append(None)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        folders.add(target.parent)
        sizes.append(size)
    for folder in folders:
        fsync_folder(folder)
    return sizes
