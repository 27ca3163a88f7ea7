"""`RemoteContainer`: what the core calls on a `Remote`, as a `typing.Protocol`.

`Remote` declares it, and so do the unit tests' fakes, so that the type checker holds
each of them to the same signatures. A fake that leaves a method out gets this one,
which raises NotImplementedError: a test that reaches it says what the fake lacks
(but for `download_async`, which has a default made of `download`). The defaults are
calls, not a bare `raise NotImplementedError`, which mypy would take for abstract
methods every fake must write; `tests/unit/test_face.py` checks that `Remote` leaves
none of them to its default.
Every method but `download_async` blocks; see `Remote` (container.py) and its parts
for what each does. The core calls them through `AsyncContainer` (aio.py).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Protocol

import trio

from ..access import AZCOPY_SAS_LIFETIME, AzcopyAccess
from ..config import Account
from .listing import BlobItem, BlobProperties


def _lacks(container: object, method: str) -> NotImplementedError:
    return NotImplementedError(f"{type(container).__name__} has no {method}")


class RemoteContainer(Protocol):
    """One container of one storage account."""

    account: Account
    container: str
    label: str  # 'account/container', for messages

    # -- the account ---------------------------------------------------------------

    def offline(self) -> bool:
        raise _lacks(self, "offline")

    def check(self) -> None:
        raise _lacks(self, "check")

    def create_if_missing(self) -> None:
        raise _lacks(self, "create_if_missing")

    def close(self) -> None:
        raise _lacks(self, "close")

    def blob_url(self, blob: str = "") -> str:
        raise _lacks(self, "blob_url")

    # -- listings and properties ---------------------------------------------------

    def list_pages(self, prefix: str, page_size: int = 5000) -> Iterator[list[BlobItem]]:
        raise _lacks(self, "list_pages")

    def list_tree(self, prefix: str, most: int) -> tuple[list[BlobItem], bool]:
        raise _lacks(self, "list_tree")

    def list_files(self, prefix: str) -> Iterator[BlobItem]:
        raise _lacks(self, "list_files")

    def list_all(self, prefix: str) -> list[str]:
        raise _lacks(self, "list_all")

    def properties(self, blob: str, *, retries: int | None = None) -> BlobItem:
        raise _lacks(self, "properties")

    def head(self, blob: str, *, retries: int | None = None) -> BlobProperties:
        raise _lacks(self, "head")

    def update_metadata(self, blob: str, changes: Mapping[str, str | None]) -> tuple[str, str]:
        raise _lacks(self, "update_metadata")

    def tags(self, blob: str) -> dict[str, str]:
        raise _lacks(self, "tags")

    def update_tags(self, blob: str, changes: Mapping[str, str | None]) -> dict[str, str]:
        raise _lacks(self, "update_tags")

    def set_tier(self, blob: str, tier: str) -> None:
        raise _lacks(self, "set_tier")

    # -- reads ---------------------------------------------------------------------

    def download(self, blob: str, destination: Path, *, size: int | None = None,
                 concurrency: int = 4, on_progress: Callable[[int], None] | None = None,
                 ) -> BlobItem:
        raise _lacks(self, "download")

    async def download_async(self, blob: str, destination: Path, *, size: int | None = None,
                             concurrency: int = 4,
                             on_progress: Callable[[int], None] | None = None,
                             limiter: trio.CapacityLimiter) -> BlobItem:
        """By default, `download` in one worker thread under `limiter` (what a fake
        needs); Remote's own runs each range under it."""
        return await trio.to_thread.run_sync(
            partial(self.download, blob, destination, size=size, concurrency=concurrency,
                    on_progress=on_progress), limiter=limiter)

    def read_blocks(self, blob: str, fd: int, start: int, end: int, etag: str,
                    block: int) -> list[int]:
        raise _lacks(self, "read_blocks")

    def read_range(self, blob: str, offset: int, length: int | None) -> bytes:
        raise _lacks(self, "read_range")

    def read_small(self, blob: str) -> bytes:
        raise _lacks(self, "read_small")

    # -- writes --------------------------------------------------------------------

    def upload(self, blob: str, source: Path, *, base_etag: str, md5: str,
               metadata: dict[str, str] | None = None, concurrency: int = 4,
               retries: int | None = None) -> BlobItem:
        raise _lacks(self, "upload")

    def put_small(self, blob: str, data: bytes, metadata: Mapping[str, str]) -> BlobItem:
        raise _lacks(self, "put_small")

    def make_folder(self, prefix: str, *, exclusive: bool = False,
                    metadata: Mapping[str, str] | None = None) -> BlobItem:
        raise _lacks(self, "make_folder")

    def delete(self, blob: str) -> None:
        raise _lacks(self, "delete")

    def copy(self, source: str, destination: str, *, poll: float = 0.2) -> str | None:
        raise _lacks(self, "copy")

    # -- edits by blocks -----------------------------------------------------------

    def snapshot(self, blob: str, etag: str) -> str:
        raise _lacks(self, "snapshot")

    def delete_snapshot(self, blob: str, snapshot: str) -> None:
        raise _lacks(self, "delete_snapshot")

    def snapshot_source(self, blob: str, snapshot: str) -> str:
        raise _lacks(self, "snapshot_source")

    def stage_block(self, blob: str, block_id: str, data: bytes, *,
                    retries: int | None = None) -> None:
        raise _lacks(self, "stage_block")

    def stage_block_from_url(self, blob: str, block_id: str, source_url: str, offset: int,
                             length: int, source_etag: str, *,
                             retries: int | None = None) -> None:
        raise _lacks(self, "stage_block_from_url")

    def block_list(self, blob: str, snapshot: str = "") -> list[tuple[str, int]]:
        raise _lacks(self, "block_list")

    def commit_block_names(self, blob: str, names: list[str], *, base_etag: str,
                           content_type: str | None, md5: str | None,
                           metadata: dict[str, str], retries: int | None = None) -> str:
        raise _lacks(self, "commit_block_names")

    # -- AzCopy's access -----------------------------------------------------------

    @property
    def azcopy_can_sign(self) -> bool:
        raise _lacks(self, "azcopy_can_sign")

    @property
    def azcopy_usable(self) -> bool:
        raise _lacks(self, "azcopy_usable")

    def azcopy_blob(self, blob: str, *, size: int | None) -> AzcopyAccess:
        raise _lacks(self, "azcopy_blob")

    def azcopy_folder(self, folder: str, *, size: int | None) -> AzcopyAccess:
        raise _lacks(self, "azcopy_folder")

    def sas_for_azcopy(self, *, blob: str | None = None, write: bool = False,
                       lifetime: dt.timedelta = AZCOPY_SAS_LIFETIME) -> str:
        raise _lacks(self, "sas_for_azcopy")
