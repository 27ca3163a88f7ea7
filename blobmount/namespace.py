"""The mount table and blob names, mapped onto inodes, and the changes made to them.

The tree under the mount point has two kinds of folders: those of the mount table
itself (the root, and each entry's `local` path), which never change, and those of a
container, listed one at a time with a '/' delimiter (listing.py: which names show)
and trusted for `ttl` seconds.
"""

from __future__ import annotations

import logging
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .azure import MTIME_KEY, AsyncContainer, BlobItem, format_mtime
from .config import MountEntry
from .errors import (
    CrossDevice,
    Exists,
    InvalidName,
    IsADirectory,
    NameTooLong,
    NotADirectory,
    NotEmpty,
    NotFound,
    PermissionDenied,
    ReadOnly,
    RemoteConflict,
    RemoteNotFound,
    RemoteUnreachable,
)
from .listing import NAME_MAX, Lister, shown_name
from .posix import RDEV_KEY, SYMLINK_KEY, Kept, to_metadata
from .singleflight import SingleFlight
from .store import NEVER_STALE, ROOT_INODE, EntryNode, ListedItem, Node, Store

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Renamed:
    """What a rename did: the moved node, the node it replaced (if any), and for a
    folder each blob copied under it (old name, new name, the copy's ETag)."""

    node: EntryNode
    replaced: EntryNode | None
    copies: list[tuple[str, str, str | None]]


class Namespace:
    """Inodes for the mount table and for the blobs under each entry."""

    def __init__(self, store: Store, entries: Sequence[MountEntry],
                 remotes: Sequence[AsyncContainer], *, ttl: float) -> None:
        self.store = store
        self.entries = entries
        self.remotes = remotes
        self.ttl = ttl
        self._listings = SingleFlight()
        # Removals and renames made through the mount: the count of them so far, and by
        # folder inode the count when it last had one. A listing under way meanwhile
        # may have seen what is gone, so it is not trusted.
        self._changes = 0
        self._changed_at: dict[int, int] = {}
        self._lister = Lister(store, entries, remotes)

    def build_mount_table(self) -> None:
        """A fresh tree holding the folders of the mount table."""
        self.store.reset_tree()
        for index, entry in enumerate(self.entries):
            parent = ROOT_INODE
            *parents, last = entry.local.split("/")
            for segment in parents:
                existing = self.store.child(parent, segment)
                parent = existing.inode if existing else self.store.add_folder(
                    parent, segment, entry_index=None, blob=None, listed=NEVER_STALE)
            self.store.add_folder(parent, last, entry_index=index, blob=entry.prefix, listed=None)

    def node(self, inode: int) -> Node:
        node = self.store.node(inode)
        if node is None:
            raise NotFound(f"inode {inode} is gone")
        return node

    def _child_or_none(self, folder: EntryNode, name: str) -> EntryNode | None:
        """A child of a folder under an entry: under that entry too (entries never nest)."""
        node = self.store.child(folder.inode, name)
        return None if node is None else node.in_entry()

    def _child(self, folder: EntryNode, name: str) -> EntryNode:
        node = self._child_or_none(folder, name)
        if node is None:
            raise NotFound(name)
        return node

    def path_of(self, node: Node) -> str:
        """The node's path relative to the mount point."""
        parts = []
        while node.inode != ROOT_INODE:
            parts.append(node.name)
            node = self.node(node.parent)
        return "/".join(reversed(parts))

    def _stale(self, stamp: float | None) -> bool:
        return stamp is None or time.time() - stamp >= self.ttl

    async def listed(self, folder: Node) -> Node:
        """The folder, with its children listed within the TTL."""
        if not folder.is_dir:
            raise NotADirectory(f"{folder.name} is not a folder")
        if folder.listed == NEVER_STALE or not self._stale(folder.listed):
            return folder
        folder = folder.in_entry()  # the mount table's own folders are never stale
        remote = self.remotes[folder.entry_index]
        if folder.listed is not None and remote.offline():
            return folder  # the account was just found away: the old listing, at once
        try:
            await self._listings.run(folder.inode, lambda: self._list(folder))
        except RemoteUnreachable as exc:
            if folder.listed is None:
                raise
            # Listed before: the stale listing beats no listing while the account is away.
            log.warning("serving the listing of %s from %.0f s ago: %s",
                        self.path_of(folder) or "/", time.time() - folder.listed, exc)
            return folder
        return self.node(folder.inode)

    async def _list(self, folder: EntryNode) -> None:
        started = self._changes
        for inode in await self._lister.list(folder):  # the folder, maybe those in it
            if self._changed_at.get(inode, 0) > started:
                self.store.forget_listing(inode)

    def _changed(self, *folders: int) -> None:
        self._changes += 1
        for inode in folders:
            self._changed_at[inode] = self._changes

    async def lookup(self, parent: Node, name: str) -> Node:
        parent = await self.listed(parent)
        node = self.store.child(parent.inode, name)
        if node is None:
            raise NotFound(name)
        return node

    async def fresh_file(self, node: EntryNode) -> EntryNode:
        """The file node, its size and ETag read from the container within the TTL.

        While the account does not answer, the node as last known: a cached copy of
        that version can still be read.
        """
        if not self._stale(node.checked):
            return node
        remote = self.remotes[node.entry_index]
        if remote.offline():
            return node
        try:
            item = await remote.properties(node.blob)
        except RemoteUnreachable as exc:
            log.warning("%s: %s", self.path_of(node), exc)
            return node
        self.store.update_file(node.inode, size=item.size, mtime_ns=item.mtime_ns,
                               etag=item.etag, checked=time.time())
        return self.node(node.inode).in_entry()

    # -- changes made through the mount ----------------------------------------------

    def writable_folder(self, folder: Node) -> EntryNode:
        """The folder, if files may be made in it; EROFS / EACCES otherwise."""
        if not folder.is_dir:
            raise NotADirectory(f"{folder.name} is not a folder")
        if not isinstance(folder, EntryNode):
            raise PermissionDenied("the mount table's own folders cannot change")
        if self.entries[folder.entry_index].read_only:
            raise ReadOnly(f"{self.entries[folder.entry_index].local} is read-only")
        return folder

    def writable_file(self, node: Node) -> EntryNode:
        if not isinstance(node, EntryNode) or self.entries[node.entry_index].read_only:
            raise ReadOnly(f"{node.name} is read-only")
        return node

    @staticmethod
    def checked_length(name: str) -> str:
        if len(name.encode("utf-8")) > NAME_MAX:
            raise NameTooLong(name[:40] + "...")
        return name

    def checked_name(self, name: str) -> str:
        self.checked_length(name)
        if shown_name(name) is None:
            raise InvalidName(f"{name!r} cannot be a blob name segment")
        return name

    async def make_folder(self, parent: Node, name: str, kept: Kept | None = None, *,
                          marker_later: bool = False) -> Node:
        """mkdir: the marker blob that keeps the folder and its mode and owner is made
        now, or with `marker_later` by the caller (who journals it), and the folder
        is `local` until then."""
        kept = kept or Kept()
        parent = self.writable_folder(await self.listed(parent))
        if self.store.child(parent.inode, self.checked_name(name)) is not None:
            raise Exists(name)
        prefix = f"{parent.blob}{name}/"
        made_ns = time.time_ns()
        if not marker_later:
            metadata = to_metadata(is_dir=True, mode=kept.mode, uid=kept.uid, gid=kept.gid)
            try:
                # Exclusive: a blob of that name made elsewhere since the listing stays.
                item = await self.remotes[parent.entry_index].make_folder(
                    prefix, exclusive=True, metadata=metadata)
            except RemoteConflict:
                self.store.forget_listing(parent.inode)
                raise Exists(f"{name} was made in the container meanwhile") from None
            made_ns = item.mtime_ns or made_ns
        generation = self.store.begin_listing()
        now = time.time()
        self.store.add_listed(parent, generation, [ListedItem(name, BlobItem(
            prefix, True, 0, made_ns, None, kept.mode, kept.uid, kept.gid, None, made_ns))],
            now)
        self.store.touch(parent.inode, time.time_ns())
        node = self._child(parent, name)
        if marker_later:
            self.store.set_local_folder(node.inode)
        # Just made: it is empty, no need to ask the container.
        self.store.finish_listing(node, self.store.begin_listing(), now)
        return self.node(node.inode)

    async def remove_folder(self, parent: Node, name: str) -> None:
        node = await self.lookup(parent, name)
        if not node.is_dir:
            raise NotADirectory(name)
        self.writable_folder(parent)  # an entry's own folder belongs to the mount table
        node = (await self.listed(self.writable_folder(node))).in_entry()
        if self.store.child_inodes(node.inode):
            raise NotEmpty(name)
        remote = self.remotes[node.entry_index]
        await remote.delete(node.blob.rstrip("/"))
        self.store.remove_node(node.inode)
        self.store.touch(parent.inode, time.time_ns())
        self._changed(parent.inode)

    async def remove_file(self, parent: Node, name: str) -> EntryNode:
        node = await self.lookup(parent, name)
        if node.is_dir:
            raise IsADirectory(name)
        node = self.writable_file(node)
        if node.etag:
            await self.remotes[node.entry_index].delete(node.blob)
        # Else made here and never uploaded (its upload was dropped first, and any
        # under way ended): it has no blob. One put at its name elsewhere meanwhile was
        # never seen here, so not this file to delete (git's temporary files: a
        # DELETE each, answered 404).
        self.store.remove_node(node.inode)
        self.store.touch(parent.inode, time.time_ns())
        self._changed(parent.inode)
        return node

    async def rename(self, old_parent: Node, old_name: str, new_parent: Node,
                     new_name: str, *, replace: bool = True,
                     copy: bool = True) -> Renamed:
        """Move a file or folder inside one entry (server-side copy, then delete).

        The caller uploads a file's pending bytes first, or, for a file that has no
        blob yet, moves only the node (`copy` False) and its upload.
        """
        node = await self.lookup(old_parent, old_name)
        new_parent = self.writable_folder(await self.listed(new_parent))
        self.writable_folder(self.node(node.parent))
        node = node.in_entry()  # in an entry's folder (entries never nest)
        if node.entry_index != new_parent.entry_index:
            raise CrossDevice("rename across mount entries")
        self.checked_name(new_name)
        if node.is_dir and f"{new_parent.blob}{new_name}/".startswith(node.blob):
            raise InvalidName("cannot move a folder into itself")
        target = self._child_or_none(new_parent, new_name)
        if target is not None:
            if not replace:
                raise Exists(new_name)
            if target.inode == node.inode:
                return Renamed(node, None, [])
            if node.is_dir and not target.is_dir:
                raise NotADirectory(new_name)
            if target.is_dir and not node.is_dir:
                raise IsADirectory(new_name)
            if target.is_dir and self.store.child_inodes((await self.listed(target)).inode):
                raise NotEmpty(new_name)
        remote = self.remotes[node.entry_index]
        if target is not None and target.is_dir:
            # An empty folder replaced: its marker goes first (the moved folder's own
            # marker takes the same name).
            await remote.delete(target.blob.rstrip("/"))
        copies: list[tuple[str, str, str | None]] = []
        if node.is_dir:
            new_blob = f"{new_parent.blob}{new_name}/"
            names = await remote.list_all(node.blob)
            for blob in names:
                moved_blob = new_blob + blob[len(node.blob):]
                copies.append((blob, moved_blob,
                               await self._move_blob(remote, blob, moved_blob)))
            # The folder's own marker blob (if any) is not under its prefix.
            await remote.delete(node.blob.rstrip("/"))
            metadata = to_metadata(is_dir=True, mode=node.mode, uid=node.uid, gid=node.gid)
            await remote.make_folder(new_blob, metadata=metadata)
            self.store.move_blobs_under(node.entry_index, node.blob, new_blob)
            for _, moved_blob, etag in copies:
                if etag:  # each file is now the copy: its version is the copy's
                    self.store.set_etag(node.entry_index, moved_blob, etag)
        else:
            new_blob = f"{new_parent.blob}{new_name}"
            etag = await self._move_blob(remote, node.blob, new_blob) if copy else None
        if target is not None:
            self.store.remove_node(target.inode)
        self.store.move_node(node.inode, new_parent.inode, new_name, new_blob)
        if node.is_dir:
            self.store.set_folder_uploaded(node.entry_index, new_blob)  # its marker, made
        if not node.is_dir and etag:
            # The copy is a new version of the same bytes (and the same metadata).
            self.store.update_file(node.inode, size=node.size, mtime_ns=node.mtime_ns,
                                   etag=etag, checked=time.time())
        self._changed(node.parent, new_parent.inode)
        now_ns = time.time_ns()
        self.store.touch(node.parent, now_ns)
        self.store.touch(new_parent.inode, now_ns)
        return Renamed(self.node(node.inode).in_entry(), target, copies)

    async def _move_blob(self, remote: AsyncContainer, source: str, destination: str) -> str | None:
        """Copy, then delete the source; the ETag of the copy."""
        etag = await remote.copy(source, destination)
        await remote.delete(source)
        return etag

    async def create_file(self, parent: Node, name: str,
                          kept: Kept | None = None) -> EntryNode:
        parent = self.writable_folder(await self.listed(parent))
        blob = f"{parent.blob}{self.checked_name(name)}"
        existing = self.store.child(parent.inode, name)
        if existing is not None and existing.is_dir:
            raise IsADirectory(name)
        now_ns = time.time_ns()
        inode = self.store.add_local_file(parent, name, blob, size=0, mtime_ns=now_ns,
                                          kept=kept)
        self.store.touch(parent.inode, now_ns)
        return self.node(inode).in_entry()

    # -- symlinks and folders' own metadata -------------------------------------------

    async def make_link(self, parent: Node, name: str, target: str, kept: Kept) -> Node:
        """A symlink: a blob holding its target, with metadata is_symlink=true."""
        now_ns = time.time_ns()
        metadata = {**to_metadata(is_dir=False, mode=None, uid=kept.uid, gid=kept.gid),
                    SYMLINK_KEY: "true", MTIME_KEY: format_mtime(now_ns)}
        parent, blob, item = await self._put_new(parent, name, target.encode("utf-8"),
                                                 metadata)
        inode = self.store.add_link(parent, name, blob, target=target, kept=kept,
                                    mtime_ns=now_ns, etag=item.etag)
        self.store.touch(parent.inode, now_ns)
        return self.node(inode)

    async def make_special(self, parent: Node, name: str, kept: Kept) -> Node:
        """A FIFO, socket or device node (mknod): an empty blob whose `mode` metadata
        has the type bits, and a device's `rdev`."""
        now_ns = time.time_ns()
        metadata = {**to_metadata(is_dir=False, mode=kept.mode or 0, uid=kept.uid,
                                  gid=kept.gid, special=kept.special),
                    MTIME_KEY: format_mtime(now_ns)}
        if kept.special in (stat.S_IFCHR, stat.S_IFBLK):
            metadata[RDEV_KEY] = format(kept.rdev, "x")
        parent, blob, item = await self._put_new(parent, name, b"", metadata)
        inode = self.store.add_special(parent, name, blob, kept=kept, mtime_ns=now_ns,
                                       etag=item.etag)
        self.store.touch(parent.inode, now_ns)
        return self.node(inode)

    async def _put_new(self, parent: Node, name: str, data: bytes,
                       metadata: dict[str, str]) -> tuple[EntryNode, str, BlobItem]:
        """Put a small blob at a new name in `parent` (EEXIST if the name is taken,
        here or in the container); the folder, the blob's name and the blob."""
        parent = self.writable_folder(await self.listed(parent))
        blob = f"{parent.blob}{self.checked_name(name)}"
        if self.store.child(parent.inode, name) is not None:
            raise Exists(name)
        remote = self.remotes[parent.entry_index]
        try:
            item = await remote.put_small(blob, data, metadata)
        except RemoteConflict:
            self.store.forget_listing(parent.inode)
            raise Exists(f"{name} was made in the container meanwhile") from None
        return parent, blob, item

    async def link_target(self, node: Node) -> str:
        """A symlink's target: its blob's content (read once, then kept)."""
        if node.link is not None:
            return node.link
        node = node.in_entry()  # a symlink is a file: under an entry
        remote = self.remotes[node.entry_index]
        data = await remote.read_small(node.blob)
        target = data.decode("utf-8", "surrogateescape")
        self.store.set_link(node.inode, target)
        return target

    async def update_metadata(self, node: EntryNode,
                              changes: Mapping[str, str | None]) -> tuple[str, str]:
        """Set metadata of a node's blob (a folder's: its marker blob's, made if there is
        none); the ETags before and after (folders: '')."""
        remote = self.remotes[node.entry_index]
        if not node.is_dir:
            return await remote.update_metadata(node.blob, changes)
        if node.blob == self.entries[node.entry_index].prefix:
            # An entry's own folder has no marker blob (its prefix is the mount's):
            # what is set holds until unmount.
            return "", ""
        marker = node.blob.rstrip("/")
        try:
            await remote.update_metadata(marker, changes)
        except RemoteNotFound:
            # A folder that only its blobs make: its marker keeps what is set.
            kept = {key: value for key, value in changes.items() if value is not None}
            await remote.make_folder(node.blob, metadata=kept)
        return "", ""

    def uploaded(self, entry_index: int, blob: str, size: int, mtime_ns: int, etag: str) -> None:
        self.store.set_uploaded(entry_index, blob, size=size, mtime_ns=mtime_ns, etag=etag)

    def conflicted(self, entry_index: int, blob: str) -> None:
        self.store.forget_local(entry_index, blob, blob[:blob.rfind("/") + 1])
