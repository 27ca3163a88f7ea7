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
import uuid
from pathlib import Path

from .config import MountEntry
from .store import Store

BLOBS_FOLDER = "blobs"


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
