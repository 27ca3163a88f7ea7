"""Unlink and rename of files and folders, mkdir and rmdir, for `Files` (files.py).

A folder made with `upload: async` is made here at once and its marker blob
journaled, to go up with the files (a mkdir costs no request then, as with rclone
mount). A rename keeps a file's local change and the version it started from: what
is pending goes up first when the move copies blobs in the container, a file only
here moves here alone (its journal row follows), and the upload worker starts no
upload of the source or a replaced target while the move is under way.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from .cache import Cache
from .cachetables import CopyState
from .config import MountEntry
from .errors import RemoteNotFound
from .handles import Handle, Writing
from .journal import Upload
from .moves import CacheMoves
from .namespace import Namespace
from .posix import Kept, to_metadata
from .store import EntryNode, Node, Store
from .transfers import Downloads
from .uploads import Uploads


class Renames:
    """The changes to the tree of Files (a mixin: its handles are files.py's)."""

    namespace: Namespace
    store: Store
    cache: Cache
    downloads: Downloads
    uploads: Uploads
    entries: Sequence[MountEntry]
    moves: CacheMoves
    handles: dict[int, Handle]
    #: Files' own: a node's cache path; journal a handle's bytes; journal every writer's
    _path: Callable[[EntryNode], Path]
    _commit: Callable[..., Awaitable[None]]
    _commit_writers: Callable[[int], Awaitable[None]]

    async def make_folder(self, parent: Node, name: str, kept: Kept) -> Node:
        index = parent.entry_index
        if index is None or self.entries[index].upload != "async":
            return await self.namespace.make_folder(parent, name, kept)
        node = (await self.namespace.make_folder(parent, name, kept, marker_later=True)
                ).in_entry()
        try:
            await self.uploads.journal_folder(self.entries[index], node.blob, to_metadata(
                is_dir=True, mode=kept.mode, uid=kept.uid, gid=kept.gid))
        except BaseException:
            self.store.remove_node(node.inode)  # not made: the mkdir fails
            raise
        return node

    async def remove_folder(self, parent: Node, name: str) -> None:
        node = await self.namespace.lookup(parent, name)
        if not (node.is_dir and node.unuploaded):
            await self.namespace.remove_folder(parent, name)
            return
        # Its marker is still in the journal: no upload of it may land after the delete.
        folder = node.in_entry()
        marker = self.uploads.marker_path(self.entries[folder.entry_index], folder.blob)
        async with self.uploads.holding(marker):
            await self.namespace.remove_folder(parent, name)
            await self.uploads.forget(marker)
            self.cache.forget(marker)

    async def unlink(self, parent: Node, name: str) -> None:
        node = await self.namespace.lookup(parent, name)
        if not node.is_dir:
            node = self.namespace.writable_file(node)
            # First, so no upload under way or to come can bring the blob back.
            await self.uploads.forget(self._path(node))
        node = await self.namespace.remove_file(parent, name)
        self._drop_cached(node)

    def _drop_cached(self, node: EntryNode) -> None:
        """The file is gone from its folder. Open handles keep reading and writing the
        unlinked bytes, as POSIX says, through a node of their own until the last
        closes; the cache path is free for a new file of the same name."""
        path = self._path(node)
        if any(handle.inode == node.inode for handle in self.handles.values()):
            self.store.add_orphan(node)
        self.cache.forget(path)

    async def rename(self, old_parent: Node, old_name: str, new_parent: Node, new_name: str,
                     *, replace: bool) -> None:
        node = await self.namespace.lookup(old_parent, old_name)
        self.namespace.writable_folder(old_parent)
        new_parent = self.namespace.writable_folder(new_parent)
        node = node.in_entry()  # in an entry's folder (entries never nest)
        if node.is_dir:
            # The move copies blobs in the container: what is pending goes up first.
            markers = await self._upload_pending_under(node)
            open_inside = self._written_under(node)
            stale_blobs = await self.moves.changed_elsewhere(node.entry_index, open_inside)
            entry = self.entries[node.entry_index]
            target = self.store.child(new_parent.inode, new_name)
            # An empty folder replaced whose marker is still due: it must not land later.
            due = (self.uploads.marker_path(entry, target.blob or "") if target is not None
                   and target.is_dir and target.unuploaded and replace else None)
            async with contextlib.AsyncExitStack() as held:
                for path in [Path(marker.path) for marker in markers] + ([due] if due else []):
                    await held.enter_async_context(self.uploads.holding(path))
                renamed = await self.namespace.rename(old_parent, old_name, new_parent,
                                                      new_name, replace=replace)
                if due is not None and renamed.replaced is not None:
                    await self.uploads.forget(due)
                    self.cache.forget(due)
                moved = self.store.entry_node(node.inode)
                if moved is not None:
                    await self._move_markers(entry, markers, node.blob, moved.blob)
            for old_blob, new_blob, etag in renamed.copies:
                # A download into the old name lands first, so nothing comes there after.
                await self.downloads.settle(self.cache.path_for(entry, old_blob))
                await self.moves.follow(entry, old_blob, new_blob, etag,
                                        stale=old_blob in stale_blobs)
            copied = {old_blob for old_blob, _, _ in renamed.copies}
            for old_blob, inode in open_inside.items():
                if old_blob not in copied:
                    await self.moves.follow_vanished(entry, old_blob,
                                                     self.store.entry_node(inode))
            return
        source_path = self._path(node)
        target = self.store.child(new_parent.inode, new_name)
        replaced = (target.in_entry() if target is not None and not target.is_dir
                    and target.inode != node.inode and replace else None)
        target_path = self._path(replaced) if replaced is not None else None
        # A download that lands later must not bring back bytes this rename moved, nor
        # land on them at the new name (whether or not a file is there to replace).
        await self.downloads.settle(source_path)
        await self.downloads.settle(self.cache.path_for(self.entries[new_parent.entry_index],
                                                        f"{new_parent.blob}{new_name}"))
        # The worker starts no upload of the source (its row moves here) or the target
        # (replaced) meanwhile, and each upload under way ends first.
        async with contextlib.AsyncExitStack() as held:
            await held.enter_async_context(self.uploads.holding(source_path))
            if target_path is not None:
                await held.enter_async_context(self.uploads.holding(target_path))
            here_only = await self._only_here(node)
            if node.unuploaded and not here_only:
                await self._upload_pending(node)
            base = None
            if replaced is not None and target_path is not None:
                # Replaced: its own pending upload must not land on top of the moved file,
                # and the moved one replaces the version the container now holds.
                pending = self.store.upload(str(target_path))
                replaced = self.store.entry_node(replaced.inode) or replaced
                base = pending.base_etag if pending is not None else self._base_of(
                    replaced, target_path)
                await self.uploads.forget(target_path)
            source = self.store.entry_node(node.inode) or node  # as the copy will see it
            stale = bool(not here_only and await self.moves.changed_elsewhere(node.entry_index,
                                                                         [source.blob]))
            try:
                renamed = await self.namespace.rename(old_parent, node.name, new_parent,
                                                      new_name, replace=replace,
                                                      copy=not here_only)
            except RemoteNotFound:
                if here_only or not self.moves.holds_change(source_path):
                    raise
                # Deleted in the container meanwhile, but its bytes are here: it is
                # renamed here alone, and goes up under the new name.
                here_only = True
                renamed = await self.namespace.rename(old_parent, node.name, new_parent,
                                                      new_name, replace=replace, copy=False)
            if renamed.replaced is not None and not renamed.replaced.is_dir:
                self._drop_cached(renamed.replaced)
            if renamed.node.blob != source.blob:
                # A file only here goes up under its new name, replacing what `base` says.
                await self.moves.move_cached(source, renamed.node,
                                        base=(base or "") if here_only else None,
                                        stale=stale)

    def _base_of(self, node: Node, path: Path) -> str:
        """The container's version a file with no pending upload is based on: an upload
        that ended under an open writer rebased its dirty copy, not the node."""
        record = self.store.cached_file(str(path))
        if record is not None and record.state == CopyState.DIRTY and record.etag:
            return record.etag
        return node.etag or ""

    async def _only_here(self, node: EntryNode) -> bool:
        """Whether a file was written here and never uploaded, in an async entry: then
        it is renamed here alone (its upload goes to the new name), with no network.
        Call it holding the file's uploads."""
        if self.entries[node.entry_index].upload != "async" or node.etag:
            return False
        await self._commit_writers(node.inode)
        upload = self.store.upload(str(self._path(node)))
        now = self.store.node(node.inode)
        return (upload is not None and upload.base_etag == "" and now is not None
                and now.unuploaded and not now.etag)

    def _writers_under(self, folder: EntryNode) -> list[tuple[Writing, EntryNode]]:
        """The handles open for writing on files under a folder, with their nodes."""
        found = []
        for handle in list(self.handles.values()):
            node = self.store.entry_node(handle.inode)
            if (isinstance(handle, Writing) and node is not None
                    and node.entry_index == folder.entry_index
                    and node.blob.startswith(folder.blob)):
                found.append((handle, node))
        return found

    def _written_under(self, folder: EntryNode) -> dict[str, int]:
        """The blobs under a folder open for writing here, and their inodes."""
        return {node.blob: node.inode for _, node in self._writers_under(folder)}

    async def _upload_pending(self, node: EntryNode) -> None:
        """A file about to move must be in the container first: the move copies the blob."""
        path = self._path(node)
        await self._commit_writers(node.inode)
        upload = self.store.upload(str(path))
        if upload is not None:
            await self.uploads.upload_now(path, upload.version)

    async def _upload_pending_under(self, folder: EntryNode) -> list[Upload]:
        """Every pending upload under a folder about to move goes up first, but the
        markers of folders made here (the folder's own too): their rows, which follow
        the move instead (_move_markers)."""
        for handle, _ in self._writers_under(folder):
            if handle.written:
                await self._commit(handle, wait=False)
        entry = self.entries[folder.entry_index]
        markers = []
        for upload in self.uploads.pending(entry.account.account_name, entry.container,
                                           folder.blob):
            if upload.is_folder_marker:
                markers.append(upload)
            else:
                await self.uploads.upload_now(Path(upload.path), upload.version)
        own = self.uploads.marker_row(entry, folder.blob)
        return markers if own is None else [own, *markers]

    async def _move_markers(self, entry: MountEntry, markers: Sequence[Upload],
                            old_prefix: str, new_prefix: str) -> None:
        """The marker rows of folders under a folder just moved go to their new names:
        a put of each there later, where uploading them first would cost a put, a copy
        and a delete. The moved folder's own is dropped: the move made its marker at the
        new name. Each is held by the caller; one that went up meanwhile was moved with
        the blobs. A new row is journaled first: a crash in between leaves an empty
        folder at the old name, never none at the new."""
        for marker in markers:
            path = Path(marker.path)
            row = self.store.upload(marker.path)
            if row is None or not row.is_folder_marker:
                continue
            folder = new_prefix + f"{marker.blob}/"[len(old_prefix):]
            if folder != new_prefix:
                await self.uploads.journal_folder(entry, folder,
                                                  json.loads(row.metadata or "{}"))
            await self.uploads.forget(path)
            self.cache.forget(path)
