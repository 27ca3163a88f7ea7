"""The FUSE handlers: thin, and every failure a `FUSEError` with its type's errno."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import os
import stat
import time
from collections.abc import Sequence

import pyfuse3

from .config import MountEntry
from .errors import (
    ANSWERS,
    BlobmountError,
    InvalidArgument,
    InvalidName,
    IsADirectory,
    NoSuchAttribute,
    NotFound,
    NotPermitted,
    Unimplemented,
    errno_of,
)
from .eviction import cache_space
from .files import Files
from .metrics import Metrics
from .namespace import Namespace
from .posix import KEPT, SPECIAL_TYPES, Caller, Kept, Permissions
from .store import ORPHANS, Node
from .xattrs import Xattrs

log = logging.getLogger(__name__)

READDIR_CHUNK = 256
RENAME_EXCHANGE = 2  # linux/fs.h
RENAME_NOREPLACE = 1
STATFS_BLOCK = 4096


def _fuse_errors(handler):
    """Answer the kernel with an errno (errors.ERRNO's), never a traceback; count the
    request, its time and its errno (the one place every handler passes through)."""
    op = handler.__name__

    @functools.wraps(handler)
    async def wrapper(self, *args, **kwargs):
        started = time.perf_counter()
        failed = None
        try:
            return await handler(self, *args, **kwargs)
        except Exception as exc:
            failed = errno_of(exc)
            if isinstance(exc, BlobmountError):
                log.log(logging.DEBUG if failed in ANSWERS else logging.WARNING,
                        "%s: %s", op, exc)
            elif isinstance(exc, OSError):
                log.warning("%s: %s", op, exc)
            else:
                log.exception("%s failed", op)
            raise pyfuse3.FUSEError(failed) from None
        finally:
            if self.metrics is not None:
                self.metrics.fuse_request(op, time.perf_counter() - started, failed)

    return wrapper


class BlobFS(pyfuse3.Operations):
    """Decodes the kernel's requests and forwards them: a file's life to `Files`, the
    tree to the namespace."""

    enable_writeback_cache = False
    #: where requests are counted (the daemon sets it)
    metrics: Metrics | None = None

    def __init__(self, namespace: Namespace, files: Files, entries: Sequence[MountEntry], *,
                 attr_timeout: float, xattrs: Xattrs | None = None, uid: int | None = None,
                 gid: int | None = None, umask: int = 0o022, permissions: str = KEPT) -> None:
        super().__init__()
        self.namespace = namespace
        self.files = files
        self.entries = entries
        self.attr_timeout = attr_timeout
        self.xattrs = xattrs
        self.permissions = Permissions(mode=permissions,
                                       uid=os.getuid() if uid is None else uid,
                                       gid=os.getgid() if gid is None else gid, umask=umask)
        self._dir_handles = itertools.count(1)
        self._open_dirs: dict[int, list[int]] = {}

    def _attributes(self, node: Node) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = node.inode
        writable = node.entry is not None and not self.entries[node.entry].read_only
        attrs.st_mode, attrs.st_uid, attrs.st_gid = self.permissions.shown(
            is_dir=node.is_dir, is_link=node.is_link, mode=node.mode, uid=node.uid,
            gid=node.gid, writable=writable, special=node.special)
        attrs.st_rdev = node.rdev
        # A folder's ".." in each subfolder is a link to it, as on local filesystems.
        if node.is_dir:
            attrs.st_nlink = 2 + node.subfolders
        else:
            attrs.st_nlink = 0 if node.parent == ORPHANS else 1  # unlinked while open
        attrs.st_size = node.size
        attrs.st_blksize = 128 * 1024
        attrs.st_blocks = (node.size + 511) // 512
        attrs.st_mtime_ns = node.mtime_ns
        attrs.st_atime_ns = node.mtime_ns if node.atime_ns is None else node.atime_ns
        attrs.st_ctime_ns = max(node.ctime_ns, node.mtime_ns)
        attrs.entry_timeout = self.attr_timeout
        attrs.attr_timeout = self.attr_timeout
        return attrs

    @_fuse_errors
    async def lookup(self, parent_inode, name, ctx=None):
        try:
            text = name.decode("utf-8")
        except UnicodeDecodeError:
            raise NotFound("a name that is not UTF-8") from None
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
        kept = self._new(parent_inode, mode, ctx, is_dir=False)
        handle, node = await self.files.create(parent_inode, self._name(name), kept)
        return pyfuse3.FileInfo(fh=handle, keep_cache=False), self._handed(node)

    def _new(self, parent_inode: int, mode: int, ctx, *, is_dir: bool) -> Kept:
        """The mode and owner a new file or folder keeps (posix.py says which)."""
        parent = self._attributes(self.namespace.node(parent_inode))
        return self.permissions.new(_caller(ctx), mode, parent_mode=parent.st_mode,
                                    parent_gid=parent.st_gid, is_dir=is_dir)

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
                raise IsADirectory(node.name)
            await self.files.truncate(node, attr.st_size, fh)
        shown = self._attributes(node)
        changes = self.permissions.changes(
            _caller(ctx), shown=(shown.st_mode, shown.st_uid, shown.st_gid),
            mode=attr.st_mode if fields.update_mode else None,
            uid=attr.st_uid if fields.update_uid else None,
            gid=attr.st_gid if fields.update_gid else None)
        if fields.update_atime:
            changes["atime_ns"] = attr.st_atime_ns
        if fields.update_mtime:
            changes["mtime_ns"] = attr.st_mtime_ns
        if changes:
            await self.files.set_attributes(self.namespace.node(inode), **changes)
        return self._attributes(self.namespace.node(inode))

    @_fuse_errors
    async def mkdir(self, parent_inode, name, mode, ctx):
        kept = self._new(parent_inode, mode, ctx, is_dir=True)
        folder = await self.namespace.make_folder(self.namespace.node(parent_inode),
                                                  self._name(name), kept)
        return self._handed(folder)

    @_fuse_errors
    async def mknod(self, parent_inode, name, mode, rdev, ctx):
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFREG:
            handle, node = await self.files.create(parent_inode, self._name(name),
                                                   self._new(parent_inode, mode, ctx,
                                                             is_dir=False))
            await self.files.flush(handle)  # as a close would: up now in sync mode
            await self.files.release(handle)
            return self._handed(self.namespace.node(node.inode))
        if kind not in SPECIAL_TYPES:
            raise NotPermitted(f"mknod of type {kind:o}: blobs cannot hold it")
        kept = self._new(parent_inode, mode, ctx, is_dir=False)
        if kept.mode is None:  # permissions: fixed; the blob still says what it is
            kept = dataclasses.replace(kept, mode=stat.S_IMODE(mode) & ~ctx.umask)
        kept = dataclasses.replace(kept, special=kind, rdev=rdev)
        node = await self.namespace.make_special(self.namespace.node(parent_inode),
                                                 self._name(name), kept)
        return self._handed(node)

    @_fuse_errors
    async def symlink(self, parent_inode, name, target, ctx):
        kept = self._new(parent_inode, 0o777, ctx, is_dir=False)
        link = await self.namespace.make_link(self.namespace.node(parent_inode),
                                              self._name(name),
                                              target.decode("utf-8", "surrogateescape"), kept)
        return self._handed(link)

    @_fuse_errors
    async def readlink(self, inode, ctx):
        node = self.namespace.node(inode)
        if not node.is_link:
            raise InvalidArgument(f"{node.name} is not a symlink")
        return (await self.namespace.link_target(node)).encode("utf-8", "surrogateescape")

    @_fuse_errors
    async def rmdir(self, parent_inode, name, ctx):
        await self.namespace.remove_folder(self.namespace.node(parent_inode), self._name(name))

    @_fuse_errors
    async def unlink(self, parent_inode, name, ctx):
        await self.files.unlink(self.namespace.node(parent_inode), self._name(name))

    @_fuse_errors
    async def rename(self, parent_inode_old, name_old, parent_inode_new, name_new, flags, ctx):
        if flags & RENAME_EXCHANGE:
            raise InvalidArgument("rename: an exchange of two names is not supported")
        await self.files.rename(self.namespace.node(parent_inode_old), self._name(name_old),
                                self.namespace.node(parent_inode_new), self._name(name_new),
                                replace=not flags & RENAME_NOREPLACE)

    @staticmethod
    def _name(name: bytes) -> str:
        try:
            return name.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidName(f"{name!r} is not UTF-8") from None

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
            raise Unimplemented("extended attributes are off")  # the kernel stops asking
        text = name.decode("utf-8", "surrogateescape")
        if not text.startswith("user."):
            # security.*, system.*: `ls -l` asks for them on every file; no network.
            raise NoSuchAttribute(f"no attribute {text}")
        return await self._xattr(self.xattrs.get, inode, text)

    @_fuse_errors
    async def listxattr(self, inode, ctx):
        if self.xattrs is None:
            raise Unimplemented("extended attributes are off")
        names = await self._xattr(self.xattrs.names, inode)
        return [name.encode("utf-8", "surrogateescape") for name in names]

    @_fuse_errors
    async def setxattr(self, inode, name, value, ctx):
        if self.xattrs is None:
            raise Unimplemented("extended attributes are off")
        await self._xattr(self.xattrs.set, inode, name.decode("utf-8", "surrogateescape"),
                          value)

    @_fuse_errors
    async def removexattr(self, inode, name, ctx):
        if self.xattrs is None:
            raise Unimplemented("extended attributes are off")
        await self._xattr(self.xattrs.remove, inode, name.decode("utf-8", "surrogateescape"))

    async def _xattr(self, call, inode, *args):
        return await call(self.namespace.node(inode), *args)

    @_fuse_errors
    async def link(self, inode, new_parent_inode, new_name, ctx):
        # EPERM: git, for one, then renames instead of linking.
        raise NotPermitted("blobs hold no hard links")


def _caller(ctx) -> Caller:
    return Caller(uid=ctx.uid, gid=ctx.gid, pid=ctx.pid, umask=ctx.umask)
