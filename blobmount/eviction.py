"""Keeping each entry's cache folder within its limits.

The policy is a pure function over the cached files' records (`plan_eviction`); the
`Evictor` runs it in the daemon, woken after downloads and every little while for the
age limit, and drops what it chose. Only clean copies go (identical to their blob):
never a dirty one, one with an upload in the journal, one open through the mount or
one being downloaded. Sizes are the records' (the bytes in the cache folder), not the
disk's. A partial copy (blocks.py) goes block by block: each of its blocks is an item
of its own here (named by cache.block_key), never one being read or fetched.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from .cache import BLOBS_FOLDER, Cache, block_key, split_block_key
from .cachetables import CopyState
from .config import MountEntry
from .store import CachedFile, Store

log = logging.getLogger(__name__)

#: Seconds between passes when nothing wakes the task (shorter when an age limit is).
EVICT_INTERVAL = 30.0
#: Seconds between retries when files that should go are still open.
DROP_RETRY = 0.5
#: Bytes a full cache disk is left with beyond what a download or write needs: the
#: store's journal and WAL must still fit on it.
ROOM_MARGIN = 4 * 1024 * 1024


def free_bytes(folder: Path) -> int:
    """What the disk holding `folder` (or its nearest existing parent) has free."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    disk = os.statvfs(folder)
    return disk.f_bavail * disk.f_frsize


@dataclass(frozen=True, slots=True)
class Limits:
    """One cache folder's limits. None: no limit of that kind."""

    max_bytes: int | None = None
    max_age: float | None = None  # seconds since last use
    low_watermark: float = 0.8  # above max_bytes, evict down to this fraction of it

    @property
    def any(self) -> bool:
        return self.max_bytes is not None or self.max_age is not None


def plan_eviction(files: Iterable[CachedFile], limits: Limits, *, now: float,
                  keep: Collection[str] = (), arriving: int = 0) -> list[CachedFile]:
    """The copies to drop to bring one cache folder within `limits`.

    Only clean copies whose path is not in `keep` can go. First every one unused for
    `max_age`; then, if the folder (every file counted, dirty ones too, and the
    `arriving` bytes of blocks being fetched into it) still holds more than
    `max_bytes`, the least recently used, until it holds at most
    `low_watermark * max_bytes` or nothing more may go.
    """
    files = list(files)
    evictable = sorted((f for f in files if f.state == CopyState.CLEAN and f.path not in keep),
                       key=lambda f: (f.last_access, f.path))
    chosen: list[CachedFile] = []
    if limits.max_age is not None:
        chosen = [f for f in evictable if now - f.last_access >= limits.max_age]
    total = sum(f.size for f in files) + arriving - sum(f.size for f in chosen)
    if limits.max_bytes is not None and total > limits.max_bytes:
        target = limits.max_bytes * limits.low_watermark
        taken = {f.path for f in chosen}
        for f in evictable:
            if total <= target:
                break
            if f.path not in taken:
                chosen.append(f)
                total -= f.size
    return chosen


def limits_of(entry: MountEntry, low_watermark: float) -> Limits:
    return Limits(entry.cache_max_bytes, entry.cache_max_age, low_watermark)


def blobs_prefix(entry: MountEntry) -> str:
    """The path prefix of every cache file of `entry` (for store queries)."""
    return f"{entry.cache_dir / BLOBS_FOLDER}/"


def _size_now(path: str) -> int:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return 0


