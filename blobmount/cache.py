"""Cache files: where a blob's local copy lives, and whether it can be used.

A copy lives at <entry cache>/blobs/<h[:2]>/<h>, h the SHA-256 of
account/container/blob: no blob name, however hostile, can place a file outside the
cache folder or clash with another. A copy is written under a temporary name, fsynced
and renamed, then recorded with the ETag of the bytes it holds; one whose file is
missing or has the wrong size is not used.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import stat
import uuid
from collections.abc import Collection, Iterable
from pathlib import Path

from .cachetables import CachedFile, CopyState
from .config import MountEntry
from .store import Store

BLOBS_FOLDER = "blobs"
#: What blobmount keeps in an entry's cache folder (transfers' staging, AzCopy's jobs).
ENTRY_ITEMS = (BLOBS_FOLDER, "staging", "azcopy")
#: What it keeps in the top cache folder: the store (and sqlite's files), the lock.
TOP_ITEMS = ("blobmount.sqlite", "blobmount.sqlite-wal", "blobmount.sqlite-shm",
             "blobmount.sqlite-journal", "lock")
#: Modes of everything the cache holds: only the user running blobmount may read it.
PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600
#: fallocate(2) modes: free a range of a file's disk blocks, its size unchanged.
_PUNCH_HOLE = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
_libc.syncfs.argtypes = [ctypes.c_int]


def block_key(path: str, start: int) -> str:
    """How a block of a partial copy is named among cache paths (eviction's, in-use
    sets): no path holds a NUL."""
    return f"{path}\0{start}"


def split_block_key(key: str) -> tuple[str, int] | None:
    """(path, start) of a block_key; None for a plain path."""
    path, nul, start = key.partition("\0")
    return (path, int(start)) if nul else None


def punch_hole(path: str | Path, start: int, size: int) -> None:
    """Free the disk space of bytes [start, start + size) of a file (they read as
    zeros after); a missing file has nothing to free."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        if _libc.fallocate(fd, _PUNCH_HOLE, start, size) != 0:
            code = ctypes.get_errno()
            raise OSError(code, f"fallocate: {os.strerror(code)}", str(path))
    finally:
        os.close(fd)


def make_private(folder: Path, ours: Collection[str]) -> int:
    """Make `folder` (and its parents, if missing) private to this user, with the items
    named in `ours` (blobmount's own, in it) and all they hold; how many modes had to be
    tightened (0: all were private already).

    The daemon's umask makes what it creates private; this is for what an earlier
    version, or another umask, left behind. Nothing else in the folder is touched, nor
    anything another user owns: a shared folder (sticky, as /tmp, or another user's)
    keeps its mode, and raises SharedFolder.
    """
    folder.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    info = folder.stat()
    tightened = 0
    if info.st_mode & stat.S_ISVTX or info.st_uid != os.geteuid():
        raise SharedFolder(f"{folder} is shared (mode {stat.S_IMODE(info.st_mode):04o},"
                           f" owner uid {info.st_uid})")
    tightened += _tighten(str(folder), PRIVATE_FOLDER)
    for name in ours:
        top = folder / name
        if top.is_dir() and not top.is_symlink():
            for root, _folders, files in os.walk(top):  # each folder is a root once
                tightened += _tighten(root, PRIVATE_FOLDER)
                tightened += sum(_tighten(os.path.join(root, f), PRIVATE_FILE) for f in files)
        else:
            tightened += _tighten(str(top), PRIVATE_FILE)
    return tightened


class SharedFolder(Exception):
    """A cache folder blobmount must not change the mode of."""


def _tighten(path: str, mode: int) -> int:
    """Take group and other bits off one file or folder of ours; 1 if it had any."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return 0
    if (stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid()
            or stat.S_IMODE(info.st_mode) & 0o077 == 0):
        return 0
    os.chmod(path, stat.S_IMODE(info.st_mode) & mode)
    return 1


def make_empty(path: Path) -> None:
    """An empty file at `path` (truncated if there), its folder made if missing: tried
    first without the folder, which is nearly always there already (an mkdir of one that
    exists costs as much as the create)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        os.close(os.open(path, flags, 0o600))
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.close(os.open(path, flags, 0o600))


