"""`AsyncContainer`: the one async face the core calls a container by.

It wraps one `RemoteContainer` (the blocking `Remote`, or a test's fake) and the
daemon's one `Threads`: each blocking method becomes an `async def` whose call runs
in a worker thread under that one limiter; a download passes the same limiter on, so
that each of its connections holds a token. Listings become async iterators, every
step of which runs under the limiter. `run_sync` is for the core's local blocking
work (MD5s, preads, fsyncs), so that it is counted with the requests.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import AsyncIterator, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TypeVar, TypeVarTuple

from ..access import AZCOPY_SAS_LIFETIME, AzcopyAccess
from ..config import Account
from ..threads import Threads
from .listing import BlobItem, BlobProperties
from .protocol import RemoteContainer

T = TypeVar("T")
Args = TypeVarTuple("Args")

#: Items of a deep listing taken per worker thread: the SDK fetches them a page (5,000)
#: at a time, so one thread hop per item would cost more than the items do.
LIST_FILES_CHUNK = 1000


class AsyncContainer:
    """One container of one storage account, called from trio."""

    def __init__(self, remote: RemoteContainer, threads: Threads) -> None:
        self.remote = remote
        self.threads = threads

    # -- what needs no thread ------------------------------------------------------

    @property
    def account(self) -> Account:
        return self.remote.account

    @property
    def container(self) -> str:
        return self.remote.container

    @property
    def label(self) -> str:
        return self.remote.label

    def offline(self) -> bool:
        return self.remote.offline()

    def blob_url(self, blob: str = "") -> str:
        return self.remote.blob_url(blob)

    @property
    def azcopy_can_sign(self) -> bool:
        return self.remote.azcopy_can_sign

    @property
    def azcopy_usable(self) -> bool:
        return self.remote.azcopy_usable

    async def run_sync(self, fn: Callable[[*Args], T], *args: *Args) -> T:
        """Local blocking work, in a worker thread under the same limiter."""
        return await self.threads.run_sync(fn, *args)

    # -- the account ---------------------------------------------------------------

    async def check(self) -> None:
        await self.run_sync(self.remote.check)

    # -- listings and properties ---------------------------------------------------

    async def list_pages(self, prefix: str, page_size: int = 5000,
                         ) -> AsyncIterator[list[BlobItem]]:
        """The direct children of `prefix`, a page at a time (each fetched in a thread)."""
        pages = await self.run_sync(lambda: iter(self.remote.list_pages(prefix, page_size)))
        while (page := await self.run_sync(next, pages, None)) is not None:
            yield page

    async def list_tree(self, prefix: str, most: int) -> tuple[list[BlobItem], bool]:
        """Every blob under `prefix` by one request of at most `most`, and whether that
        is all (Remote.list_tree)."""
        return await self.run_sync(self.remote.list_tree, prefix, most)

    async def list_files(self, prefix: str) -> AsyncIterator[BlobItem]:
        """Every blob under `prefix` at any depth, LIST_FILES_CHUNK items a thread."""
        items = await self.run_sync(lambda: iter(self.remote.list_files(prefix)))
        while chunk := await self.run_sync(
                lambda: list(itertools.islice(items, LIST_FILES_CHUNK))):
            for item in chunk:
                yield item

    async def list_all(self, prefix: str) -> list[str]:
        return await self.run_sync(self.remote.list_all, prefix)

    async def properties(self, blob: str, *, retries: int | None = None) -> BlobItem:
        return await self.run_sync(partial(self.remote.properties, blob, retries=retries))

    async def head(self, blob: str, *, retries: int | None = None) -> BlobProperties:
        return await self.run_sync(partial(self.remote.head, blob, retries=retries))

    async def update_metadata(self, blob: str, changes: Mapping[str, str | None],
                              ) -> tuple[str, str]:
        return await self.run_sync(self.remote.update_metadata, blob, changes)

    async def tags(self, blob: str) -> dict[str, str]:
        return await self.run_sync(self.remote.tags, blob)

    async def update_tags(self, blob: str, changes: Mapping[str, str | None],
                          ) -> dict[str, str]:
        return await self.run_sync(self.remote.update_tags, blob, changes)

    # -- reads ---------------------------------------------------------------------

    async def download(self, blob: str, destination: Path, *, size: int | None = None,
                       concurrency: int = 4,
                       on_progress: Callable[[int], None] | None = None) -> BlobItem:
        """The blob's bytes into `destination`; each connection holds a token."""
        return await self.remote.download_async(
            blob, destination, size=size, concurrency=concurrency, on_progress=on_progress,
            limiter=self.threads.limiter)

    async def read_blocks(self, blob: str, fd: int, start: int, end: int, etag: str,
                          block: int) -> list[int]:
        return await self.run_sync(self.remote.read_blocks, blob, fd, start, end, etag, block)

    async def read_small(self, blob: str) -> bytes:
        return await self.run_sync(self.remote.read_small, blob)

    # -- writes --------------------------------------------------------------------

    async def upload(self, blob: str, source: Path, *, base_etag: str, md5: str,
                     metadata: dict[str, str] | None = None, concurrency: int = 4,
                     retries: int | None = None) -> BlobItem:
        return await self.run_sync(partial(
            self.remote.upload, blob, source, base_etag=base_etag, md5=md5,
            metadata=metadata, concurrency=concurrency, retries=retries))

    async def put_small(self, blob: str, data: bytes, metadata: Mapping[str, str],
                        ) -> BlobItem:
        return await self.run_sync(self.remote.put_small, blob, data, metadata)

    async def make_folder(self, prefix: str, *, exclusive: bool = False,
                          metadata: Mapping[str, str] | None = None) -> BlobItem:
        return await self.run_sync(partial(self.remote.make_folder, prefix,
                                           exclusive=exclusive, metadata=metadata))

    async def delete(self, blob: str) -> None:
        await self.run_sync(self.remote.delete, blob)

    async def copy(self, source: str, destination: str) -> str | None:
        return await self.run_sync(self.remote.copy, source, destination)

    # -- edits by blocks -----------------------------------------------------------

    async def snapshot(self, blob: str, etag: str) -> str:
        return await self.run_sync(self.remote.snapshot, blob, etag)

    async def delete_snapshot(self, blob: str, snapshot: str) -> None:
        await self.run_sync(self.remote.delete_snapshot, blob, snapshot)

    async def snapshot_source(self, blob: str, snapshot: str) -> str:
        return await self.run_sync(self.remote.snapshot_source, blob, snapshot)

    async def stage_block(self, blob: str, block_id: str, data: bytes, *,
                          retries: int | None = None) -> None:
        await self.run_sync(partial(self.remote.stage_block, blob, block_id, data,
                                    retries=retries))

    async def stage_block_from_url(self, blob: str, block_id: str, source_url: str,
                                   offset: int, length: int, source_etag: str, *,
                                   retries: int | None = None) -> None:
        await self.run_sync(partial(self.remote.stage_block_from_url, blob, block_id,
                                    source_url, offset, length, source_etag,
                                    retries=retries))

    async def block_list(self, blob: str, snapshot: str = "") -> list[tuple[str, int]]:
        return await self.run_sync(self.remote.block_list, blob, snapshot)

    async def commit_block_names(self, blob: str, names: list[str], *, base_etag: str,
                                 content_type: str | None, md5: str | None,
                                 metadata: dict[str, str], retries: int | None = None,
                                 ) -> str:
        return await self.run_sync(partial(
            self.remote.commit_block_names, blob, names, base_etag=base_etag,
            content_type=content_type, md5=md5, metadata=metadata, retries=retries))

    # -- AzCopy's access (a SAS may need a key asked of the service) ---------------

    async def azcopy_blob(self, blob: str, *, size: int | None) -> AzcopyAccess:
        return await self.run_sync(partial(self.remote.azcopy_blob, blob, size=size))

    async def azcopy_folder(self, folder: str, *, size: int | None) -> AzcopyAccess:
        return await self.run_sync(partial(self.remote.azcopy_folder, folder, size=size))

    async def sas_for_azcopy(self, *, blob: str | None = None, write: bool = False,
                             lifetime: dt.timedelta = AZCOPY_SAS_LIFETIME) -> str:
        return await self.run_sync(partial(self.remote.sas_for_azcopy, blob=blob,
                                           write=write, lifetime=lifetime))
