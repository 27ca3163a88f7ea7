"""The FUSE handlers: thin, and every failure a `FUSEError` with the right errno."""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

import pyfuse3

from .cache import Cache
from .config import MountEntry
from .errors import BlobmountError
from .namespace import Namespace
from .store import Node
from .transfers import Downloads

log = logging.getLogger(__name__)

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT
READDIR_CHUNK = 256


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


def _read_only(*_args, **_kwargs):
    raise pyfuse3.FUSEError(errno.EROFS)


@dataclass
class _OpenFile:
    fd: int
    inode: int


class BlobFS(pyfuse3.Operations):
    """Maps the kernel's requests onto the namespace, the cache and the downloads."""

    enable_writeback_cache = False

    def __init__(self, namespace: Namespace, cache: Cache, downloads: Downloads,
                 entries: Sequence[MountEntry], *, attr_timeout: float) -> None:
        super().__init__()
        self.namespace = namespace
        self.cache = cache
        self.downloads = downloads
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
        if flags & _WRITE_FLAGS:
            raise pyfuse3.FUSEError(errno.EROFS)
        node = await self.namespace.fresh_file(node)
        entry = self.entries[node.entry]
        path, downloaded = await self.downloads.cached_copy(
            entry, self.namespace.remotes[node.entry], node.blob, size=node.size,
            etag=node.etag, shown_path=self.namespace.path_of(node))
        fd = os.open(path, os.O_RDONLY)
        handle = next(self._handles)
        self._open_files[handle] = _OpenFile(fd, inode)
        # Pages the kernel kept from an earlier open are still right unless new bytes
        # were just downloaded.
        return pyfuse3.FileInfo(fh=handle, keep_cache=not downloaded)

    @_fuse_errors
    async def read(self, fh, off, size):
        return os.pread(self._open_files[fh].fd, size, off)

    async def release(self, fh):
        open_file = self._open_files.pop(fh, None)
        if open_file is not None:
            os.close(open_file.fd)

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

    # The write path is its own issue; until then every change is refused plainly.
    setattr = mknod = mkdir = unlink = rmdir = symlink = rename = link = write = create = \
        setxattr = removexattr = _read_only