def fsync_file(path: Path) -> None:
    """Flush a file's bytes to disk (blocking: call it from a worker thread)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_folder(path: Path) -> None:
    """Make the names in a folder durable (after a create or a rename in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_file_system(folder: Path) -> None:
    """Write every change of the file system holding `folder` to disk (syncfs(2);
    blocking: call it from a worker thread)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code), str(folder))
    finally:
        os.close(fd)


def fsync_copy(path: Path) -> None:
    """Make a copy and its name durable (blocking: call it from a worker thread)."""
    fsync_file(path)
    fsync_folder(path.parent)


@functools.lru_cache(maxsize=4096)
def _copy_path(cache_dir: Path, identity: str) -> Path:
    """Where the copy of a blob (`account/container/name`) goes: a file's is asked for
    several times an open (a digest and three joins, 10 us each time)."""
    digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()
    return cache_dir / BLOBS_FOLDER / digest[:2] / digest


class Cache:
    """The cached copies of every entry's blobs, recorded in the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def path_for(self, entry: MountEntry, blob: str) -> Path:
        return _copy_path(entry.cache_dir, f"{entry.account.account_name}/{entry.container}/{blob}")

    @staticmethod
    def make_folders(entries: Iterable[MountEntry]) -> None:
        """The 256 folders copies go in (by their digest's first byte), made at the
        start as squid's cache folders are: a download into a fresh cache would
        otherwise wait on the mkdir of its folder, 0.2 ms each here."""
        for blobs in {entry.cache_dir / BLOBS_FOLDER for entry in entries}:
            blobs.mkdir(parents=True, exist_ok=True)
            present = set(os.listdir(blobs))
            for byte in range(256):
                if f"{byte:02x}" not in present:
                    (blobs / f"{byte:02x}").mkdir(exist_ok=True)

    def usable(self, path: Path, etag: str | None) -> bool:
        """True when `path` holds the bytes of the blob version `etag`."""
        record = self.store.cached_file(str(path))
        if record is None:
            return False
        if record.state == CopyState.DIRTY and path.exists():
            # Written here and not uploaded yet: these bytes win over any download.
            return True
        if record.state == CopyState.PARTIAL:
            return False  # only some blocks: see blocks.py
        if etag is None or record.etag != etag:
            return False
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            size = None
        if size != record.size:
            # Deleted or changed by hand: forget it, the next open downloads again.
            self.store.drop_cached_file(str(path))
            return False
        self.store.touch_cached_file(str(path))
        return True

    @staticmethod
    def temp_path(path: Path) -> Path:
        """A fresh temporary name beside `path` (same folder, so rename is atomic); the
        folder is made if missing (a stat: an mkdir of one there costs more)."""
        if not os.path.isdir(path.parent):
            path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")

    @staticmethod
    def install(temp: Path, path: Path, durable: bool = True) -> int:
        """Rename a complete temporary file to `path`, both fsynced first if `durable`
        (else `record` it as not synced: copysync.py); its size.

        `durable` blocks (fsyncs): call it from a worker thread, then `record` from
        the trio thread.
        """
        if durable:
            fsync_file(temp)
        size = temp.stat().st_size
        os.replace(temp, path)
        if durable:
            fsync_folder(path.parent)
        return size

    @staticmethod
    def restore(path: Path, data: bytes) -> bool:
        """Make the copy at `path` hold `data`, its journal row's bytes (a crash may
        have lost or cut a copy that was never fsynced); True if it did not already.
        Not fsynced: the row keeps the bytes until a sync of the cache covers the copy
        or the upload is done (the copy is then recorded as unsynced)."""
        with contextlib.suppress(FileNotFoundError):
            if path.read_bytes() == data:
                return False
        temp = Cache.temp_path(path)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(temp, path)
        return True

    def forget(self, path: Path | str) -> None:
        """Drop the copy at `path`: its record and its file (already gone is fine).
        Open descriptors keep reading the unlinked bytes."""
        self.store.drop_cached_file(str(path))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

    def drop_blocks(self, path: str, blocks: Iterable[tuple[int, int]]) -> None:
        """Drop blocks (start, size) of a partial copy: their records, then their bytes.
        A file system that cannot free them (no hole punching) keeps them until the
        copy goes."""
        blocks = sorted(blocks)
        self.store.drop_cached_blocks(path, [start for start, _ in blocks])
        holes: list[list[int]] = []  # adjacent blocks: one hole
        for start, size in blocks:
            if holes and holes[-1][1] == start:
                holes[-1][1] = start + size
            else:
                holes.append([start, start + size])
        try:
            for start, end in holes:
                punch_hole(path, start, end - start)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS):
                raise

    def record(self, path: Path, *, blob: str, etag: str, size: int,
               state: CopyState = CopyState.CLEAN, synced: bool = True) -> None:
        self.store.put_cached_file(str(path), blob=blob, etag=etag, size=size, state=state,
                                   synced=synced)


def shown_state(record: CachedFile | None, *, journaled: bool, writing: bool = False,
                etag: str | None = None) -> str:
    """What `cache ls` and the `user.blobmount.cache_state` xattr show of a file's
    copy: `uncached` (none), `clean`, `partial` (some blocks of a large file), `stale`
    (of a version the container no longer holds, when `etag` names the one it holds),
    `dirty` (open for writing, or written and not journaled yet), `pending` (closed,
    waiting in the upload journal)."""
    if record is not None and record.state != CopyState.DIRTY:
        return "stale" if etag is not None and record.etag != etag else str(record.state)
    if journaled and not writing:
        return "pending"
    return "uncached" if record is None else "dirty"
