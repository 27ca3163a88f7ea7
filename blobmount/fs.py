"""The FUSE handlers: thin, and every failure a `FUSEError` with the right errno."""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat
import time
from collections.abc import Sequence

import pyfuse3

from .config import MountEntry
from .errors import BlobmountError
from .eviction import cache_space
from .files import Files
from .metrics import Metrics
from .namespace import Namespace
from .store import Node
from .xattrs import XattrError, Xattrs

log = logging.getLogger(__name__)

READDIR_CHUNK = 256
RENAME_EXCHANGE = 2  # linux/fs.h
RENAME_NOREPLACE = 1
STATFS_BLOCK = 4096


def _fuse_errors(handler):
    """Answer the kernel with an errno, never a traceback; count the request, its time
    and its errno (the one place every handler passes through)."""
    op = handler.__name__

    @functools.wraps(handler)
    async def wrapper(self, *args, **kwargs):
        started = time.perf_counter()
        failed = None
        try:
            return await handler(self, *args, **kwargs)
        except pyfuse3.FUSEError as exc:
            failed = exc.errno
            raise
        except BlobmountError as exc:
            level = logging.DEBUG if exc.errno == errno.ENOENT else logging.WARNING
            log.log(level, "%s: %s", op, exc)
            failed = exc.errno
            raise pyfuse3.FUSEError(exc.errno) from None
        except OSError as exc:
            log.warning("%s: %s", op, exc)
            failed = exc.errno or errno.EIO
            raise pyfuse3.FUSEError(failed) from None
        except Exception:
            log.exception("%s failed", op)
            failed = errno.EIO
            raise pyfuse3.FUSEError(errno.EIO) from None
        finally:
            if self.metrics is not None:
                self.metrics.fuse_request(op, time.perf_counter() - started, failed)

    return wrapper


def _not_supported(*_args, **_kwargs):
    raise pyfuse3.FUSEError(errno.EPERM)