class Evictor:
    """Drops clean cached copies: to keep folders within limits, and on request."""

    def __init__(self, store: Store, cache: Cache, entries: Sequence[MountEntry], *,
                 low_watermark: float) -> None:
        self.store = store
        self.cache = cache
        self.entries = entries
        self.limits = [limits_of(entry, low_watermark) for entry in entries]
        self._in_use: list[Callable[[], set[str]]] = []
        self._arriving: Callable[[], dict[str, int]] = dict
        self._wake = trio.Event()
        #: written files uploaded from a drop_after_upload entry, still to drop
        self._drop_after_upload: set[str] = set()
        #: a folder stayed over its limit only because files were open: retry soon
        self._blocked = False
        self._retries = 0  # retries in a row with nothing new: each waits twice as long
        self.evicted = {"files": 0, "bytes": 0}

    def wake(self) -> None:
        self._wake.set()

    def protect(self, in_use: Callable[[], set[str]]) -> None:
        """Never evict the cache files `in_use()` names (open, being downloaded)."""
        self._in_use.append(in_use)

    def expect(self, arriving: Callable[[], dict[str, int]]) -> None:
        """Count the blocks `arriving()` names (cache.block_key: size), being fetched,
        as in the cache already: a read-ahead window fills the room it will take."""
        self._arriving = arriving

    def uploaded(self, entry: MountEntry, blob: str) -> None:
        """A written file is in the container: drop its copy now if its entry says so."""
        if entry.drop_after_upload:
            self._drop_after_upload.add(str(self.cache.path_for(entry, blob)))
            self.wake()

    def in_use(self) -> set[str]:
        """Copies open or being downloaded right now."""
        found: set[str] = set()
        for in_use in self._in_use:
            found |= in_use()
        return found

    def _interval(self) -> float:
        if self._drop_after_upload or self._blocked:
            return min(EVICT_INTERVAL, DROP_RETRY * 2 ** min(self._retries, 10))
        ages = [limits.max_age for limits in self.limits if limits.max_age is not None]
        return max(1.0, min([EVICT_INTERVAL, *(age / 2 for age in ages)]))

    async def run(self) -> None:
        """Keep every folder within its limits until cancelled."""
        while True:
            try:
                self.pass_once()
            except Exception:
                log.exception("cache eviction failed")
            with trio.move_on_after(self._interval()):
                await self._wake.wait()
            self._retries = 0 if self._wake.is_set() else self._retries + 1
            self._wake = trio.Event()

    def pass_once(self, now: float | None = None) -> tuple[int, int]:
        """One pass over every folder: (files, bytes) dropped."""
        now = time.time() if now is None else now
        @functools.cache
        def open_and_kept() -> tuple[set[str], set[str]]:
            """What is open, and that with what is journaled: asked for only once
            something may go (a stream's every GET wakes this; its open blocks are
            thousands)."""
            in_use = self.in_use()
            return in_use, in_use | self.store.upload_paths()

        chosen: list[CachedFile] = []
        self._blocked = False
        fetching = self._arriving()
        for entry, limits in zip(self.entries, self.limits, strict=True):
            if not limits.any:
                continue
            prefix = blobs_prefix(entry)
            if limits.max_age is None and limits.max_bytes is not None \
                    and self.folder_bytes(entry) + sum(size for key, size in fetching.items()
                                               if key.startswith(prefix)) <= limits.max_bytes:
                # Within the limit: every download wakes this, and reading every copy's
                # record each time was most of the daemon's work in a large cache
                # (0.5 s a pass with 100,000 copies; a sum of their sizes takes 10 ms).
                continue
            in_use, keep = open_and_kept()
            files = self.measured(entry)
            landed = {f.path for f in files}
            arriving = sum(size for key, size in fetching.items()
                           if key.startswith(prefix) and key not in landed)
            planned = plan_eviction(files, limits, now=now, keep=keep, arriving=arriving)
            chosen += planned
            if limits.max_bytes is not None and any(
                    f.path in in_use and f.state == CopyState.CLEAN for f in files):
                left = sum(f.size for f in files) + arriving - sum(f.size for f in planned)
                # Files just read are still open for a moment (the kernel releases
                # them after close() returns): try again once they are closed.
                self._blocked = self._blocked or left > limits.max_bytes
        for path in list(self._drop_after_upload):
            _, keep = open_and_kept()
            record = self.store.cached_file(path)
            if record is None or record.state != CopyState.CLEAN:
                self._drop_after_upload.discard(path)  # gone, or written again
            elif path not in keep:
                chosen.append(record)
                self._drop_after_upload.discard(path)
        return self.drop(chosen)

    def make_room(self, folder: Path, needed: int) -> int:
        """Whatever the limits say: drop the least recently used clean copies (and
        partial ones not open) on the disk of `folder` until it has `needed` bytes free
        (and ROOM_MARGIN beyond);
        the bytes dropped. 0: there was room, or nothing could go."""
        free = free_bytes(folder)
        if free >= needed + ROOM_MARGIN:
            return 0
        device = _device(folder)
        keep = self.in_use() | self.store.upload_paths()
        candidates = [record for entry in self.entries if _device(entry.cache_dir) == device
                      for record in self.store.cached_files(blobs_prefix(entry))
                      if record.state != CopyState.DIRTY and record.path not in keep]
        candidates.sort(key=lambda record: (record.last_access, record.path))
        chosen = []
        for record in candidates:
            if free >= needed + ROOM_MARGIN:
                break
            chosen.append(record)
            free += record.size
        count, size = self.drop(chosen)
        if count:
            log.warning("the cache's disk (%s) is full: dropped %d clean copies (%d bytes) to"
                        " make room", folder, count, size)
        return size

    def drop(self, files: Iterable[CachedFile]) -> tuple[int, int]:
        """Forget and delete these copies; (files, bytes) dropped."""
        count = size = 0
        seen = set()
        blocks: dict[str, list[tuple[int, int]]] = {}  # copy -> its blocks to drop
        for record in files:
            if record.path in seen:
                continue
            seen.add(record.path)
            block = split_block_key(record.path)
            if block is None:
                self.cache.forget(record.path)
                count += 1
            else:
                blocks.setdefault(block[0], []).append((block[1], record.size))
            size += record.size
        for path, dropped in blocks.items():
            self.cache.drop_blocks(path, dropped)
        if count:
            self.evicted["files"] += count
            self.evicted["bytes"] += size
            log.info("dropped %d cached copies (%d bytes)", count, size)
        return count, size

    def folder_bytes(self, entry: MountEntry) -> int:
        """Bytes in the entry's cache folder (what its limit is about): each copy's
        recorded size (a partial one's, its blocks'), a dirty one's as its file has it
        now (the record has the size of the last close)."""
        prefix = blobs_prefix(entry)
        held = self.store.cached_bytes(prefix)
        for record in self.store.cached_files(prefix, state=CopyState.DIRTY):
            held += _size_now(record.path) - record.size
        return held

    def measured(self, entry: MountEntry, *, blocks: bool = True) -> list[CachedFile]:
        """The records of an entry's cached files, each dirty one with the size its file
        has now (the record has the size of the last close), each partial one as its
        blocks (clean items named by cache.block_key), or with `blocks` False as one
        item of their bytes."""
        files = self.store.cached_files(blobs_prefix(entry))
        for index, record in enumerate(files):
            if record.state == CopyState.DIRTY:
                files[index] = dataclasses.replace(record, size=_size_now(record.path))
        return self._as_blocks(entry, files) if blocks else files

    def _as_blocks(self, entry: MountEntry, files: list[CachedFile]) -> list[CachedFile]:
        """`files` (measured), each partial copy replaced by its blocks."""
        if not any(record.state == CopyState.PARTIAL for record in files):
            return files
        partial = {record.path: record for record in files if record.state == CopyState.PARTIAL}
        return [record for record in files if record.state != CopyState.PARTIAL] + [
            CachedFile(block_key(block.path, block.start), record.blob, record.etag,
                       block.size, CopyState.CLEAN, block.last_access)
            for block in self.store.cached_blocks(blobs_prefix(entry))
            if (record := partial.get(block.path)) is not None]



def _device(folder: Path) -> int | None:
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return folder.stat().st_dev
    except OSError:
        return None


def cache_space(entries: Sequence[MountEntry], store: Store) -> tuple[int, int]:
    """(capacity, free) bytes of the mount's caches, as statfs shows them.

    With a cache_max_bytes on every entry: the sum of the limits, and what they leave.
    Otherwise: the cached bytes plus what the disk of the first unlimited cache folder
    has free, and that free space.
    """
    used = sum(store.cached_bytes(blobs_prefix(entry)) for entry in entries)
    if entries and all(entry.cache_max_bytes for entry in entries):
        total = sum(entry.cache_max_bytes or 0 for entry in entries)
        return total, max(0, total - used)
    unlimited = next((e.cache_dir for e in entries if not e.cache_max_bytes), Path("/"))
    free = free_bytes(unlimited)
    return used + free, free


def entry_of_cache_file(entries: Sequence[MountEntry], path: str | Path) -> int | None:
    """The index of the entry whose cache folder holds `path`, or None."""
    text = str(path)
    for index, entry in enumerate(entries):
        if text.startswith(blobs_prefix(entry)):
            return index
    return None
