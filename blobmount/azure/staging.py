"""Edits by blocks (patch.py): snapshots of a blob, blocks staged from bytes or copied
server-side from a snapshot, and the commit of a block list."""

from __future__ import annotations

import contextlib

from azure.core import MatchConditions
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.storage.blob._generated.models import (
    BlobHTTPHeaders,
    BlockLookupList,
    ModifiedAccessConditions,
)

from ..errors import RemoteConflict
from .base import ContainerBase
from .listing import bare_etag
from .ranges import PRECONDITION_FAILED
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

    def block_list(self, blob: str, snapshot: str = "") -> list[tuple[str, int]]:
        """The committed blocks of the blob (of that snapshot of it), in order: each
        one's name as the service gives it (the base64 of its ID) and its size. Empty
        for a blob put in one request."""
        client = self._client.get_blob_client(blob, snapshot=snapshot or None)
        with self._call(f"block list of {self.label}/{blob}"):
            # The generated layer: the SDK's get_block_list decodes the IDs to text,
            # and IDs of raw bytes (AzCopy's) do not survive that.
            listed = client._client.block_blob.get_block_list(
                list_type="committed", snapshot=snapshot or None)
        return [(block.name, block.size) for block in listed.committed_blocks or []]

    def commit_block_names(self, blob: str, names: list[str], *, base_etag: str,
                           content_type: str | None, md5: str | None,
                           metadata: dict[str, str], retries: int | None = None) -> str:
        """Make the blocks named as block_list names them (each the newest block of
        that name: one staged, else one committed), in this order, the blob's bytes, so
        that committed blocks of any ID are kept as they are; only if the blob is still
        the version `base_etag` ('' = only if there is no blob): RemoteConflict
        otherwise. The new ETag."""
        condition = (ModifiedAccessConditions(if_match=f'"{base_etag}"') if base_etag
                     else ModifiedAccessConditions(if_none_match="*"))
        settings = BlobHTTPHeaders(blob_content_type=content_type,
                                   blob_content_md5=bytes.fromhex(md5) if md5 else None)
        client = self._client.get_blob_client(blob)
        with self._call(f"commit of {self.label}/{blob}"):
            try:
                # The generated layer, for names as block_list gives them (see there).
                result = client._client.block_blob.commit_block_list(
                    blocks=BlockLookupList(latest=names), blob_http_headers=settings,
                    headers={f"x-ms-meta-{key}": value for key, value in metadata.items()},
                    modified_access_conditions=condition,
                    cls=lambda _response, _body, answer: answer, **retry_options(retries))
            except HttpResponseError as exc:
                if exc.status_code == PRECONDITION_FAILED:  # the generated layer's 412
                    raise RemoteConflict(f"commit of {self.label}/{blob}: changed in the"
                                         " container") from None
                raise
        return bare_etag(result.get("ETag")) or ""
