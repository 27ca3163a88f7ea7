"""One journaled upload's puts: the file's bytes to its blob, conditionally.

A put replaces only the version the local copy was taken from (If-Match, or none for
a new blob); a try whose answer was lost is recognised by what it put (the bytes' MD5,
or the block IDs of an edit by blocks), so it is not taken for someone else's change.
Small files go by one SDK put, large ones by an AzCopy job (decide.upload_by_sdk).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .azcopy import AzCopy
from .azure import MTIME_KEY, AsyncContainer, BlobItem, BlobProperties, file_md5, format_mtime
from .config import MountEntry, Settings
from .decide import upload_by_sdk
from .errors import RemoteConflict, RemoteError, RemoteNotFound, ToolNotFound
from .patch import Edit, Patches

log = logging.getLogger(__name__)

# Retries of each SDK call of an upload attempt (one wait of about 0.5 s): the journal
# retries on its own schedule, so an unreachable account fails an attempt (and a sync
# close()) soon.
UPLOAD_RETRIES = 1


@dataclass(frozen=True)
class Target:
    """Where a journaled upload goes: a mount entry and its container."""

    index: int
    entry: MountEntry
    remote: AsyncContainer


class Puts:
    """The puts of Uploads (a mixin: its journal and workers are uploads.py's)."""

    _azcopy_for: Callable[[MountEntry], AzCopy] | None
    _settings: Settings
    patches: Patches | None

    async def _put(self, target: Target, blob: str, path: Path, base_etag: str,
                   mtime_ns: int | None, tried: set[str], kept: Mapping[str, str]) -> BlobItem:
        """Put the file as `blob` over version `base_etag` ('' = a new blob); the blob
        as put. RemoteConflict when someone else changed the blob.

        `tried` holds the MD5s of the bytes earlier tries of this upload put: a try
        whose answer was lost may have put them anyway, and finding them in the
        container later is no conflict.
        """
        remote = target.remote
        metadata = {**kept, MTIME_KEY: format_mtime(mtime_ns)} if mtime_ns else dict(kept)
        md5 = await remote.run_sync(file_md5, path)
        tried.add(md5)
        if base_etag:
            # A new version keeps the old one's metadata (user.meta.* set through the
            # mount, say); the look also catches a conflict before any bytes move.
            current = await self._head(remote, blob)
            if current is None:
                # Deleted in the container meanwhile: the write made here re-creates it
                # (a program told its write succeeded expects to find the file).
                log.info("%s/%s was deleted in the container; re-creating it",
                         remote.label, blob)
                base_etag = ""
            elif current.etag != base_etag:
                if current.content_md5 not in tried:
                    raise RemoteConflict(f"{remote.label}/{blob} changed in the container")
                base_etag = current.etag  # an earlier try of ours got there
            if current is not None:
                # Azure's keys ignore case: ours replace theirs, however spelled.
                ours = {key.lower() for key in metadata}
                metadata = {**{key: value for key, value in current.metadata.items()
                               if key.lower() not in ours}, **metadata}
        try:
            return await self._put_bytes(target, blob, path, base_etag, md5, metadata)
        except RemoteConflict:
            current = await self._head(remote, blob)
            if current is None or current.content_md5 not in tried:
                raise
        log.info("%s/%s: a try whose answer was lost had put our bytes", remote.label, blob)
        if current.content_md5 == md5:
            return BlobItem(blob, False, current.size, current.mtime_ns, current.etag)
        return await self._put_bytes(target, blob, path, current.etag, md5, metadata)

    async def _put_edit(self, target: Target, blob: str, edit: Edit, base_etag: str,
                        mtime_ns: int | None, tried: set[str],
                        kept: Mapping[str, str]) -> BlobItem:
        """Like _put, for a file edited by blocks: only the blocks written here go up
        (patch.py). `tried` holds the block ID prefixes of earlier tries: a blob whose
        block list starts with one is a try of ours whose answer was lost."""
        assert self.patches is not None
        remote = target.remote
        metadata = {**kept, MTIME_KEY: format_mtime(mtime_ns)} if mtime_ns else dict(kept)
        current = await self._head(remote, blob)
        if base_etag and current is None:
            raise RemoteError(f"{remote.label}/{blob} was deleted in the container, and its"
                              " snapshot with it: the bytes of the edited file that are not"
                              " here are gone")
        if current is not None and current.etag != base_etag:
            if not await self.patches.landed(remote, blob, tried):
                raise RemoteConflict(f"{remote.label}/{blob} changed in the container")
            return BlobItem(blob, False, current.size, current.mtime_ns, current.etag)
        content_type = None
        if current is not None:
            ours = {key.lower() for key in metadata}
            metadata = {**{key: value for key, value in current.metadata.items()
                           if key.lower() not in ours}, **metadata}
            content_type = current.content_type
        try:
            return await self.patches.put(edit, blob, base_etag=base_etag,
                                          content_type=content_type, metadata=metadata,
                                          tried=tried)
        except RemoteConflict:
            if not await self.patches.landed(remote, blob, tried):
                raise
        current = await self._head(remote, blob)
        if current is None:
            raise RemoteError(f"{remote.label}/{blob}: gone just after its commit")
        log.info("%s/%s: a try whose answer was lost had committed our blocks", remote.label,
                 blob)
        return BlobItem(blob, False, current.size, current.mtime_ns, current.etag)

    async def _head(self, remote: AsyncContainer, blob: str) -> BlobProperties | None:
        try:
            return await remote.head(blob, retries=UPLOAD_RETRIES)
        except RemoteNotFound:
            return None

    async def _put_bytes(self, target: Target, blob: str, path: Path, base_etag: str,
                         md5: str, metadata: dict[str, str]) -> BlobItem:
        remote = target.remote
        size = path.stat().st_size
        if upload_by_sdk(size, self._settings.sdk_upload_max,
                         azcopy_usable=self._azcopy_for is not None and remote.azcopy_can_sign):
            return await remote.upload(blob, path, base_etag=base_etag, md5=md5,
                                       metadata=metadata, retries=UPLOAD_RETRIES)
        # AzCopy cannot upload conditionally: the caller's look is the check, and a new
        # file must not exist yet.
        if not base_etag and await self._head(remote, blob) is not None:
            raise RemoteConflict(f"{remote.label}/{blob} was made in the container")
        sas = await remote.sas_for_azcopy(blob=blob, write=True)
        # One flag: AzCopy keeps only the last of several; pairs are separated by ';'.
        pairs = ";".join(f"{key}={value}" for key, value in metadata.items())
        extra = [f"--metadata={pairs}"] if pairs else []
        if self._azcopy_for is None:  # upload_by_sdk chose AzCopy only where there is one
            raise ToolNotFound("AzCopy was chosen, but this mount runs without it")
        await self._azcopy_for(target.entry).copy(
            str(path), f"{remote.blob_url(blob)}?{sas}", from_to="LocalBlob", extra_args=extra)
        return await remote.properties(blob)
