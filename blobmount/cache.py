"""Cache files: where a blob's local copy lives, and whether it can be used.

A copy lives at <entry cache>/blobs/<h[:2]>/<h>, h the SHA-256 of
account/container/blob: no blob name, however hostile, can place a file outside the
cache folder or clash with another. A copy is written under a temporary name, fsynced
and renamed, then recorded with the ETag of the bytes it holds; one whose file is
missing or has the wrong size is not used.
"""

from __future__ import annotations

import hashlib
import os
import stat
import uuid
from pathlib import Path

from .config import MountEntry
from .store import Store

BLOBS_FOLDER = "blobs"
#: Modes of everything the cache holds: only the user running blobmount may read it.
PRIVATE_FOLDER = 0o700
PRIVATE_FILE = 0o600


def make_private(folder: Path) -> int:
    """Make `folder` (and its parents, if missing) and leave it and all it holds
    private to this user; how many modes had to be tightened (0: it already was).

    The daemon's umask makes what it creates private; this is for what an earlier
    version, or another umask, left behind. A folder that was private already is not
    walked: nobody else could reach what is inside it.
    """
    folder.mkdir(mode=PRIVATE_FOLDER, parents=True, exist_ok=True)
    if stat.S_IMODE(folder.lstat().st_mode) & 0o077 == 0:
        return 0
    tightened = 0
    for root, _folders, files in os.walk(folder):  # each folder is a root once
        for name, mode in [(root, PRIVATE_FOLDER),
                           *((os.path.join(root, f), PRIVATE_FILE) for f in files)]:
            try:
                info = os.lstat(name)
                if stat.S_ISLNK(info.st_mode) or stat.S_IMODE(info.st_mode) & 0o077 == 0:
                    continue
                os.chmod(name, stat.S_IMODE(info.st_mode) & mode)
                tightened += 1
            except FileNotFoundError:
                continue
    return tightened


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


class Cache:
    """The cached copies of every entry's blobs, recorded in the store."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def path_for(self, entry: MountEntry, blob: str) -> Path:
        identity = f"{entry.account.account_name}/{entry.container}/{blob}"
        digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).hexdigest()
        return entry.cache_dir / BLOBS_FOLDER / digest[:2] / digest

    def usable(self, path: Path, etag: str | None) -> bool:
        """True when `path` holds the bytes of the blob version `etag`."""
        record = self.store.cached_file(str(path))
        if record is None:
            return False
        if record.state == "dirty" and path.exists():
            # Written here and not uploaded yet: these bytes win over any download.
            return True
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
        """A fresh temporary name beside `path` (same folder, so rename is atomic)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")

    @staticmethod
    def install(temp: Path, path: Path) -> int:
        """Make a complete temporary file durable and rename it to `path`, durably; its
        size.

        Blocks (fsyncs): call it from a worker thread, then `record` from the trio
        thread.
        """
        fsync_file(temp)
        size = temp.stat().st_size
        os.replace(temp, path)
        fsync_folder(path.parent)
        return size

    def record(self, path: Path, *, blob: str, etag: str, size: int,
               state: str = "clean") -> None:
        self.store.put_cached_file(str(path), blob=blob, etag=etag, size=size, state=state)
