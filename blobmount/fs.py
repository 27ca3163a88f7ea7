"""The FUSE handlers: each decodes the kernel's request and forwards it to the core (a
file's life to `Files`, the tree to the namespace, attributes to `Attributes`, xattrs to
`Xattrs`), and answers every failure with its type's errno (errors.ERRNO)."""

from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar, cast

import pyfuse3

from .attrs import Attributes, Wanted, caller_of
from .config import MountEntry
from .errors import (
    ANSWERS,
    BlobmountError,
    InvalidArgument,
    InvalidName,
    NotFound,
    NotPermitted,
    Unimplemented,
    errno_of,
)
from .files import Files
from .metrics import Metrics
from .namespace import Namespace
from .posix import KEPT, Permissions
from .store import Node
from .xattrs import Xattrs

log = logging.getLogger(__name__)

READDIR_CHUNK = 256
RENAME_EXCHANGE = 2  # linux/fs.h
RENAME_NOREPLACE = 1

# pyfuse3 ships no types: these name what its handlers take and give.
Context = pyfuse3.RequestContext
Entry = pyfuse3.EntryAttributes
Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])


def _fuse_errors(handler: Handler) -> Handler:
    """Answer the kernel with an errno (errors.ERRNO's), never a traceback; count the
    request, its time and its errno (the one place every handler passes through)."""
    op = handler.__name__
    negative = op == "lookup"  # the one handler that may answer a negative entry

    @functools.wraps(handler)
    async def wrapper(self: BlobFS, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        failed = None
        try:
            answer = await handler(self, *args, **kwargs)
            if negative and answer.st_ino == 0:
                failed = errno.ENOENT  # a negative entry answers ENOENT
            return answer
        except Exception as exc:
            failed = errno_of(exc)
            if isinstance(exc, ANSWERS):
                log.debug("%s: %s", op, exc)
            elif isinstance(exc, (BlobmountError, OSError)):
                log.warning("%s: %s", op, exc)
            else:
                log.exception("%s failed", op)
            raise pyfuse3.FUSEError(failed) from None
        finally:
            if self.metrics is not None:
                self.metrics.fuse_request(op, time.perf_counter() - started, failed)

    return cast(Handler, wrapper)


def _name(name: bytes) -> str:
    try:
        return name.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidName(f"{name!r} is not UTF-8") from None


def _xattr_name(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")


class BlobFS(pyfuse3.Operations):
    """Decodes the kernel's requests and forwards them to the core."""

    enable_writeback_cache = False
    #: where requests are counted (the daemon sets it)
    metrics: Metrics | None = None

    def __init__(self, namespace: Namespace, files: Files, entries: Sequence[MountEntry], *,
                 attr_timeout: float, xattrs: Xattrs | None = None, uid: int | None = None,
                 gid: int | None = None, umask: int = 0o022, permissions: str = KEPT) -> None:
        super().__init__()
        self.namespace = namespace
        self.files = files
        self.xattrs = xattrs
        self.attrs = Attributes(namespace, files, entries, timeout=attr_timeout,
                                permissions=Permissions(
                                    mode=permissions, uid=os.getuid() if uid is None else uid,
                                    gid=os.getgid() if gid is None else gid, umask=umask))
        self._dir_handles = itertools.count(1)
        self._open_dirs: dict[int, list[int]] = {}

    def _handed(self, node: Node) -> pyfuse3.EntryAttributes:
        """A node's attributes in an entry the kernel keeps: one more reference to it."""
        self.files.looked_up(node.inode)
        return self.attrs.of(node)

    # -- the tree ---------------------------------------------------------------------

    @_fuse_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: Context | None = None) -> Entry:
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
        try:
            return self._handed(await self.namespace.lookup(parent, text))
        except NotFound:
            # The kernel keeps the answer as long as it keeps names: git and tar ask
            # again and again for the same missing names (9 in 10 of a clone's lookups).
            return self.attrs.missing()

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        # The kernel takes no answer: nothing may be raised.
        for inode, count in inode_list:
            try:
                self.files.forget(inode, count)
            except Exception:
                log.exception("forget of inode %d failed", inode)

    @_fuse_errors
    async def getattr(self, inode: int, ctx: Context | None = None) -> Entry:
        return self.attrs.of(self.namespace.node(inode))

    @_fuse_errors
    async def setattr(self, inode: int, attr: Entry, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: Context) -> Entry:
        wanted = Wanted(size=attr.st_size if fields.update_size else None,
                        mode=attr.st_mode if fields.update_mode else None,
                        uid=attr.st_uid if fields.update_uid else None,
                        gid=attr.st_gid if fields.update_gid else None,
                        atime_ns=attr.st_atime_ns if fields.update_atime else None,
                        mtime_ns=attr.st_mtime_ns if fields.update_mtime else None)
        node = await self.attrs.set(self.namespace.node(inode), caller_of(ctx), wanted, fh)
        return self.attrs.of(node)

    @_fuse_errors
    async def opendir(self, inode: int, ctx: Context) -> int:
        folder = await self.namespace.listed(self.namespace.node(inode))
        handle = next(self._dir_handles)
        # A snapshot, so offsets stay right while the kernel reads in chunks even if
        # a listing refresh adds or drops children in between.
        self._open_dirs[handle] = self.namespace.store.child_inodes(folder.inode)
        return handle

    @_fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        inodes = self._open_dirs[fh]
        offset = start_id
        while offset < len(inodes):
            chunk = inodes[offset:offset + READDIR_CHUNK]
            # The id after each name is where the next readdir call starts.
            next_ids = {inode: offset + i + 1 for i, inode in enumerate(chunk)}
            for node in self.namespace.store.nodes(chunk):
                if not pyfuse3.readdir_reply(token, node.name.encode("utf-8"),
                                             self.attrs.of(node), next_ids[node.inode]):
                    return
                self.files.looked_up(node.inode)  # the kernel keeps what it took
            offset += len(chunk)

    @_fuse_errors
    async def releasedir(self, fh: int) -> None:
        self._open_dirs.pop(fh, None)

    @_fuse_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Context) -> Entry:
        parent = self.namespace.node(parent_inode)
        kept = self.attrs.new(parent, caller_of(ctx), mode, is_dir=True)
        return self._handed(await self.files.make_folder(parent, _name(name), kept))

    @_fuse_errors
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Context) -> Entry:
        parent = self.namespace.node(parent_inode)
        if stat.S_IFMT(mode) != stat.S_IFREG:
            kept = self.attrs.special(parent, caller_of(ctx), mode, rdev)
            return self._handed(await self.namespace.make_special(parent, _name(name), kept))
        kept = self.attrs.new(parent, caller_of(ctx), mode, is_dir=False)
        handle, node = await self.files.create(parent_inode, _name(name), kept)
        await self.files.flush(handle)  # as a close would: up now in sync mode
        await self.files.release(handle)
        return self._handed(self.namespace.node(node.inode))

    @_fuse_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: Context) -> Entry:
        parent = self.namespace.node(parent_inode)
        kept = self.attrs.new(parent, caller_of(ctx), 0o777, is_dir=False)
        return self._handed(await self.namespace.make_link(
            parent, _name(name), target.decode("utf-8", "surrogateescape"), kept))

    @_fuse_errors
    async def readlink(self, inode: int, ctx: Context) -> bytes:
        node = self.namespace.node(inode)
        if not node.is_link:
            raise InvalidArgument(f"{node.name} is not a symlink")
        return (await self.namespace.link_target(node)).encode("utf-8", "surrogateescape")

    @_fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Context) -> None:
        await self.files.remove_folder(self.namespace.node(parent_inode), _name(name))

    @_fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: Context) -> None:
        await self.files.unlink(self.namespace.node(parent_inode), _name(name))

    @_fuse_errors
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Context) -> None:
        if flags & RENAME_EXCHANGE:
            raise InvalidArgument("rename: an exchange of two names is not supported")
        await self.files.rename(self.namespace.node(parent_inode_old), _name(name_old),
                                self.namespace.node(parent_inode_new), _name(name_new),
                                replace=not flags & RENAME_NOREPLACE)

    @_fuse_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: Context) -> Entry:
        # EPERM: git, for one, then renames instead of linking.
        raise NotPermitted("blobs hold no hard links")

    @_fuse_errors
    async def statfs(self, ctx: Context) -> pyfuse3.StatvfsData:
        return self.attrs.statfs()

    # -- a file's life ----------------------------------------------------------------

    @_fuse_errors
    async def open(self, inode: int, flags: int, ctx: Context) -> pyfuse3.FileInfo:
        handle, keep_cache = await self.files.open(inode, flags)
        return pyfuse3.FileInfo(fh=handle, keep_cache=keep_cache)

    @_fuse_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Context) -> tuple[pyfuse3.FileInfo, Entry]:
        kept = self.attrs.new(self.namespace.node(parent_inode), caller_of(ctx), mode,
                              is_dir=False)
        handle, node = await self.files.create(parent_inode, _name(name), kept)
        return pyfuse3.FileInfo(fh=handle, keep_cache=False), self._handed(node)

    @_fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes:
        return await self.files.read(fh, off, size)

    @_fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.files.write(fh, off, buf)

    @_fuse_errors
    async def flush(self, fh: int) -> None:
        await self.files.flush(fh)

    @_fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.files.fsync(fh)

    @_fuse_errors
    async def release(self, fh: int) -> None:
        await self.files.release(fh)

    # -- extended attributes (see xattrs.py) ------------------------------------------

    def _xattrs(self) -> Xattrs:
        if self.xattrs is None:
            raise Unimplemented("extended attributes are off")  # the kernel stops asking
        return self.xattrs

    @_fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: Context) -> bytes:
        return await self._xattrs().get(self.namespace.node(inode), _xattr_name(name))

    @_fuse_errors
    async def listxattr(self, inode: int, ctx: Context) -> list[bytes]:
        names = await self._xattrs().names(self.namespace.node(inode))
        return [name.encode("utf-8", "surrogateescape") for name in names]

    @_fuse_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes, ctx: Context) -> None:
        await self._xattrs().set(self.namespace.node(inode), _xattr_name(name), value)

    @_fuse_errors
    async def removexattr(self, inode: int, name: bytes, ctx: Context) -> None:
        await self._xattrs().remove(self.namespace.node(inode), _xattr_name(name))
