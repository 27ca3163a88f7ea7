"""The local half of a rename: where a moved file's cached copy and journal row go.

The namespace renames in the container (a server-side copy, or nothing for a file only
here). Here the cache file takes its new name by a hard link, so open descriptors
keep working; its record keeps the version its change is based on, and a pending
upload moves with it (the new journal row is durable before the old one goes).
`Files` decides when each step runs; this module holds no handles: it tells the owner
through `on_linked` when a cache file took a new name, and the owner moves its handles.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .azure import AsyncContainer
from .cache import Cache
from .cachetables import CopyState
from .config import MountEntry
from .errors import RemoteNotFound
from .store import CachedFile, EntryNode, Store
from .uploads import Uploads, journaled_metadata, node_metadata


class CacheMoves:
    """Cached copies and journal rows that follow their files to new names."""

    def __init__(self, store: Store, cache: Cache, uploads: Uploads,
                 entries: Sequence[MountEntry], remotes: Sequence[AsyncContainer], *,
                 on_linked: Callable[[Path, Path], None]) -> None:
        self.store = store
        self.cache = cache
        self.uploads = uploads
        self.entries = entries
        self.remotes = remotes
        self.on_linked = on_linked

    def holds_change(self, path: Path) -> bool:
        record = self.store.cached_file(str(path))
        return record is not None and record.state == CopyState.DIRTY

    async def changed_elsewhere(self, index: int, blobs: Iterable[str]) -> set[str]:
        """Of these blobs, those with a change here based on another version than the
        one the container holds now (one HEAD each): a move copies the container's."""
        entry, remote = self.entries[index], self.remotes[index]
        changed = set()
        for blob in blobs:
            record = self.store.cached_file(str(self.cache.path_for(entry, blob)))
            if record is None or record.state != CopyState.DIRTY or not record.etag:
                continue
            try:
                item = await remote.properties(blob)
            except RemoteNotFound:
                continue
            if item.etag != record.etag:
                changed.add(blob)
        return changed

    async def move_cached(self, source: EntryNode, moved: EntryNode, *, base: str | None,
                          stale: bool = False) -> None:
        """The cached copy follows its file to the new name, open handles with it.

        After a server-side copy (`base` None), the container holds the source's bytes
        under the copy's ETag: a clean copy of them stays clean under that ETag; one
        written meanwhile stays dirty, now based on it. A file renamed here alone keeps
        its bytes dirty, to go up as a change of the blob version `base` ('' = none).
        A change whose blob the container holds another version of (`stale`) keeps its
        base: the copy is of the other's bytes, and the next upload must find that.
        """
        entry = self.entries[source.entry_index]
        old_path = self.cache.path_for(entry, source.blob)
        new_path = self.cache.path_for(entry, moved.blob)
        record = _usable(self.store.cached_file(str(old_path)), source)
        upload = self.store.upload(str(old_path))
        etag = moved.etag if base is None else base
        if record is not None and stale and record.state == CopyState.DIRTY:
            etag = record.etag
        if record is not None and etag is not None and self.link(old_path, new_path):
            self.cache.record(new_path, blob=moved.blob, etag=etag,
                              size=new_path.stat().st_size, state=record.state)
            if upload is not None:
                await self.uploads.journal(new_path, entry, moved.blob, etag, upload.mtime_ns,
                                           journaled_metadata(upload))
            elif base is not None and record.state == CopyState.DIRTY:
                # Its blob was deleted elsewhere after its last upload: it goes up again.
                await self._journal_moved(entry, new_path, moved, base=base)
        if upload is not None:
            await self.uploads.forget(old_path)
        self.cache.forget(old_path)

    async def follow(self, entry: MountEntry, old_blob: str, new_blob: str,
                     etag: str | None, *, stale: bool) -> None:
        """A file moved with its folder: its local change (and the version it is based
        on, now the copy's) follows it, so a later change is no false conflict; unless
        the container held another version than that (`stale`): then it keeps its base,
        and its next upload finds the conflict.

        A clean copy stays behind: the blob may have changed in the container since it
        was cached, and the copy's ETag would then name bytes it does not hold.
        """
        old_path = self.cache.path_for(entry, old_blob)
        new_path = self.cache.path_for(entry, new_blob)
        record = self.store.cached_file(str(old_path))
        if (record is not None and record.state == CopyState.DIRTY and etag
                and self.link(old_path, new_path)):
            self.cache.record(new_path, blob=new_blob, etag=record.etag if stale else etag,
                              size=record.size, state=record.state)
        self.cache.forget(old_path)

    async def follow_vanished(self, entry: MountEntry, old_blob: str,
                              node: EntryNode | None) -> None:
        """A file open for writing moved with its folder, though the move found no
        blob of it to copy (deleted in the container since its last upload): its
        bytes follow it and go up under its new name."""
        old_path = self.cache.path_for(entry, old_blob)
        if node is None or not self.holds_change(old_path):
            return
        new_path = self.cache.path_for(entry, node.blob)
        if self.link(old_path, new_path):
            self.cache.record(new_path, blob=node.blob, etag="",
                              size=new_path.stat().st_size, state=CopyState.DIRTY)
            self.cache.forget(old_path)
            await self._journal_moved(entry, new_path, node, base="")

    async def _journal_moved(self, entry: MountEntry, path: Path, node: EntryNode, *,
                             base: str) -> None:
        """A moved file whose bytes the container lacks goes up under its new name, as
        a change of version `base` ('' = a new blob), with its mode and owner:
        journaled, and in sync mode now."""
        if not self.holds_change(path):
            return
        version = await self.uploads.journal(path, entry, node.blob, base, node.mtime_ns,
                                             node_metadata(node))
        if entry.upload == "sync":
            await self.uploads.upload_now(path, version)

    def link(self, old_path: Path, new_path: Path) -> bool:
        """Give the cache file at `old_path` the name `new_path` too; open handles move
        with it. False if there is no such file."""
        if not old_path.exists():
            return False
        new_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            new_path.unlink()
        os.link(old_path, new_path)
        self.store.link_unsynced(str(old_path), str(new_path))
        self.on_linked(old_path, new_path)
        return True


def _usable(record: CachedFile | None, source: EntryNode) -> CachedFile | None:
    """The record of a cached copy that can follow its file: a change, or a clean copy
    of the source's version. A partial copy stays: its blocks are recorded under the
    old path."""
    if record is not None and (record.state == CopyState.DIRTY or (
            record.state == CopyState.CLEAN and record.etag == source.etag)):
        return record
    return None
