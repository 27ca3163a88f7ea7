"""Edits by blocks (patch.py): snapshots of a blob, blocks staged from bytes or copied
server-side from a snapshot, and the commit of a block list."""

from __future__ import annotations

import contextlib

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobBlock, ContentSettings

from .base import ContainerBase
from .listing import bare_etag
from .transport import retry_options


class Staging(ContainerBase):
    """Snapshots and blocks of a container's blobs (a part of Remote)."""

    def snapshot(self, blob: str, etag: str) -> str:
        """Take a snapshot of the blob's version `etag` (RemoteConflict if the blob is
        another now); the snapshot's time stamp, which names it."""
        with self._call(f"snapshot of {self.label}/{blob}"):
            result = self._client.get_blob_client(blob).create_snapshot(
                etag=f'"{etag}"', match_condition=MatchConditions.IfNotModified)
        return str(result["snapshot"])

    def delete_snapshot(self, blob: str, snapshot: str) -> None:
        """Delete one snapshot of a blob; one already gone is fine."""
        with self._call(f"delete of a snapshot of {self.label}/{blob}"), contextlib.suppress(
                ResourceNotFoundError):
            self._client.get_blob_client(blob, snapshot=snapshot).delete_blob()

    def stage_block_from_url(self, blob: str, block_id: str, source_url: str, offset: int,
                             length: int, source_etag: str, *,
                             retries: int | None = None) -> None:
        """Stage bytes [offset, offset + length) of `source_url` (of version
        `source_etag`: If-Match) as an uncommitted block of `blob`, server-side."""
        # The SDK's public call takes no source condition: the header goes as one of
        # the call's own headers (azure-core's `headers` option), as the SDK would send it.
        with self._call(f"copy of blocks of {self.label}/{blob}"):
            self._client.get_blob_client(blob).stage_block_from_url(
                block_id, source_url, source_offset=offset, source_length=length,
                headers={"x-ms-source-if-match": f'"{source_etag}"'}, **retry_options(retries))

    def stage_block(self, blob: str, block_id: str, data: bytes, *,
                    retries: int | None = None) -> None:
        """Stage `data` as an uncommitted block of `blob` (its MD5 checked on arrival)."""
        with self._call(f"upload of blocks of {self.label}/{blob}"):
            self._client.get_blob_client(blob).stage_block(
                block_id, data, length=len(data), validate_content=True, **retry_options(retries))

    def commit_blocks(self, blob: str, block_ids: list[str], *, base_etag: str,
                      content_type: str | None, md5: str | None, metadata: dict[str, str],
                      retries: int | None = None) -> str:
        """Make the staged blocks, in this order, the blob's bytes, only if the blob is
        still the version `base_etag` ('' = only if there is no blob): RemoteConflict
        otherwise. The new ETag."""
        condition = ({"etag": f'"{base_etag}"', "match_condition": MatchConditions.IfNotModified}
                     if base_etag else {"match_condition": MatchConditions.IfMissing})
        settings = ContentSettings(content_type=content_type,
                                   content_md5=bytearray.fromhex(md5) if md5 else None)
        with self._call(f"commit of {self.label}/{blob}"):
            result = self._client.get_blob_client(blob).commit_block_list(
                [BlobBlock(block_id) for block_id in block_ids], content_settings=settings,
                metadata=metadata, **condition, **retry_options(retries))
        return bare_etag(result.get("etag")) or ""

    def committed_blocks(self, blob: str) -> list[str]:
        """The IDs of the blob's committed blocks, in order."""
        with self._call(f"block list of {self.label}/{blob}"):
            committed, _ = self._client.get_blob_client(blob).get_block_list("committed")
        return [block.id for block in committed or []]