class BlobFS(pyfuse3.Operations):
    """Decodes the kernel's requests and forwards them: a file's life to `Files`, the
    tree to the namespace."""

    enable_writeback_cache = False
    #: where requests are counted (the daemon sets it)
    metrics: Metrics | None = None

    def __init__(self, namespace: Namespace, files: Files, entries: Sequence[MountEntry], *,
                 attr_timeout: float, xattrs: Xattrs | None = None, uid: int | None = None,
                 gid: int | None = None, umask: int = 0o022) -> None:
        super().__init__()
        self.namespace = namespace
        self.files = files
        self.entries = entries
        self.attr_timeout = attr_timeout
        self.xattrs = xattrs
        self._uid = os.getuid() if uid is None else uid
        self._gid = os.getgid() if gid is None else gid
        self._umask = umask
        self._dir_handles = itertools.count(1)
        self._open_dirs: dict[int, list[int]] = {}

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
            return self._handed(parent)
        if text == "..":
            return self._handed(self.namespace.node(parent.parent))
        self.namespace.checked_length(text)
        return self._handed(await self.namespace.lookup(parent, text))

    def _handed(self, node: Node) -> pyfuse3.EntryAttributes:
        """A node's attributes in an entry the kernel keeps: one more reference to it."""
        self.files.looked_up(node.inode)
        return self._attributes(node)

    async def forget(self, inode_list):
        # The kernel takes no answer: nothing may be raised.
        for inode, count in inode_list:
            try:
                self.files.forget(inode, count)
            except Exception:
                log.exception("forget of inode %d failed", inode)

    @_fuse_errors
    async def getattr(self, inode, ctx=None):
        return self._attributes(self.namespace.node(inode))

    @_fuse_errors
    async def opendir(self, inode, ctx):
        folder = await self.namespace.listed(self.namespace.node(inode))
        handle = next(self._dir_handles)
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
                self.files.looked_up(node.inode)  # the kernel keeps what it took
            offset += len(chunk)

    @_fuse_errors
    async def releasedir(self, fh):
        self._open_dirs.pop(fh, None)

    @_fuse_errors
    async def open(self, inode, flags, ctx):
        handle, keep_cache = await self.files.open(inode, flags)
        return pyfuse3.FileInfo(fh=handle, keep_cache=keep_cache)

    @_fuse_errors
    async def create(self, parent_inode, name, mode, flags, ctx):
        handle, node = await self.files.create(parent_inode, self._name(name))
        return pyfuse3.FileInfo(fh=handle, keep_cache=False), self._handed(node)

    @_fuse_errors
    async def read(self, fh, off, size):
        return await self.files.read(fh, off, size)

    @_fuse_errors
    async def write(self, fh, off, buf):
        return await self.files.write(fh, off, buf)

    @_fuse_errors
    async def flush(self, fh):
        await self.files.flush(fh)

    @_fuse_errors
    async def fsync(self, fh, datasync):
        await self.files.fsync(fh)

    @_fuse_errors
    async def release(self, fh):
        await self.files.release(fh)

    @_fuse_errors
    async def setattr(self, inode, attr, fields, fh, ctx):
        node = self.namespace.node(inode)
        if any((fields.update_size, fields.update_mode, fields.update_uid, fields.update_gid,
                fields.update_atime, fields.update_mtime)):
            self.namespace.writable_file(node)
        if fields.update_size:
            if node.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            await self.files.truncate(node, attr.st_size, fh)
        if fields.update_mtime and not node.is_dir:
            await self.files.set_mtime(self.namespace.node(inode), attr.st_mtime_ns)
        # chmod and chown are accepted so that cp -a, rsync -a and tar work, and not
        # kept: blobs have no owner or mode (see the README). Folders keep no time.
        return self._attributes(self.namespace.node(inode))

    @_fuse_errors
    async def mkdir(self, parent_inode, name, mode, ctx):
        folder = await self.namespace.make_folder(self.namespace.node(parent_inode),
                                                  self._name(name))
        return self._handed(folder)

    @_fuse_errors
    async def rmdir(self, parent_inode, name, ctx):
        await self.namespace.remove_folder(self.namespace.node(parent_inode), self._name(name))

    @_fuse_errors
    async def unlink(self, parent_inode, name, ctx):
        await self.files.unlink(self.namespace.node(parent_inode), self._name(name))

    @_fuse_errors
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags & RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        await self.files.rename(self.namespace.node(parent_inode_old), self._name(name_old),
                                self.namespace.node(parent_inode_new), self._name(name_new),
                                replace=not flags & RENAME_NOREPLACE)

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

    @_fuse_errors
    async def getxattr(self, inode, name, ctx):
        if self.xattrs is None:
            raise pyfuse3.FUSEError(errno.ENOSYS)  # the kernel stops asking
        text = name.decode("utf-8", "surrogateescape")
        if not text.startswith("user."):
            # security.*, system.*: `ls -l` asks for them on every file; no network.
            raise pyfuse3.FUSEError(errno.ENODATA)
        return await self._xattr(self.xattrs.get, inode, text)

    @_fuse_errors
    async def listxattr(self, inode, ctx):
        if self.xattrs is None:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        names = await self._xattr(self.xattrs.names, inode)
        return [name.encode("utf-8", "surrogateescape") for name in names]

    @_fuse_errors
    async def setxattr(self, inode, name, value, ctx):
        if self.xattrs is None:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        await self._xattr(self.xattrs.set, inode, name.decode("utf-8", "surrogateescape"),
                          value)

    @_fuse_errors
    async def removexattr(self, inode, name, ctx):
        if self.xattrs is None:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        await self._xattr(self.xattrs.remove, inode, name.decode("utf-8", "surrogateescape"))

    async def _xattr(self, call, inode, *args):
        try:
            return await call(self.namespace.node(inode), *args)
        except XattrError as exc:
            # ENODATA, EPERM, ENOTSUP: answers, not failures worth a log line.
            raise pyfuse3.FUSEError(exc.errno) from None

    # Blobs have no links or devices (EPERM: git, for one, then renames instead of
    # linking).
    mknod = symlink = link = _not_supported
