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

from .cache import Cache
from .config import MountEntry
from .errors import BlobmountError
from .namespace import Namespace
from .store import Node
from .transfers import Downloads
from .uploads import Uploads

log = logging.getLogger(__name__)

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
READDIR_CHUNK = 256
RENAME_EXCHANGE = 2  # linux/fs.h
RENAME_NOREPLACE = 1


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
    written: bool = False   # changed since it was last journaled


class BlobFS(pyfuse3.Operations):
    """Maps the kernel's requests onto the namespace, the cache and the downloads."""

    enable_writeback_cache = False

    def __init__(self, namespace: Namespace, cache: Cache, downloads: Downloads,
                 uploads: Uploads, entries: Sequence[MountEntry], *,
                 attr_timeout: float) -> None:
        super().__init__()
        self.namespace = namespace
        self.cache = cache
        self.downloads = downloads
        self.uploads = uploads
        self.entries = entries
        self.attr_timeout = attr_timeout
        self._uid = os.getuid()
        self._gid = os.getgid()
        self._handles = itertools.count(1)
        self._open_files: dict[int, _OpenFile] = {}
        self._open_dirs: dict[int, list[int]] = {}

    def _attributes(self, node: Node) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = node.inode
        writable = node.entry is not None and not self.entries[node.entry].read_only
        if node.is_dir:
            attrs.st_mode = stat.S_IFDIR | (0o755 if writable else 0o555)
            attrs.st_nlink = 2
        else:
            attrs.st_mode = stat.S_IFREG | (0o644 if writable else 0o444)
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
        if writing and flags & os.O_TRUNC:
            # Replaced whole: no need to download what is about to go.
            await self._start_writing(node, path, truncate=True)
            downloaded = True
        else:
            if not node.local:
                node = await self.namespace.fresh_file(node)
            path, downloaded = await self.downloads.cached_copy(
                entry, self.namespace.remotes[node.entry], node.blob, size=node.size,
                etag=node.etag, shown_path=self.namespace.path_of(node))
            if writing:
                await self._start_writing(node, path, truncate=False)
        fd = os.open(path, os.O_RDWR if writing else os.O_RDONLY)
        handle = next(self._handles)
        self._open_files[handle] = _OpenFile(fd, inode, path, written=bool(flags & os.O_TRUNC))
        # Pages the kernel kept from an earlier open are still right unless new bytes
        # were just downloaded.
        return pyfuse3.FileInfo(fh=handle, keep_cache=not downloaded)

    async def _start_writing(self, node: Node, path: Path, *, truncate: bool) -> None:
        """Mark the cached copy as changed here, so no download replaces it."""
        record = self.namespace.store.cached_file(str(path))
        base = record.etag if record and record.state == "dirty" else (node.etag or "")
        if truncate:
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        size = path.stat().st_size
        self.cache.record(path, blob=node.blob, etag=base, size=size, state="dirty")
        self.namespace.store.set_local(node.inode, size=size, mtime_ns=time.time_ns())

    @_fuse_errors
    async def create(self, parent_inode, name, mode, flags, ctx):
        parent = self.namespace.node(parent_inode)
        node = await self.namespace.create_file(parent, self._name(name))
        path = self.cache.path_for(self.entries[node.entry], node.blob)
        await self._start_writing(node, path, truncate=True)
        fd = os.open(path, os.O_RDWR)
        handle = next(self._handles)
        self._open_files[handle] = _OpenFile(fd, node.inode, path, written=True)
        return (pyfuse3.FileInfo(fh=handle, keep_cache=False),
                self._attributes(self.namespace.node(node.inode)))

    @_fuse_errors
    async def read(self, fh, off, size):
        return os.pread(self._open_files[fh].fd, size, off)

    @_fuse_errors
    async def write(self, fh, off, buf):
        open_file = self._open_files[fh]
        written = os.pwrite(open_file.fd, buf, off)
        open_file.written = True
        node = self.namespace.node(open_file.inode)
        if off + written > node.size:
            self.namespace.store.set_local(node.inode, size=off + written,
                                           mtime_ns=time.time_ns())
        return written

    @_fuse_errors
    async def flush(self, fh):
        open_file = self._open_files.get(fh)
        if open_file is not None and open_file.written:
            await self._commit(open_file, wait=None)

    @_fuse_errors
    async def fsync(self, fh, datasync):
        open_file = self._open_files.get(fh)
        if open_file is not None:
            await self._commit(open_file, wait=True)

    async def _commit(self, open_file: _OpenFile, *, wait: bool | None) -> None:
        """Journal the file's upload; upload it now in sync mode (or when `wait`)."""
        open_file.written = False
        node = self.namespace.node(open_file.inode)
        if not node.local:
            return
        entry = self.entries[node.entry]
        record = self.namespace.store.cached_file(str(open_file.path))
        base = record.etag if record else (node.etag or "")
        size = os.fstat(open_file.fd).st_size
        self.cache.record(open_file.path, blob=node.blob, etag=base, size=size, state="dirty")
        version = await self.uploads.journal(open_file.path, entry, node.blob, base)
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
        finally:
            os.close(open_file.fd)

    @_fuse_errors
    async def setattr(self, inode, attr, fields, fh, ctx):
        node = self.namespace.node(inode)
        if fields.update_size:
            if node.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            self.namespace.writable_file(node)
            await self._truncate(node, attr.st_size, fh)
        # chmod, chown and times are accepted so that cp -a, rsync -a and tar work;
        # the blob keeps none of them yet (see the README).
        return self._attributes(self.namespace.node(inode))

    async def _truncate(self, node: Node, size: int, fh: int | None) -> None:
        open_file = self._open_files.get(fh) if fh else None
        if open_file is not None:
            os.ftruncate(open_file.fd, size)
            open_file.written = True
            self.namespace.store.set_local(node.inode, size=size, mtime_ns=time.time_ns())
            return
        entry = self.entries[node.entry]
        path = self.cache.path_for(entry, node.blob)
        if size == 0:
            await self._start_writing(node, path, truncate=True)
        else:
            if not node.local:
                node = await self.namespace.fresh_file(node)
            path, _ = await self.downloads.cached_copy(
                entry, self.namespace.remotes[node.entry], node.blob, size=node.size,
                etag=node.etag, shown_path=self.namespace.path_of(node))
            await self._start_writing(node, path, truncate=False)
            os.truncate(path, size)
        fd = os.open(path, os.O_RDWR)
        try:
            open_file = _OpenFile(fd, node.inode, path, written=True)
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
            self.uploads.forget(self.cache.path_for(self.entries[node.entry], node.blob))
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
        old_parent = self.namespace.node(parent_inode_old)
        new_parent = self.namespace.node(parent_inode_new)
        node = await self.namespace.lookup(old_parent, self._name(name_old))
        if not node.is_dir and node.local:
            await self._upload_pending(node)
        moved, replaced = await self.namespace.rename(
            old_parent, node.name, new_parent, self._name(name_new),
            replace=not flags & RENAME_NOREPLACE)
        if replaced is not None and not replaced.is_dir:
            self.uploads.forget(self.cache.path_for(self.entries[replaced.entry], replaced.blob))
            self._drop_cached(replaced)
        if not moved.is_dir:
            # The copy made a new blob version; the next open downloads it.
            self._drop_cached(node)

    async def _upload_pending(self, node: Node) -> None:
        """A file about to move must be in the container first: the move copies the blob."""
        path = self.cache.path_for(self.entries[node.entry], node.blob)
        for open_file in self._open_files.values():
            if open_file.inode == node.inode and open_file.written:
                await self._commit(open_file, wait=False)
        upload = self.namespace.store.upload(str(path))
        if upload is not None:
            await self.uploads.upload_now(path, upload.version)

    @staticmethod
    def _name(name: bytes) -> str:
        try:
            return name.decode("utf-8")
        except UnicodeDecodeError:
            raise pyfuse3.FUSEError(errno.EINVAL) from None

    @_fuse_errors
    async def statfs(self, ctx):
        stats = pyfuse3.StatvfsData()
        folder = self.entries[0].cache_dir if self.entries else "/"
        local = os.statvfs(folder if os.path.exists(folder) else "/")
        for field in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                      "f_ffree", "f_favail"):
            setattr(stats, field, getattr(local, field))
        stats.f_namemax = 255
        return stats

    # Blobs have no links, devices or extended attributes (yet).
    mknod = symlink = link = setxattr = removexattr = _not_supported
