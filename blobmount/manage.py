"""The control requests that manage a live mount's cache: prefetch, cache ls / evict /
clear, and stats. The daemon registers `Manager.handlers()` on its control socket.

Every path in a request is relative to the mount point ('' is the mount point). Folders
are expanded by listing the container through the SDK, never by walking the mount: the
daemon serving it would wait for itself.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import defaultdict
from collections.abc import MutableSequence, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import trio

from . import azcopy
from .azure import AsyncContainer, BlobItem
from .cache import Cache, shown_state
from .cachetables import CopyState
from .catalog import Place, files_under, inside, places, shown_path
from .config import MountEntry
from .errors import BlobmountError
from .eviction import Evictor, blobs_prefix
from .metrics import Snapshot
from .store import CachedFile, Store
from .transfers import STAGING_FOLDER, Downloads, Wanted
from .uploads import Uploads

log = logging.getLogger(__name__)

#: Seconds between progress lines sent to a waiting client.
PROGRESS_EVERY = 0.25
#: Listings of this many places run side by side: a prefetch of many paths lists them
#: a few at a time, leaving the daemon's threads to the mount's own requests.
PARALLEL_LISTINGS = 4


class Manager:
    """Cache management for one daemon's mount entries."""

    #: requests that stop when their client goes away
    cancel_on_close = ("prefetch", "hold_async")

    def __init__(self, entries: MutableSequence[MountEntry], remotes: Sequence[AsyncContainer],
                 store: Store, cache: Cache, downloads: Downloads, uploads: Uploads,
                 evictor: Evictor) -> None:
        self.entries = entries
        self.remotes = remotes
        self.store = store
        self.cache = cache
        self.downloads = downloads
        self.uploads = uploads
        self.evictor = evictor
        self._listing = trio.Semaphore(PARALLEL_LISTINGS)
        #: clients holding the mount in async mode, and the entries they switched
        self._async_holds = 0
        self._switched: dict[int, MountEntry] = {}
        for entry in entries:
            # What a prefetch interrupted by a crash left behind.
            shutil.rmtree(entry.cache_dir / STAGING_FOLDER, ignore_errors=True)

    def handlers(self) -> dict[str, Any]:
        return {"prefetch": self.prefetch, "cache_ls": self.cache_ls,
                "cache_evict": self.cache_evict, "stats": self.stats,
                "hold_async": self.hold_async}

    def status(self) -> dict[str, Any]:
        """What `status` adds: AzCopy jobs, prefetch and eviction counts, cache limits."""
        return {
            "azcopy_jobs": azcopy.jobs_started(),
            "prefetched": dict(self.downloads.prefetched),
            "evicted": dict(self.evictor.evicted),
            "async_holds": self._async_holds,
            "cache": [{"local": entry.local, "bytes": self.evictor.folder_bytes(entry),
                       "max_bytes": entry.cache_max_bytes, "max_age": entry.cache_max_age,
                       "drop_after_upload": entry.drop_after_upload}
                      for entry in self.entries],
        }

    def snapshot(self) -> Snapshot:
        """The cache's and the journal's state by entry, for the metrics endpoint."""
        state = Snapshot(evictions=self.evictor.evicted["files"])
        for entry in self.entries:
            state.cache_bytes[entry.local] = self.store.cached_bytes(blobs_prefix(entry))
            state.uploads_pending[entry.local] = state.uploads_failed[entry.local] = 0
        for row in self.store.uploads():
            # Entries may share a container: the longest prefix of the blob's name wins.
            owners = [entry for entry in self.entries
                      if (entry.account.account_name, entry.container) == (row.account,
                                                                           row.container)
                      and row.blob.startswith(entry.prefix)]
            if owners:
                local = max(owners, key=lambda entry: len(entry.prefix)).local
                state.uploads_pending[local] += 1
                state.uploads_failed[local] += bool(row.attempts)
        return state

    # -- listing --------------------------------------------------------------------

    async def _places(self, path: str) -> list[Place]:
        found = places(self.entries, path)
        if not found:
            raise BlobmountError(f"{path or '.'}: not in any mount entry")
        return found

    async def _files(self, place: Place) -> list[tuple[str, BlobItem]]:
        async with self._listing:
            return await files_under(self.remotes[place.index], place)

    async def _expand(self, paths: Sequence[str]) -> tuple[dict[int, dict[str, Wanted]],
                                                           dict[str, str]]:
        """Every file under `paths`, by entry and blob; and the paths that failed."""
        wanted: dict[int, dict[str, Wanted]] = defaultdict(dict)
        failed: dict[str, str] = {}

        async def expand(path: str) -> None:
            try:
                for place in await self._places(path):
                    for shown, item in await self._files(place):
                        wanted[place.index][item.name] = Wanted(item.name, item.size,
                                                                item.etag, shown)
            except BlobmountError as exc:
                failed[path or "."] = str(exc)

        rest, found = await self._siblings(list(dict.fromkeys(paths)))
        for index, item in found:
            wanted[index][item.blob] = item
        async with trio.open_nursery() as nursery:
            for path in rest:
                nursery.start_soon(expand, path)
        return wanted, failed

    async def _siblings(self, paths: list[str]) -> tuple[list[str], list[tuple[int, Wanted]]]:
        """Files named one by one, several of them in a folder (azfuse's prepare of a
        batch): one listing of the folder finds them all, instead of a listing and a
        HEAD each. The paths it does not settle, and (entry, file) for those it does."""
        by_folder: dict[tuple[int, str], list[Place]] = defaultdict(list)
        rest = []
        for path in paths:
            try:
                found = places(self.entries, path)
            except BlobmountError:
                found = []
            if len(found) != 1 or found[0].whole_entry:
                rest.append(path)
                continue
            head, slash, _name = found[0].blob.rpartition("/")
            by_folder[(found[0].index, head + slash)].append(found[0])
        settled: list[tuple[int, Wanted]] = []

        async def settle(index: int, prefix: str, group: list[Place]) -> None:
            try:
                async with self._listing:
                    items = [item async for page in self.remotes[index].list_pages(prefix)
                             for item in page]
            except BlobmountError:
                rest.extend(place.shown for place in group)
                return
            folders = {item.name.rstrip("/") for item in items if item.is_dir}
            files = {item.name: item for item in items if not item.is_dir}
            for place in group:
                item = files.get(place.blob)
                if item is None or place.blob in folders or shown_path(
                        place.entry, place.blob) is None:
                    rest.append(place.shown)  # a folder, missing, or hidden: the long way
                else:
                    settled.append((index, Wanted(item.name, item.size, item.etag,
                                                  place.shown)))

        async with trio.open_nursery() as nursery:
            for (index, prefix), group in by_folder.items():
                if len(group) < 2:
                    rest.extend(place.shown for place in group)
                else:
                    nursery.start_soon(settle, index, prefix, group)
        return rest, settled

    # -- prefetch -------------------------------------------------------------------

    async def prefetch(self, request: dict[str, Any]) -> dict[str, Any]:
        """Download every uncached file under the paths: one AzCopy job per entry."""
        paths = request.get("paths")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise BlobmountError("prefetch: give a list of paths")
        send = request["progress"]
        jobs_before = azcopy.jobs_started()
        wanted, failed = await self._expand(paths)
        total = (sum(len(files) for files in wanted.values()),
                 sum(item.size for files in wanted.values() for item in files.values()))
        # (files, bytes) done, by entry: what was cached already, then what the batch did.
        base: dict[int, tuple[int, int]] = {}
        for index, files in wanted.items():
            cached = [item for item in files.values() if self.cache.usable(
                self.cache.path_for(self.entries[index], item.blob), item.etag)]
            base[index] = (len(cached), sum(item.size for item in cached))
        done = dict(base)

        def progress(index: int, files: int, size: int) -> None:
            done[index] = (base[index][0] + files, base[index][1] + size)

        def update() -> dict[str, int]:
            return {"files_done": sum(f for f, _ in done.values()), "files_total": total[0],
                    "bytes_done": sum(b for _, b in done.values()), "bytes_total": total[1]}

        async def report() -> None:
            last = None
            while True:
                if update() != last:
                    last = update()
                    await send(last)
                await trio.sleep(PROGRESS_EVERY)

        results = {}

        async def fetch(index: int) -> None:
            batch = list(wanted[index].values())
            result = await self.downloads.fetch_batch(
                self.entries[index], self.remotes[index], batch,
                on_progress=partial(progress, index))
            ok = [item for item in batch if item.shown_path not in result.failed]
            done[index] = (len(ok), sum(item.size for item in ok))
            results[index] = result

        async with trio.open_nursery() as nursery:
            nursery.start_soon(report)
            async with trio.open_nursery() as fetches:
                for index in wanted:
                    fetches.start_soon(fetch, index)
            nursery.cancel_scope.cancel()
        await send(update())
        for result in results.values():
            failed.update(result.failed)
        # More than a folder may hold: eviction has dropped some of it already.
        over = [self.entries[index].local for index, files in wanted.items()
                if (limit := self.entries[index].cache_max_bytes) is not None
                and sum(item.size for item in files.values()) > limit]
        return {
            "files": total[0],
            "bytes": total[1],
            "cached": sum(r.cached for r in results.values()),
            "downloaded": sum(r.downloaded for r in results.values()),
            "downloaded_bytes": sum(r.bytes for r in results.values()),
            "azcopy_jobs": azcopy.jobs_started() - jobs_before,
            "over_limit": over,
            "failed": [{"path": path, "error": error} for path, error in sorted(failed.items())],
        }

    # -- upload mode ----------------------------------------------------------------

    async def hold_async(self, request: dict[str, Any]) -> dict[str, Any]:
        """Every writable entry uploads in the background (close() returns once the file
        is journaled) for as long as a client keeps this request open: azfuse's
        async_upload. `entries` is the list the file system reads the mode from; the
        entries get their own mode back when the last holder leaves."""
        self._async_holds += 1
        if self._async_holds == 1:
            for index, entry in enumerate(self.entries):
                if entry.upload != "async" and not entry.read_only:
                    self._switched[index] = entry
                    self.entries[index] = replace(entry, upload="async")
            log.info("uploads in the background while a client holds the mount async")
        try:
            await request["progress"]({"async_holds": self._async_holds})
            await trio.sleep_forever()
        finally:
            self._async_holds -= 1
            if not self._async_holds:
                for index, entry in self._switched.items():
                    self.entries[index] = entry
                self._switched.clear()
        return {}  # never reached: the request ends when its client leaves

    # -- the cache --------------------------------------------------------------------

    def _cached(self, place: Place) -> list[tuple[str, CachedFile]]:
        """(shown path, record) of the cached copies at or under `place`."""
        found = []
        for record in self.store.cached_files(blobs_prefix(place.entry)):
            shown = shown_path(place.entry, record.blob)
            if shown is not None and inside(place, record.blob):
                found.append((shown, record))
        return found

    async def cache_ls(self, request: dict[str, Any]) -> dict[str, Any]:
        pending = self.store.upload_paths()
        in_use = self.evictor.in_use()
        files = []
        for place in await self._places(str(request.get("path", ""))):
            for shown, record in self._cached(place):
                files.append({"path": shown, "size": record.size,
                              "state": shown_state(record, journaled=record.path in pending,
                                                   writing=record.path in in_use),
                              "last_access": record.last_access})
        files.sort(key=lambda f: str(f["path"]))
        return {"files": files}

    async def cache_evict(self, request: dict[str, Any]) -> dict[str, Any]:
        """Drop the clean cached copies under the paths; with force, upload the pending
        ones first. A file open for writing always stays."""
        paths = request.get("paths")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise BlobmountError("cache evict: give a list of paths")
        force = bool(request.get("force"))
        evicted, refused = [], []
        for path in dict.fromkeys(paths):
            for place in await self._places(path):
                for shown, record in self._cached(place):
                    why = await self._evictable(record, force)
                    if why:
                        refused.append({"path": shown, "reason": why})
                        continue
                    fresh = self.store.cached_file(record.path)
                    if fresh is not None and fresh.state != CopyState.DIRTY:
                        self.evictor.drop([fresh])
                        evicted.append({"path": shown, "size": fresh.size})
        return {"evicted": evicted, "refused": refused,
                "bytes": sum(item["size"] for item in evicted)}

    async def _evictable(self, record: CachedFile, force: bool) -> str | None:
        """Why this copy cannot be dropped (None: it can), uploading it first if forced."""
        row = self.store.upload(record.path)
        if record.state != CopyState.DIRTY and row is None:
            return None
        if row is None or record.path in self.evictor.in_use():
            return "open for writing"
        if not force:
            return "not uploaded yet (use --force to upload it first)"
        try:
            await self.uploads.upload_now(Path(record.path), row.version)
        except BlobmountError as exc:
            return f"upload failed: {exc}"
        fresh = self.store.cached_file(record.path)
        if self.store.upload(record.path) is not None or (fresh and fresh.state != CopyState.CLEAN):
            return "written again while uploading"
        return None

    # -- stats --------------------------------------------------------------------------

    async def stats(self, request: dict[str, Any]) -> dict[str, Any]:
        """Per entry (or the folder asked about): files and bytes in the container,
        bytes cached, uploads pending."""
        pending = self.store.uploads()

        async def row(place: Place) -> dict[str, Any]:
            files = await self._files(place)
            cached = self._cached(place)
            entry = place.entry
            waiting = [upload for upload in pending
                       if upload.account == entry.account.account_name
                       and upload.container == entry.container
                       and upload.blob.startswith(entry.prefix) and inside(place, upload.blob)]
            return {
                "path": place.shown,
                "container": f"{entry.account.account_name}/{entry.container}/{place.blob}",
                "files": len(files),
                "bytes": sum(item.size for _, item in files),
                "cached_files": len(cached),
                "cached_bytes": sum(record.size for _, record in cached),
                "pending_uploads": len(waiting),
                "cache_max_bytes": entry.cache_max_bytes,
            }

        started = time.monotonic()
        found = await self._places(str(request.get("path", "")))
        results: list[dict[str, Any] | None] = [None] * len(found)

        async def fill(index: int, place: Place) -> None:
            results[index] = await row(place)

        async with trio.open_nursery() as nursery:
            for index, place in enumerate(found):
                nursery.start_soon(fill, index, place)
        rows = [r for r in results if r is not None]
        log.debug("stats of %d places in %.2f s", len(rows), time.monotonic() - started)
        return {"entries": rows}
