"""What the kernel sees of a node and of the file system (stat, statfs), and what a
setattr, create, mkdir or mknod keeps: the rules are posix.py's, the settings say
which apply. `fs.py` only decodes the kernel's requests and forwards them here.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Sequence

import pyfuse3

from .config import MountEntry
from .errors import IsADirectory, NotPermitted
from .eviction import cache_space
from .files import Files
from .listing import NAME_MAX
from .namespace import Namespace
from .posix import SPECIAL_TYPES, Caller, Kept, Permissions
from .store import ORPHANS, Node

#: st_blksize: the I/O size `cp` and friends use (one ranged GET is far larger)
IO_BLOCK = 128 * 1024
STATFS_BLOCK = 4096


@dataclasses.dataclass(frozen=True)
class Wanted:
    """What a setattr asks for (None: leave it)."""

    size: int | None = None
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    atime_ns: int | None = None
    mtime_ns: int | None = None

    def any(self) -> bool:
        return not (self.size is None and self.mode is None and self.uid is None
                    and self.gid is None and self.atime_ns is None and self.mtime_ns is None)


class Attributes:
    """A node's attributes as the kernel sees them, and the changes a caller asks for."""

    def __init__(self, namespace: Namespace, files: Files, entries: Sequence[MountEntry], *,
                 timeout: float, permissions: Permissions) -> None:
        self.namespace = namespace
        self.files = files
        self.entries = entries
        self.timeout = timeout
        self.permissions = permissions

    def of(self, node: Node) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = node.inode
        writable = node.entry_index is not None and not self.entries[node.entry_index].read_only
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
        attrs.st_blksize = IO_BLOCK
        attrs.st_blocks = (node.size + 511) // 512
        attrs.st_mtime_ns = node.mtime_ns
        attrs.st_atime_ns = node.mtime_ns if node.atime_ns is None else node.atime_ns
        attrs.st_ctime_ns = max(node.ctime_ns, node.mtime_ns)
        attrs.entry_timeout = self.timeout
        attrs.attr_timeout = self.timeout
        return attrs

    def missing(self) -> pyfuse3.EntryAttributes:
        """A negative entry: the kernel answers ENOENT for the name itself, as long
        as it would keep the name of a file that exists."""
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = 0
        attrs.entry_timeout = self.timeout
        return attrs

    def new(self, parent: Node, caller: Caller, mode: int, *, is_dir: bool) -> Kept:
        """The mode and owner a new file or folder in `parent` keeps (posix.py says which)."""
        shown = self.of(parent)
        return self.permissions.new(caller, mode, parent_mode=shown.st_mode,
                                    parent_gid=shown.st_gid, is_dir=is_dir)

    def special(self, parent: Node, caller: Caller, mode: int, rdev: int) -> Kept:
        """What a FIFO, socket or device node made by mknod keeps: its type always (the
        blob says what it is, even with fixed permissions), and a device's number."""
        kind = stat.S_IFMT(mode)
        if kind not in SPECIAL_TYPES:
            raise NotPermitted(f"mknod of type {kind:o}: blobs cannot hold it")
        kept = self.new(parent, caller, mode, is_dir=False)
        if kept.mode is None:  # permissions: fixed
            kept = dataclasses.replace(kept, mode=stat.S_IMODE(mode) & ~caller.umask)
        return dataclasses.replace(kept, special=kind, rdev=rdev)

    async def set(self, node: Node, caller: Caller, wanted: Wanted,
                  handle: int | None) -> Node:
        """A setattr: truncate, chmod, chown, utimens (kept as blob metadata); the node
        after. Refused on a read-only entry and, for a size, on a folder."""
        if wanted.any():
            self.namespace.writable_file(node)
        if wanted.size is not None:
            if node.is_dir:
                raise IsADirectory(node.name)
            # writable_file passed: it is under an entry
            await self.files.truncate(node.in_entry(), wanted.size, handle)
            node = self.namespace.node(node.inode)
        shown = self.of(node)
        changes = self.permissions.changes(
            caller, shown=(shown.st_mode, shown.st_uid, shown.st_gid), mode=wanted.mode,
            uid=wanted.uid, gid=wanted.gid)
        if wanted.atime_ns is not None:
            changes["atime_ns"] = wanted.atime_ns
        if wanted.mtime_ns is not None:
            changes["mtime_ns"] = wanted.mtime_ns
        if changes:  # asked for: writable_file passed, so it is under an entry
            await self.files.set_attributes(node.in_entry(), **changes)
        return self.namespace.node(node.inode)

    def statfs(self) -> pyfuse3.StatvfsData:
        """Size and use are the caches' (their limits when set): what df should warn
        about. Inodes are the local disk's: blobs have no limit of their own."""
        stats = pyfuse3.StatvfsData()
        total, free = cache_space(self.entries, self.namespace.store)
        stats.f_bsize = stats.f_frsize = STATFS_BLOCK
        stats.f_blocks = total // STATFS_BLOCK
        stats.f_bfree = stats.f_bavail = free // STATFS_BLOCK
        local = os.statvfs("/")
        stats.f_files, stats.f_ffree, stats.f_favail = local.f_files, local.f_ffree, local.f_favail
        stats.f_namemax = NAME_MAX
        return stats


def caller_of(ctx: pyfuse3.RequestContext) -> Caller:
    """Who makes a request: pyfuse3's RequestContext, in posix.py's terms."""
    return Caller(uid=ctx.uid, gid=ctx.gid, pid=ctx.pid, umask=ctx.umask)
