"""The FUSE handlers: thin, and every failure a `FUSEError` with the right errno."""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import trio

from .cache import Cache
from .config import MountEntry
from .errors import BlobmountError
from .eviction import cache_space
from .namespace import Namespace
from .remote import MTIME_KEY, format_mtime
from .store import Node
from .transfers import READ_AHEAD_MAX_SIZE, Downloads, Filling, Wanted
from .uploads import Uploads
from .xattrs import XattrError, Xattrs

log = logging.getLogger(__name__)

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
READDIR_CHUNK = 256
RENAME_EXCHANGE = 2  # linux/fs.h
RENAME_NOREPLACE = 1
STATFS_BLOCK = 4096


def _fuse_errors(handler):
    """Answer the kernel with an errno, never a traceback."""

    @functools.wraps(handler)
    async def wrapper(*args, **kwargs):
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except BlobmountError as exc:
            level = logging.DEBUG if exc.errno == errno.ENOENT else logging.WARNING
            log.log(level, "%s: %s", handler.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno) from None
        except OSError as exc:
            log.warning("%s: %s", handler.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except Exception:
            log.exception("%s failed", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def _not_supported(*_args, **_kwargs):
    raise pyfuse3.FUSEError(errno.EPERM)


@dataclass
class _OpenFile:
    fd: int
    inode: int
    path: Path
    writable: bool = False
    written: bool = False   # changed since it was last journaled
    journaled: bool = False  # journaled at least once through this handle
    filling: Filling | None = None  # still downloading: reads wait for their bytes


class BlobFS(pyfuse3.Operations):
    """Maps the kernel's requests onto the namespace, the cache and the transfers."""

    enable_writeback_cache = False

    def __init__(self, namespace: Namespace, cache: Cache, downloads: Downloads,
                 uploads: Uploads, entries: Sequence[MountEntry], *,
                 attr_timeout: float, read_ahead_files: int = 0,
                 xattrs: bool = True, uid: int | None = None, gid: int | None = None,
                 umask: int = 0o022) -> None:
        super().__init__()
        self.xattrs_enabled = xattrs
        self.read_ahead_files = read_ahead_files
        self.namespace = namespace
        self.cache = cache
        self.downloads = downloads
        self.uploads = uploads
        self.entries = entries
        self.attr_timeout = attr_timeout
        self._uid = os.getuid() if uid is None else uid
        self._gid = os.getgid() if gid is None else gid
        self._umask = umask
        self._handles = itertools.count(1)
        self._open_files: dict[int, _OpenFile] = {}
        self._open_dirs: dict[int, list[int]] = {}
        #: folder inode -> the last file read-ahead queued in it
        self._read_ahead_end: dict[int, str] = {}
        self.xattrs = Xattrs(namespace, cache, uploads, entries)

    def paths_in_use(self) -> set[str]:
        """Cache files open through the mount: eviction leaves them alone."""
        return {str(open_file.path) for open_file in self._open_files.values()}

    def _attributes(self, node: Node) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = node.inode
        writable = node.entry is not None and not self.entries[node.entry].read_only
        if node.is_dir:
            attrs.st_mode = stat.S_IFDIR | ((0o777 if writable else 0o555) & ~self._umask)
            attrs.st_nlink = 2
        else:
            attrs.st_mode = stat.S_IFREG | ((0o666 if writable else 0o444) & ~self._umask)
            attrs.st_nlink = 1
        attrs.st_size = node.size
        attrs.st_blksize = 128 * 1024
        attrs.st_blocks = (node.size + 511) // 512
        attrs.st_atime_ns = attrs.st_mtime_ns = attrs.st_ctime_ns = node.mtime_ns
        attrs.st_uid = self._uid
        attrs.st_gid = self._gid
        attrs.entry_timeout = self.attr_timeout
        attrs.attr_timeout = self.attr_timeout
        return attrs

    @_fuse_errors
    async def lookup(self, parent_inode, name, ctx=None):
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None
        parent = self.namespace.node(parent_inode)
        if text == ".":
            return self._attributes(parent)
        if text == "..":
            return self._attributes(self.namespace.node(parent.parent))
        self.namespace.checked_length(text)
        return self._attributes(await self.namespace.lookup(parent, text))

    @_fuse_errors
    async def getattr(self, inode, ctx=None):
        return self._attributes(self.namespace.node(inode))

    @_fuse_errors
    async def opendir(self, inode, ctx):
        folder = await self.namespace.listed(self.namespace.node(inode))
        handle = next(self._handles)
        # A snapshot, so offsets stay right while the kernel reads in chunks even if
        # a listing refresh adds or drops children in between.
        self._open_dirs[handle] = self.namespace.store.child_inodes(folder.inode)
        return handle

    @_fuse_errors
    async def readdir(self, fh, start_id, token):
        inodes = self._open_dirs[fh]
        offset = start_id
        while offset < len(inodes):
            chunk = inodes[offset:offset + READDIR_CHUNK]
            # The id after each name is where the next readdir call starts.
            next_ids = {inode: offset + i + 1 for i, inode in enumerate(chunk)}
            for node in self.namespace.store.nodes(chunk):
                if not pyfuse3.readdir_reply(token, node.name.encode("utf-8"),
                                             self._attributes(node), next_ids[node.inode]):
                    return
            offset += len(chunk)

    async def releasedir(self, fh):
        self._open_dirs.pop(fh, None)

    @_fuse_errors
    async def open(self, inode, flags, ctx):
        node = self.namespace.node(inode)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        writing = bool(flags & _WRITE_FLAGS)
        if writing:
            self.namespace.writable_file(node)
        entry = self.entries[node.entry]
        path = self.cache.path_for(entry, node.blob)
        truncate = writing and bool(flags & os.O_TRUNC)
        filling = None
        if truncate:
            # Replaced whole: no need to download what is about to go.
            await self._start_writing(node, path, truncate=True)
            downloaded = True
        elif writing:
            path, downloaded, _ = await self._cached_copy(node)
            await self._start_writing(node, path, truncate=False)
        else:
            path, downloaded, filling = await self._cached_copy(node, readable=True)
        if filling is not None:
            fd = filling.open()
        else:
            fd = os.open(path, os.O_RDWR if writing else os.O_RDONLY)
        handle = next(self._handles)
        self._open_files[handle] = _OpenFile(fd, inode, path, writable=writing,
                                             written=truncate, filling=filling)
        # Pages the kernel kept from an earlier open are still right unless new bytes
        # were just downloaded.
        return pyfuse3.FileInfo(fh=handle, keep_cache=not downloaded)

    async def _cached_copy(self, node: Node, *, readable: bool = False,
                           ) -> tuple[Path, bool, Filling | None]:
        """The cache file holding the file's bytes (downloaded if need be), whether it
        was downloaded now, and (only if `readable`) the Filling of a large file handed
        over while it downloads."""
        if not node.local:
            node = await self.namespace.fresh_file(node)
        entry, remote = self.entries[node.entry], self.namespace.remotes[node.entry]
        shown_path = self.namespace.path_of(node)
        wanted = {"size": node.size, "etag": node.etag, "shown_path": shown_path}
        filling = None
        if readable:
            path, downloaded, filling = await self.downloads.readable_copy(
                entry, remote, node.blob, **wanted)
        else:
            path, downloaded = await self.downloads.cached_copy(entry, remote, node.blob,
                                                                **wanted)
        if (self.read_ahead_files and node.size <= READ_AHEAD_MAX_SIZE
                and self.downloads.walking(path, downloaded)):
            self._read_ahead(node, entry, shown_path.rpartition("/")[0])
        return path, downloaded, filling

    def _read_ahead(self, node: Node, entry: MountEntry, folder: str) -> None:
        """Fetch the next small files of the folder in the background. A bounded
        cache spends at most a tenth of its limit on guesses, so that read-ahead
        never pushes out what was really read."""
        budget = entry.cache_max_bytes // 10 if entry.cache_max_bytes else None
        # Inside the window queued before, a walk moves it on by one file: only the
        # new end is looked at (the whole window each open cost 16 hashes and stats).
        end = self._read_ahead_end.get(node.parent, "")
        after, limit = (end, 1) if end > node.name else (node.name, self.read_ahead_files)
        wanted = []
        for sibling in self.namespace.store.next_files(
                node.parent, after, limit=limit, max_size=READ_AHEAD_MAX_SIZE):
            if budget is not None:
                budget -= sibling.size
                if budget < 0:
                    break
            wanted.append(Wanted(sibling.blob, sibling.size, sibling.etag,
                                 f"{folder}/{sibling.name}"))
            self._read_ahead_end[node.parent] = sibling.name
        self.downloads.read_ahead(entry, self.namespace.remotes[node.entry], wanted)

    async def _start_writing(self, node: Node, path: Path, *, truncate: bool) -> None:
        """Mark the cached copy as about to change here, so no download replaces it.

        The version the change is based on is the one whose bytes are in the cache
        (or, when they are all replaced, the one the listing showed).
        """
        if truncate:
            await self.downloads.settle(path)
        record = self.namespace.store.cached_file(str(path))
        if record is not None and (record.state == "dirty" or not truncate):
            base = record.etag
        else:
            base = node.etag or ""
        if truncate:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
            self.namespace.store.set_local(node.inode, size=0, mtime_ns=time.time_ns())
        size = path.stat().st_size
        self.cache.record(path, blob=node.blob, etag=base, size=size, state="dirty")

    @_fuse_errors
    async def create(self, parent_inode, name, mode, flags, ctx):
        parent = self.namespace.node(parent_inode)
        node = await self.namespace.create_file(parent, self._name(name))
        path = self.cache.path_for(self.entries[node.entry], node.blob)
        await self._start_writing(node, path, truncate=True)
        fd = os.open(path, os.O_RDWR)
        handle = next(self._handles)
        self._open_files[handle] = _OpenFile(fd, node.inode, path, writable=True, written=True)
        return (pyfuse3.FileInfo(fh=handle, keep_cache=False),
                self._attributes(self.namespace.node(node.inode)))

    @_fuse_errors
    async def read(self, fh, off, size):
        open_file = self._open_files[fh]
        if open_file.filling is not None:
            await open_file.filling.wait_for(off + size)
        return os.pread(open_file.fd, size, off)

    @_fuse_errors
    async def write(self, fh, off, buf):
        open_file = self._open_files[fh]
        written = os.pwrite(open_file.fd, buf, off)
        open_file.written = True
        node = self.namespace.store.node(open_file.inode)
        if node is not None:  # else unlinked while open: the bytes go nowhere
            self.namespace.store.set_local(node.inode, size=max(node.size, off + written),
                                           mtime_ns=time.time_ns())
        return written

    @_fuse_errors
    async def flush(self, fh):
        open_file = self._open_files.get(fh)
        if open_file is not None and open_file.written:
            await self._commit(open_file, wait=None)

    @_fuse_errors
    async def fsync(self, fh, datasync):
        """Durable as close() makes it: uploaded (sync mode) or journaled (async)."""
        open_file = self._open_files.get(fh)
        if open_file is None:
            return
        node = self.namespace.store.node(open_file.inode)
        sync = node is not None and self.entries[node.entry].upload == "sync"
        if open_file.written or (sync and self._pending(open_file.path)):
            await self._commit(open_file, wait=None)

    def _pending(self, path: Path) -> bool:
        return self.namespace.store.upload(str(path)) is not None

    async def _commit(self, open_file: _OpenFile, *, wait: bool | None) -> None:
        """Journal the file's upload; upload it now in sync mode (or when `wait`)."""
        open_file.written = False
        node = self.namespace.store.node(open_file.inode)
        if node is None:
            return  # unlinked while open: nothing to upload
        entry = self.entries[node.entry]
        record = self.namespace.store.cached_file(str(open_file.path))
        base = record.etag if record else (node.etag or "")
        size = os.fstat(open_file.fd).st_size
        self.cache.record(open_file.path, blob=node.blob, etag=base, size=size, state="dirty")
        # An upload of an earlier version may have finished meanwhile: still local.
        self.namespace.store.set_local(node.inode, size=size, mtime_ns=node.mtime_ns)
        version = await self.uploads.journal(open_file.path, entry, node.blob, base,
                                             node.mtime_ns)
        open_file.journaled = True
        if wait or (wait is None and entry.upload == "sync"):
            await self.uploads.upload_now(open_file.path, version)

    async def release(self, fh):
        open_file = self._open_files.pop(fh, None)
        if open_file is None:
            return
        try:
            if open_file.written:
                # Written after the last flush (through mmap, say): journal it all the same.
                await self._commit(open_file, wait=False)
            elif open_file.writable and not open_file.journaled:
                self._unchanged(open_file)
        except Exception:
            # Nothing can reach the program any more; the journal keeps what it has.
            log.exception("release of %s failed", open_file.path)
        finally:
            os.close(open_file.fd)

    def _unchanged(self, open_file: _OpenFile) -> None:
        """Opened for writing and closed unchanged: the copy is the blob's again."""
        store = self.namespace.store
        node = store.node(open_file.inode)
        if node is None or node.local or self._pending(open_file.path) or any(
                other.inode == open_file.inode and other.writable
                for other in self._open_files.values()):
            return
        record = store.cached_file(str(open_file.path))
        if record is not None and record.state == "dirty":
            store.set_cache_state(str(open_file.path), "clean")

    @_fuse_errors
    async def setattr(self, inode, attr, fields, fh, ctx):
        node = self.namespace.node(inode)
        if any((fields.update_size, fields.update_mode, fields.update_uid, fields.update_gid,
                fields.update_atime, fields.update_mtime)):
            self.namespace.writable_file(node)
        if fields.update_size:
            if node.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            await self._truncate(node, attr.st_size, fh)
        if fields.update_mtime and not node.is_dir:
            await self._set_mtime(self.namespace.node(inode), attr.st_mtime_ns)
        # chmod and chown are accepted so that cp -a, rsync -a and tar work, and not
        # kept: blobs have no owner or mode (see the README). Folders keep no time.
        return self._attributes(self.namespace.node(inode))

    async def _set_mtime(self, node: Node, mtime_ns: int) -> None:
        """utimens: the time goes up as the blob's `mtime` metadata."""
        store = self.namespace.store
        path = self.cache.path_for(self.entries[node.entry], node.blob)
        if node.local:
            store.set_mtime(node.inode, mtime_ns)
            if any(other.inode == node.inode and other.written
                   for other in self._open_files.values()):
                return  # its flush journals the new time with the bytes
            upload = store.upload(str(path))
            if upload is not None:
                entry = self.entries[node.entry]
                version = await self.uploads.journal(path, entry, upload.blob,
                                                     upload.base_etag, mtime_ns)
                if entry.upload == "sync":
                    await self.uploads.upload_now(path, version)
            return
        remote = self.namespace.remotes[node.entry]
        old_etag, new_etag = await trio.to_thread.run_sync(
            lambda: remote.update_metadata(node.blob, {MTIME_KEY: format_mtime(mtime_ns)}))
        # Same bytes, new ETag: a copy of them (clean, or the base of a change) stays good.
        record = store.cached_file(str(path))
        if record is not None and record.etag == old_etag:
            self.cache.record(path, blob=node.blob, etag=new_etag, size=record.size,
                              state=record.state)
        # Changed in the container meanwhile: its size is read again at the next look.
        fresh = node.etag == old_etag
        store.update_file(node.inode, size=node.size, mtime_ns=mtime_ns,
                          etag=new_etag if fresh else (node.etag or ""),
                          checked=time.time() if fresh else 0.0)

    async def _truncate(self, node: Node, size: int, fh: int | None) -> None:
        open_file = self._open_files.get(fh) if fh else None
        if open_file is not None:
            os.ftruncate(open_file.fd, size)
            open_file.written = True
            self.namespace.store.set_local(node.inode, size=size, mtime_ns=time.time_ns())
            return
        path = self.cache.path_for(self.entries[node.entry], node.blob)
        if size == 0:
            await self._start_writing(node, path, truncate=True)
        else:
            path, _, _ = await self._cached_copy(node)
            await self._start_writing(node, path, truncate=False)
            os.truncate(path, size)
        fd = os.open(path, os.O_RDWR)
        try:
            open_file = _OpenFile(fd, node.inode, path, writable=True, written=True)
            self.namespace.store.set_local(node.inode, size=size, mtime_ns=time.time_ns())
            await self._commit(open_file, wait=None)
        finally:
            os.close(fd)

    @_fuse_errors
    async def mkdir(self, parent_inode, name, mode, ctx):
        folder = await self.namespace.make_folder(self.namespace.node(parent_inode),
                                                  self._name(name))
        return self._attributes(folder)

    @_fuse_errors
    async def rmdir(self, parent_inode, name, ctx):
        await self.namespace.remove_folder(self.namespace.node(parent_inode), self._name(name))

    @_fuse_errors
    async def unlink(self, parent_inode, name, ctx):
        parent = self.namespace.node(parent_inode)
        node = await self.namespace.lookup(parent, self._name(name))
        if not node.is_dir:
            self.namespace.writable_file(node)
            # First, so no upload under way or to come can bring the blob back.
            await self.uploads.forget(self.cache.path_for(self.entries[node.entry], node.blob))
        node = await self.namespace.remove_file(parent, self._name(name))
        self._drop_cached(node)

    def _drop_cached(self, node: Node) -> None:
        path = self.cache.path_for(self.entries[node.entry], node.blob)
        self.namespace.store.drop_cached_file(str(path))
        # Open handles keep reading the unlinked bytes, as POSIX says.
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    @_fuse_errors
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags & RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        store = self.namespace.store
        old_parent = self.namespace.node(parent_inode_old)
        new_parent = self.namespace.node(parent_inode_new)
        node = await self.namespace.lookup(old_parent, self._name(name_old))
        new_name = self._name(name_new)
        self.namespace.writable_folder(old_parent)
        self.namespace.writable_folder(new_parent)
        here_only = False
        if node.is_dir:
            # The move copies blobs in the container: what is pending goes up first.
            await self._upload_pending_under(node)
        elif node.local:
            here_only = await self._only_here(node)
            if not here_only:
                await self._upload_pending(node)
        target = store.child(new_parent.inode, new_name)
        base = None
        if (target is not None and not target.is_dir and not node.is_dir
                and target.inode != node.inode and not flags & RENAME_NOREPLACE):
            # Replaced: its own pending upload must not land on top of the moved file.
            target_path = self.cache.path_for(self.entries[target.entry], target.blob)
            pending = store.upload(str(target_path))
            base = pending.base_etag if pending is not None else (target.etag or "")
            await self.uploads.forget(target_path)
        source = store.node(node.inode) or node  # as the copy will see it
        moved, replaced = await self.namespace.rename(
            old_parent, node.name, new_parent, new_name,
            replace=not flags & RENAME_NOREPLACE, copy=not here_only)
        if replaced is not None and not replaced.is_dir:
            self._drop_cached(replaced)
        if not moved.is_dir and moved.blob != source.blob:
            # A file only here goes up under its new name, replacing what `base` says.
            await self._move_cached(source, moved, base=(base or "") if here_only else None)

    async def _only_here(self, node: Node) -> bool:
        """Whether a file was written here and never uploaded, in an async entry: then
        it is renamed here alone (its upload goes to the new name), with no network."""
        if self.entries[node.entry].upload != "async" or node.etag:
            return False
        for open_file in list(self._open_files.values()):
            if open_file.inode == node.inode and open_file.written:
                await self._commit(open_file, wait=False)
        path = self.cache.path_for(self.entries[node.entry], node.blob)
        await self.uploads.settle(path)  # an upload under way ends first
        upload = self.namespace.store.upload(str(path))
        now = self.namespace.store.node(node.inode)
        return (upload is not None and upload.base_etag == "" and now is not None
                and now.local and not now.etag)

    async def _move_cached(self, source: Node, moved: Node, *, base: str | None) -> None:
        """The cached copy follows its file to the new name, open handles with it.

        After a server-side copy (`base` None), the container holds the source's bytes
        under the copy's ETag: a clean copy of them stays clean under that ETag; one
        written meanwhile stays dirty, now based on it. A file renamed here alone keeps
        its bytes dirty, to go up as a change of the blob version `base` ('' = none).
        A journal row moves with the file: the new one is durable before the old goes.
        """
        store = self.namespace.store
        entry = self.entries[source.entry]
        old_path = self.cache.path_for(entry, source.blob)
        new_path = self.cache.path_for(entry, moved.blob)
        record = store.cached_file(str(old_path))
        upload = store.upload(str(old_path))
        etag = moved.etag if base is None else base
        usable = record is not None and (record.state == "dirty"
                                         or record.etag == source.etag)
        if usable and etag is not None and old_path.exists():
            new_path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                new_path.unlink()
            os.link(old_path, new_path)
            self.cache.record(new_path, blob=moved.blob, etag=etag,
                              size=new_path.stat().st_size, state=record.state)
            for open_file in self._open_files.values():
                if open_file.path == old_path:
                    open_file.path = new_path
            if upload is not None:
                await self.uploads.journal(new_path, entry, moved.blob, etag, upload.mtime_ns)
        if upload is not None:
            await self.uploads.forget(old_path)
        store.drop_cached_file(str(old_path))
        with contextlib.suppress(FileNotFoundError):
            old_path.unlink()

    async def _upload_pending(self, node: Node) -> None:
        """A file about to move must be in the container first: the move copies the blob."""
        path = self.cache.path_for(self.entries[node.entry], node.blob)
        for open_file in list(self._open_files.values()):
            if open_file.inode == node.inode and open_file.written:
                await self._commit(open_file, wait=False)
        upload = self.namespace.store.upload(str(path))
        if upload is not None:
            await self.uploads.upload_now(path, upload.version)

    async def _upload_pending_under(self, folder: Node) -> None:
        """Every pending upload under a folder about to move goes up first."""
        store = self.namespace.store
        for open_file in list(self._open_files.values()):
            node = store.node(open_file.inode)
            if (open_file.written and node is not None and node.entry == folder.entry
                    and node.blob.startswith(folder.blob)):
                await self._commit(open_file, wait=False)
        entry = self.entries[folder.entry]
        for upload in self.uploads.pending(entry.account.account_name, entry.container,
                                           folder.blob):
            await self.uploads.upload_now(Path(upload.path), upload.version)

    @staticmethod
    def _name(name: bytes) -> str:
        try:
            return name.decode("utf-8")
        except UnicodeDecodeError:
            raise pyfuse3.FUSEError(errno.EINVAL) from None

    @_fuse_errors
    async def statfs(self, ctx):
        # Size and use are the caches' (their limits when set): what df should warn about.
        stats = pyfuse3.StatvfsData()
        total, free = cache_space(self.entries, self.namespace.store)
        stats.f_bsize = stats.f_frsize = STATFS_BLOCK
        stats.f_blocks = total // STATFS_BLOCK
        stats.f_bfree = stats.f_bavail = free // STATFS_BLOCK
        local = os.statvfs("/")
        stats.f_files, stats.f_ffree, stats.f_favail = local.f_files, local.f_ffree, local.f_favail
        stats.f_namemax = 255
        return stats

    # -- extended attributes (see xattrs.py) ------------------------------------------

    async def getxattr(self, inode, name, ctx):
        if not self.xattrs_enabled:
            raise pyfuse3.FUSEError(errno.ENOSYS)  # the kernel stops asking
        text = name.decode("utf-8", "surrogateescape")
        if not text.startswith("user."):
            # security.*, system.*: `ls -l` asks for them on every file; no network.
            raise pyfuse3.FUSEError(errno.ENODATA)
        return await self._xattr(self.xattrs.get, inode, text)

    async def listxattr(self, inode, ctx):
        if not self.xattrs_enabled:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        names = await self._xattr(self.xattrs.names, inode)
        return [name.encode("utf-8", "surrogateescape") for name in names]

    async def setxattr(self, inode, name, value, ctx):
        if not self.xattrs_enabled:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        await self._xattr(self.xattrs.set, inode, name.decode("utf-8", "surrogateescape"),
                          value)

    async def removexattr(self, inode, name, ctx):
        if not self.xattrs_enabled:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        await self._xattr(self.xattrs.remove, inode, name.decode("utf-8", "surrogateescape"))

    @_fuse_errors
    async def _xattr(self, call, inode, *args):
        try:
            return await call(self.namespace.node(inode), *args)
        except XattrError as exc:
            # ENODATA, EPERM, ENOTSUP: answers, not failures worth a log line.
            raise pyfuse3.FUSEError(exc.errno) from None

    # Blobs have no links or devices (EPERM: git, for one, then renames instead of
    # linking).
    mknod = symlink = link = _not_supported
