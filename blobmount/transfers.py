"""Moving bytes between the container and the cache.

One download per file however many readers wait for it (single-flight on the cache
path). Small blobs come by one SDK GET, which costs milliseconds; large ones by an
AzCopy job, which costs about two seconds to start but moves big files fastest.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path

import trio

from .azcopy import AzCopy
from .cache import Cache, fsync_file
from .config import MountEntry
from .remote import Remote
from .singleflight import SingleFlight

log = logging.getLogger(__name__)


class Downloads:
    """Brings blobs into the cache, and counts the downloads it starts."""

    def __init__(self, cache: Cache, azcopy_for: Callable[[MountEntry], AzCopy] | None, *,
                 sdk_max: int, limiter: trio.CapacityLimiter) -> None:
        self.cache = cache
        self._azcopy_for = azcopy_for
        self.sdk_max = sdk_max
        self._limiter = limiter
        self._flights = SingleFlight()
        #: downloads started since the mount, by path relative to the mount point
        self.started: Counter[str] = Counter()

    async def cached_copy(self, entry: MountEntry, remote: Remote, blob: str, *, size: int,
                          etag: str | None, shown_path: str) -> tuple[Path, bool]:
        """The cache file holding `blob` at `etag`, and whether it was downloaded now."""
        path = self.cache.path_for(entry, blob)
        if not self._flights.running(path) and self.cache.usable(path, etag):
            return path, False

        async def download() -> Path:
            # Another flight may have finished just before this one started.
            if self.cache.usable(path, etag):
                return path
            self.started[shown_path] += 1
            await self._download(entry, remote, blob, size, etag, path)
            return path

        await self._flights.run(path, download)
        return path, True

    async def _download(self, entry: MountEntry, remote: Remote, blob: str, size: int,
                        etag: str | None, path: Path) -> None:
        temp = self.cache.temp_path(path)
        try:
            if size <= self.sdk_max or self._azcopy_for is None:
                item = await trio.to_thread.run_sync(remote.download, blob, temp,
                                                     limiter=self._limiter)
                etag = item.etag
            else:
                sas = await trio.to_thread.run_sync(partial(remote.sas_for_azcopy, blob=blob))
                azcopy = self._azcopy_for(entry)
                await azcopy.copy(f"{remote.blob_url(blob)}?{sas}", str(temp),
                                  from_to="BlobLocal")
                await trio.to_thread.run_sync(fsync_file, temp, limiter=self._limiter)
            size = await trio.to_thread.run_sync(self.cache.install, temp, path,
                                                 limiter=self._limiter)
            self.cache.record(path, blob=blob, etag=etag or "", size=size)
            log.info("downloaded %s/%s (%d bytes)", remote.label, blob, size)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise
