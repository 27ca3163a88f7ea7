"""A file's life, in one place: its handles, its local change and every transition.

A handle is `Reading` (with the download it waits on, if one is under way) or
`Writing`. A file's local change lives in its cache file: `dirty` from the first
open for writing until an upload of the last committed bytes ends with no writer
left. Every step that touches a file goes through `Files`: open, write, flush, fsync,
release, truncate, utimens, unlink and rename (of files and folders), and recovery at
mount. The rules it keeps are the README's "How it behaves":

- a writer's bytes win over any download that began before them;
- a conflict copy is made only when the container's blob changed since the version the
  change started from, and that version follows the file through renames;
- a file unlinked while open works until its last close, which uploads nothing;
- at mount, a change never committed by a close or an fsync is dropped.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypedDict

from .azure import MTIME_KEY, BlobItem, format_mtime
from .blocks import BlockReader
from .cache import Cache, make_empty
from .cachetables import CopyState
from .config import MountEntry
from .decide import read_ahead_takes
from .errors import IsADirectory, NotFound, RemoteConflict
from .handles import Handle, Reading, Writing
from .moves import CacheMoves
from .namespace import Namespace
from .posix import ATIME_KEY, Kept, to_metadata
from .readahead import ReadAhead
from .renames import Renames
from .store import ORPHANS, EntryNode
from .transfers import Downloads, Filling
from .uploads import Uploads, node_metadata

log = logging.getLogger(__name__)

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


class _Kept(TypedDict):
    """What a setattr leaves a node's mode, owner and times at."""

    mode: int | None
    uid: int | None
    gid: int | None
    atime_ns: int | None
    mtime_ns: int


class Files(Renames):
    """Every open file and every local change; the handlers call nothing else for them."""

    def __init__(self, namespace: Namespace, cache: Cache, downloads: Downloads,
                 uploads: Uploads, entries: Sequence[MountEntry], *,
                 read_ahead_files: int = 0) -> None:
        self.namespace = namespace
        self.store = namespace.store
        self.cache = cache
        self.downloads = downloads
        self.uploads = uploads
        self.entries = entries
        self.read_ahead = ReadAhead(self.store, downloads, read_ahead_files)
        self._numbers = itertools.count(1)
        self.handles: dict[int, Handle] = {}
        #: the kernel's references to each inode it was handed (lookup, create, mkdir,
        #: readdir), less those it forgot: a node unlinked while open lives until both
        #: its handles and these are gone, so its number always names it
        self._lookups: Counter[int] = Counter()
        #: told, at each open that needs the file's bytes, whether it downloaded them
        self.on_copy: Callable[[bool], None] = lambda downloaded: None
        self.moves = CacheMoves(self.store, cache, uploads, entries, namespace.remotes,
                                on_linked=self._moved)
        uploads.watch_writers(self.writing, self._becomes_conflict_copy)

    # -- what others ask ----------------------------------------------------------

    def paths_in_use(self) -> set[str]:
        """Cache files open through the mount: eviction leaves them alone."""
        return {str(handle.path) for handle in self.handles.values()}

    def writing(self, path: str) -> bool:
        """Whether a live (not unlinked) file is open for writing at this cache path."""
        return any(isinstance(handle, Writing) and str(handle.path) == path
                   and not self._orphaned(handle.inode) for handle in self.handles.values())

    def recover(self) -> None:
        """At mount: a change that was never committed (the daemon stopped with the
        file open for writing, and no close or fsync journaled it) is dropped, and the
        container's version shows again; journaled ones go up as the journal says,
        a small file's copy made again from its row's bytes where a crash lost it. The
        downloaded copies the last daemon never synced are dropped (copysync.py)."""
        for path, data in self.store.small_copies():
            if self.cache.restore(Path(path), data):
                log.warning("the copy of a journaled file was lost or cut by a crash and"
                            " is made again from its journal row: %s", path)
        unsynced = self.store.unsynced_copies()  # left by a daemon that did not stop cleanly
        for path in unsynced:
            record = self.store.cached_file(path)
            if record is not None and record.state != CopyState.DIRTY:
                self.cache.forget(path)
        if unsynced:
            log.warning("dropped %d downloaded copies never synced before the daemon stopped"
                        " (a crash may have cut them): they download again", len(unsynced))
            self.store.synced_to(self.store.unsynced_mark())
        for path in self.store.uncommitted_files():
            log.warning("dropping a change never committed by a close or fsync: %s", path)
            self.cache.forget(path)

    def _becomes_conflict_copy(self, path: Path, index: int, blob: str,
                               item: BlobItem) -> None:
        """A conflict was found while the file is open for writing: its bytes went up
        as `blob`, beside it, and the file shows the container's version again. The
        open handles go on with those bytes as that copy, a file of its own: what they
        write later goes up there too, and nothing is lost or lands on the other's."""
        # Handles of a file unlinked or replaced since keep reading their own bytes.
        handles = [handle for handle in self.handles.values()
                   if handle.path == path and not self._orphaned(handle.inode)]
        node = self.store.node(handles[0].inode) if handles else None
        parent = self.store.node(node.parent) if node is not None else None
        if node is None or parent is None or not blob.startswith(parent.blob or ""):
            self.cache.forget(path)
            return
        size = path.stat().st_size
        copy = self.store.add_local_file(parent, blob[len(parent.blob or ""):], blob,
                                         size=size, mtime_ns=node.mtime_ns)
        self.store.update_file(copy, size=size, mtime_ns=node.mtime_ns, etag=item.etag or "",
                               checked=time.time())
        new_path = self.cache.path_for(self.entries[index], blob)
        self.moves.link(path, new_path)
        for handle in handles:
            handle.inode = copy
        self.cache.record(new_path, blob=blob, etag=item.etag or "", size=size,
                          state=CopyState.DIRTY)
        self.cache.forget(path)

    def looked_up(self, inode: int) -> None:
        """The kernel was handed `inode` once more."""
        self._lookups[inode] += 1

    def forget(self, inode: int, count: int) -> None:
        """The kernel dropped `count` of its references to `inode`."""
        left = self._lookups[inode] - count
        if left > 0:
            self._lookups[inode] = left
            return
        del self._lookups[inode]
        self._drop_orphan(inode)

    def _orphaned(self, inode: int) -> bool:
        node = self.store.node(inode)
        return node is None or node.parent == ORPHANS

    def _path(self, node: EntryNode) -> Path:
        return self.cache.path_for(self.entries[node.entry_index], node.blob)

    def _add(self, handle: Handle) -> int:
        number = next(self._numbers)
        self.handles[number] = handle
        return number

    # -- open and create ----------------------------------------------------------

    async def open(self, inode: int, flags: int) -> tuple[int, bool]:
        """A handle of the file, and whether the kernel may keep pages it cached."""
        node = self.namespace.node(inode)
        if node.is_dir:
            raise IsADirectory(node.name)
        node = node.in_entry()  # a file is always under an entry
        if not flags & WRITE_FLAGS:
            path, downloaded, source = await self._read_copy(node)
            fd = source.open() if source is not None else os.open(path, os.O_RDONLY)
            if isinstance(source, BlockReader):
                return self._add(Reading(fd, inode, path, blocks=source)), not downloaded
            return self._add(Reading(fd, inode, path, source)), not downloaded
        self.namespace.writable_file(node)
        truncate = bool(flags & os.O_TRUNC)
        if truncate:
            # Replaced whole: no need to download what is about to go.
            path, downloaded = self._path(node), True
        else:
            path, downloaded, _ = await self._cached_copy(node)
        await self._start_writing(node, path, truncate=truncate)
        fd = os.open(path, os.O_RDWR)
        # Pages the kernel kept from an earlier open are still right unless new bytes
        # were just downloaded.
        return self._add(Writing(fd, inode, path, written=truncate)), not downloaded

    async def create(self, parent_inode: int, name: str,
                     kept: Kept | None = None) -> tuple[int, EntryNode]:
        node = await self.namespace.create_file(self.namespace.node(parent_inode), name, kept)
        path = self._path(node)
        await self._start_writing(node, path, truncate=True)
        fd = os.open(path, os.O_RDWR)
        return self._add(Writing(fd, node.inode, path, written=True)), self.namespace.node(
            node.inode).in_entry()

    async def _read_copy(self, node: EntryNode,
                         ) -> tuple[Path, bool, Filling | BlockReader | None]:
        """`_cached_copy` for a reader, of the file as it is once its bytes are in."""
        was_linked = not self._orphaned(node.inode)
        while True:
            path, downloaded, source = await self._cached_copy(node, readable=True)
            now = self.store.entry_node(node.inode)
            if was_linked and (now is None or now.parent == ORPHANS):
                # Unlinked while the open waited for its bytes: the open comes after the
                # unlink, and a new file of that name may hold the cache path now.
                if isinstance(source, BlockReader):
                    source.close()
                raise NotFound(node.name)
            if now is None or now.blob == node.blob or source is not None:
                return path, downloaded, source
            node = now  # renamed meanwhile: its copy, if any, went with it

    async def _cached_copy(self, node: EntryNode, *, readable: bool = False,
                           ) -> tuple[Path, bool, Filling | BlockReader | None]:
        """The cache file holding the file's bytes (downloaded if need be), whether it
        was downloaded now, and (only if `readable`) the Filling of a large file handed
        over while it downloads, or the BlockReader of one read by blocks."""
        if not node.unuploaded:
            node = await self.namespace.fresh_file(node)
        entry, remote = self.entries[node.entry_index], self.namespace.remotes[node.entry_index]
        shown_path = self.namespace.path_of(node)
        filling = None
        if readable:
            path, downloaded, filling = await self.downloads.readable_copy(
                entry, remote, node.blob, size=node.size, etag=node.etag, shown_path=shown_path)
        else:
            path, downloaded = await self.downloads.writable_copy(
                entry, remote, node.blob, size=node.size, etag=node.etag, shown_path=shown_path)
        self.on_copy(downloaded)
        if (self.read_ahead.files and read_ahead_takes(node.size)
                and self.downloads.walking(path, downloaded)):
            self.read_ahead.after(node, entry, remote, shown_path.rpartition("/")[0])
        return path, downloaded, filling

    async def _start_writing(self, node: EntryNode, path: Path, *, truncate: bool) -> None:
        """Mark the cached copy as about to change here, so no download replaces it,
        and the node as local, so no listing drops it while it is open.

        The version the change is based on is the one whose bytes are in the cache
        (or, when they are all replaced, the one the listing showed).
        """
        if truncate:
            await self.downloads.settle(path)
        record = self.store.cached_file(str(path))
        if record is not None and (record.state == CopyState.DIRTY or not truncate):
            base = record.etag
        else:
            base = node.etag or ""
        if truncate:
            make_empty(path)
            self.store.set_local(node.inode, size=0, mtime_ns=time.time_ns())
        else:
            self.store.set_local(node.inode, size=node.size, mtime_ns=node.mtime_ns)
        self.cache.record(path, blob=node.blob, etag=base, size=path.stat().st_size,
                          state=CopyState.DIRTY)

    # -- reads and writes ---------------------------------------------------------

    async def read(self, number: int, offset: int, size: int) -> bytes:
        handle = self.handles[number]
        if isinstance(handle, Reading) and handle.blocks is not None:
            try:
                return await handle.blocks.read(offset, size)
            except RemoteConflict:
                self._recheck(handle.inode)
                raise
        if isinstance(handle, Reading) and handle.filling is not None:
            await handle.filling.wait_for(offset + size)
        if isinstance(handle, Writing):
            await self.downloads.before_read(handle.path, offset, size)
        return os.pread(handle.fd, size, offset)

    def _recheck(self, inode: int) -> None:
        """The blob changed since the file was opened: the next open asks for it."""
        node = self.store.node(inode)
        if node is not None and not node.unuploaded:
            self.store.update_file(inode, size=node.size, mtime_ns=node.mtime_ns,
                                   etag=node.etag or "", checked=0.0)

    async def write(self, number: int, offset: int, data: bytes) -> int:
        handle = self.handles[number]
        if not isinstance(handle, Writing):
            raise OSError(errno.EBADF, "not open for writing")
        await self.downloads.before_write(handle.path, offset, len(data))
        written = self.downloads.write(handle.fd, handle.path, data, offset)
        handle.written = True
        self.store.grow_local(handle.inode, end=offset + written, mtime_ns=time.time_ns())
        return written

    async def flush(self, number: int) -> None:
        handle = self.handles.get(number)
        if isinstance(handle, Writing) and handle.written:
            await self._commit(handle, wait=None)

    async def fsync(self, number: int) -> None:
        """Durable as close() makes it: uploaded (sync mode) or journaled (async)."""
        handle = self.handles.get(number)
        if not isinstance(handle, Writing):
            return
        node = self.store.entry_node(handle.inode)
        sync = node is not None and self.entries[node.entry_index].upload == "sync"
        # fsync(2) makes the file's bytes durable, whichever descriptor wrote them.
        writers = self._writers(handle.inode)
        if (any(writer.written for writer in writers)
                or (sync and self.store.upload(str(handle.path)) is not None)):
            for writer in writers:
                writer.written = False
            await self._commit(handle, wait=None)

    async def release(self, number: int) -> None:
        handle = self.handles.pop(number, None)
        if handle is None:
            return
        try:
            if isinstance(handle, Writing):
                if handle.written:
                    # Written after the last flush (through mmap, say): journal it too.
                    await self._commit(handle, wait=False)
                self._settle_unchanged(handle)
        except Exception:
            # Nothing can reach the program any more; the journal keeps what it has.
            log.exception("release of %s failed", handle.path)
        finally:
            os.close(handle.fd)
            if isinstance(handle, Reading) and handle.blocks is not None:
                handle.blocks.close()
            self._drop_orphan(handle.inode)

    async def _commit(self, handle: Writing, *, wait: bool | None) -> None:
        """Journal the file's upload; upload it now in sync mode (or when `wait`)."""
        handle.written = False
        node = self.store.entry_node(handle.inode)
        if node is None or node.parent == ORPHANS:
            return  # unlinked while open: nothing to upload
        entry = self.entries[node.entry_index]
        record = self.store.cached_file(str(handle.path))
        base = record.etag if record else (node.etag or "")
        size = os.fstat(handle.fd).st_size
        self.cache.record(handle.path, blob=node.blob, etag=base, size=size, state=CopyState.DIRTY)
        # An upload of an earlier version may have finished meanwhile: still local.
        self.store.set_local(node.inode, size=size, mtime_ns=node.mtime_ns)
        version = await self.uploads.journal(handle.path, entry, node.blob, base,
                                             node.mtime_ns, node_metadata(node))
        handle.journaled = True
        if wait or (wait is None and entry.upload == "sync"):
            await self.uploads.upload_now(handle.path, version)

    def _settle_unchanged(self, handle: Writing) -> None:
        """The last writer is gone and nothing waits in the journal: the copy is the
        blob's version its record names (unchanged, or uploaded while it was open)."""
        path = str(handle.path)
        node = self.store.entry_node(handle.inode)
        if (node is None or node.parent == ORPHANS or self.writing(path)
                or self.store.upload(path) is not None):
            return
        record = self.store.cached_file(path)
        if record is None or record.state != CopyState.DIRTY:
            return
        if not record.etag:
            return  # made here and never uploaded: nothing to be clean against
        if record.etag == node.etag:
            self.store.set_cache_state(path, CopyState.CLEAN)
            self.store.set_unchanged(node.inode)
        else:
            self.uploads.writer_closed(handle.path, node.entry_index, node.blob, record.etag,
                                       node.mtime_ns)

    def _drop_orphan(self, inode: int) -> None:
        """A file unlinked while open goes once no handle or kernel reference is left."""
        if inode in self._lookups or any(h.inode == inode for h in self.handles.values()):
            return  # still known: the common case, answered without the store
        node = self.store.node(inode)
        if node is not None and node.parent == ORPHANS:
            self.store.remove_node(inode)

    # -- attributes ---------------------------------------------------------------

    async def truncate(self, node: EntryNode, size: int, number: int | None) -> None:
        handle = self.handles.get(number) if number else None
        if isinstance(handle, Writing):
            await self.downloads.before_truncate(handle.path, size)
            os.ftruncate(handle.fd, size)
            handle.written = True
            self.store.set_local(node.inode, size=size, mtime_ns=time.time_ns())
            return
        path = self._path(node)
        if size == 0:
            await self._start_writing(node, path, truncate=True)
        else:
            path, _, _ = await self._cached_copy(node)
            await self._start_writing(node, path, truncate=False)
            await self.downloads.before_truncate(path, size)
            os.truncate(path, size)
        fd = os.open(path, os.O_RDWR)
        # A handle of its own for the length of the call, so that an upload ending
        # meanwhile leaves the copy dirty.
        writing = Writing(fd, node.inode, path, written=True)
        number = self._add(writing)
        try:
            self.store.set_local(node.inode, size=size, mtime_ns=time.time_ns())
            await self._commit(writing, wait=None)
        finally:
            await self.release(number)

    async def set_attributes(self, node: EntryNode, *, mode: int | None = None,
                             uid: int | None = None, gid: int | None = None,
                             atime_ns: int | None = None,
                             mtime_ns: int | None = None) -> None:
        """chmod, chown, utimens (None: unchanged): kept as the blob's metadata, no
        bytes moved; a folder's on its marker blob. A file with bytes still to go up
        takes them with its upload."""
        kept: _Kept = {"mode": node.mode if mode is None else mode,
                       "uid": node.uid if uid is None else uid,
                       "gid": node.gid if gid is None else gid,
                       "atime_ns": node.atime_ns if atime_ns is None else atime_ns,
                       "mtime_ns": node.mtime_ns if mtime_ns is None else mtime_ns}
        self.store.set_kept(node.inode, **kept, ctime_ns=time.time_ns())
        changes = to_metadata(is_dir=node.is_dir, mode=mode, uid=uid, gid=gid,
                              special=node.special)
        if atime_ns is not None:
            changes[ATIME_KEY] = format_mtime(atime_ns)
        if mtime_ns is not None:
            changes[MTIME_KEY] = format_mtime(mtime_ns)
        if node.is_dir:
            metadata = {**to_metadata(is_dir=True, mode=kept["mode"], uid=kept["uid"],
                                      gid=kept["gid"]), **changes}
            entry = self.entries[node.entry_index]
            if node.unuploaded and self.uploads.marker_row(entry, node.blob) is not None:
                # Its marker has not gone up yet: it takes the new metadata with it.
                await self.uploads.journal_folder(entry, node.blob, metadata)
                return
            await self.namespace.update_metadata(node, metadata)
            return
        path = self._path(node)
        if node.unuploaded:
            if any(writer.written for writer in self._writers(node.inode)):
                return  # its flush journals the new metadata with the bytes
            upload = self.store.upload(str(path))
            if upload is not None:
                # Its bytes were made durable when journaled, and no writer changed
                # them since: only the row's metadata is new (a chmod or touch after close).
                entry = self.entries[node.entry_index]
                now = self.namespace.node(node.inode)
                version = await self.uploads.journal(path, entry, upload.blob,
                                                     upload.base_etag, now.mtime_ns,
                                                     node_metadata(now), bytes_durable=True)
                if entry.upload == "sync":
                    await self.uploads.upload_now(path, version)
                return
            if not node.etag:
                return  # never uploaded: its first upload takes them
        old_etag, new_etag = await self.namespace.update_metadata(node, changes)
        # Same bytes, new ETag: a copy of them (clean, or the base of a change) stays good.
        record = self.store.cached_file(str(path))
        if record is not None and record.etag == old_etag:
            self.cache.record(path, blob=node.blob, etag=new_etag, size=record.size,
                              state=record.state)
        # Changed in the container meanwhile: its size is read again at the next look.
        fresh = node.etag == old_etag
        self.store.update_file(node.inode, size=node.size, mtime_ns=kept["mtime_ns"],
                               etag=new_etag if fresh else (node.etag or ""),
                               checked=time.time() if fresh else 0.0)

    def _writers(self, inode: int) -> list[Writing]:
        """The handles open for writing on the file `inode`."""
        return [handle for handle in self.handles.values()
                if isinstance(handle, Writing) and handle.inode == inode]

    async def _commit_writers(self, inode: int) -> None:
        """Journal what the file's writers wrote since their last commit (no upload)."""
        for handle in self._writers(inode):
            if handle.written:
                await self._commit(handle, wait=False)

    def _moved(self, old_path: Path, new_path: Path) -> None:
        """A cache file took a new name: the handles on it follow."""
        for handle in self.handles.values():
            if handle.path == old_path:
                handle.path = new_path

