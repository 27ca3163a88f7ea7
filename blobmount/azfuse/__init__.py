"""azfuse's `File` API, served by a blobmount mount: switch with one import.

    from blobmount.azfuse import File        # was: from azfuse import File

    with File.open("data/abc.txt", "w") as fp:
        fp.write("abc")
    File.prepare([f"data/{i}.txt" for i in range(1000)])   # one prefetch
    with File.async_upload(enabled=True):
        ...                                                # closes do not wait

It reads azfuse's environment: $AZFUSE_USE_FUSE (unset or 0: plain local files),
$AZFUSE_CLOUD_FUSE_CONFIG_FILE, $AZFUSE_STORAGE_ACCOUNT_CONFIG_FOLDER; which mount
serves the paths is `serving`'s business. Logical paths outside every entry of the
config are plain local files, as in azfuse.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as dt
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from ..errors import BlobmountError
from .serving import Served, serve, use_fuse

__all__ = ["File"]

log = logging.getLogger("blobmount.azfuse")

#: Where a file opened for writing is staged with shm_as_tmp (as azfuse puts it).
SHM = "/dev/shm"


@dataclass
class _Batch:
    """One `async_upload` block: what to drop from the cache once it is uploaded."""

    shm_as_tmp: bool
    drop: list[str] = field(default_factory=list)


def _flat(file_or_fnames: str | os.PathLike | Iterable[Any]) -> list[str]:
    """A name, or names: a list, any iterable, and lists inside it (azfuse's README
    passes a generator of one-name lists)."""
    if isinstance(file_or_fnames, str | os.PathLike):
        return [os.fspath(file_or_fnames)]
    names: list[str] = []
    for item in file_or_fnames:
        names.extend(_flat(item))
    return names


def _info(name: str, path: str) -> dict[str, Any]:
    """azfuse's listing row: `name`, and for a file `size_in_bytes` and `last_modified`."""
    stat = os.stat(path)
    row: dict[str, Any] = {"name": name}
    if not os.path.isdir(path):
        row["size_in_bytes"] = stat.st_size
        row["last_modified"] = dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC)
    return row


def _listing(path: str, shown: str, recursive: bool, return_info: bool) -> list[Any]:
    """The children of `path` (recursive: every file under it), named under `shown`."""
    if os.path.isfile(path):
        return [_info(shown, path)] if return_info else []
    found: list[tuple[str, str]] = []
    if recursive:
        for folder, _dirs, files in os.walk(path):
            below = os.path.relpath(folder, path)
            for name in files:
                relative = name if below == "." else os.path.join(below, name)
                found.append((os.path.join(shown, relative), os.path.join(folder, name)))
    elif os.path.isdir(path):
        found = [(os.path.join(shown, e.name), e.path) for e in os.scandir(path)]
    found.sort()
    if not return_info:
        return [name for name, _ in found]
    return [_info(name, real) for name, real in found]


@contextlib.contextmanager
def _staged_write(target: str, mode: str, staging: str | None) -> Iterator[IO[Any]]:
    """Write to a local file, and copy it to `target` only if the block ends well: as
    in azfuse, a block that raises leaves the old file (and blob) as it was."""
    handle, staged = tempfile.mkstemp(prefix=".blobmount-azfuse-", dir=staging)
    try:
        with open(handle, mode) as fp:
            yield fp
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        # Closing the copy uploads it (sync) or journals it (async, or async_upload).
        shutil.copyfile(staged, target)
    finally:
        os.unlink(staged)


class File:
    """azfuse's class methods. Paths are azfuse's logical paths (`data/abc.txt`)."""

    initialized = False
    use_fuser = False
    _served: Served | None = None
    _batches: list[_Batch] = []

    # -- set-up ---------------------------------------------------------------------

    @classmethod
    def ensure_initialized(cls) -> None:
        """Read $AZFUSE_USE_FUSE once; the mount is found (or made) when first needed."""
        if not cls.initialized:
            cls.use_fuser = use_fuse()
            cls.initialized = True

    @classmethod
    def _where(cls, fname: str | os.PathLike) -> tuple[Served, str] | None:
        """(the mount, the path relative to it) of a logical path; None for a plain
        local file (no fuse, or outside every entry)."""
        cls.ensure_initialized()
        if not cls.use_fuser:
            return None
        if cls._served is None:
            cls._served = serve()
        relative = cls._served.locate(fname)
        return None if relative is None else (cls._served, relative)

    @classmethod
    def _real(cls, fname: str | os.PathLike) -> str:
        """Where a logical path is on this machine: under the mount, or itself."""
        where = cls._where(fname)
        return os.fspath(fname) if where is None else where[0].path(where[1])

    @classmethod
    def _by_mount(cls, names: Iterable[str]) -> tuple[Served | None, list[str]]:
        """The mount and the paths relative to it, of the names that are in an entry."""
        found = [where for where in map(cls._where, names) if where is not None]
        return (found[0][0] if found else None), [relative for _, relative in found]

    # -- files ------------------------------------------------------------------------

    @classmethod
    def open(cls, fname: str | os.PathLike, mode: str = "r") -> Any:
        """`r`/`rb`: the file, downloaded on open unless cached. `w`/`wb`: a context
        manager whose file is uploaded when the block ends (not if it raises)."""
        if mode in ("r", "rb"):
            return open(cls._real(fname), mode)
        if mode not in ("w", "wb"):
            raise ValueError(f"File.open: mode {mode!r} is not supported (r, rb, w, wb)")
        where = cls._where(fname)
        if where is None:
            return cls._write_local(os.fspath(fname), mode)
        return cls._write_through(where[0], where[1], mode)

    @staticmethod
    @contextlib.contextmanager
    def _write_local(fname: str, mode: str) -> Iterator[IO[Any]]:
        """azfuse's local write: a `.tmp` beside the file, renamed over it at the end."""
        folder = os.path.dirname(fname)
        if folder:
            os.makedirs(folder, exist_ok=True)
        temporary = fname + ".tmp"
        try:
            with open(temporary, mode) as fp:
                yield fp
            os.replace(temporary, fname)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)

    @classmethod
    @contextlib.contextmanager
    def _write_through(cls, served: Served, relative: str, mode: str) -> Iterator[IO[Any]]:
        shm = any(batch.shm_as_tmp for batch in cls._batches) and os.path.isdir(SHM)
        with _staged_write(served.path(relative), mode, SHM if shm else None) as fp:
            yield fp
        for batch in cls._batches:
            if batch.shm_as_tmp:
                batch.drop.append(relative)

    @classmethod
    def isfile(cls, path: str | os.PathLike) -> bool:
        return os.path.isfile(cls._real(path))

    @classmethod
    def get_file_size(cls, fname: str | os.PathLike) -> int:
        return os.stat(cls._real(fname)).st_size

    @classmethod
    def rm(cls, fname: str | os.PathLike) -> None:
        """Delete the file (the blob, and its cached copy)."""
        os.remove(cls._real(fname))

    @classmethod
    def get_cache_file(cls, file_name: str | os.PathLike) -> str:
        """The path a program can open: under the mount point (blobmount serves its
        cached copy there), or the name itself for a plain local file."""
        return cls._real(file_name)

    @classmethod
    def upload(cls, cache: str | os.PathLike, remote: str | os.PathLike) -> None:
        """Copy the local file `cache` to the logical path `remote` (uploaded on close)."""
        cls.ensure_initialized()
        if not cls.use_fuser:
            return
        target = cls._real(remote)
        os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
        shutil.copyfile(cache, target)

    @classmethod
    def read_byte_range(cls, fname: str | os.PathLike, offset: int, length: int) -> bytes:
        """`length` bytes from `offset`: from the cached copy if there is one, else by
        one ranged GET, which caches nothing (as azfuse reads from the cloud)."""
        where = cls._where(fname)
        if where is None or cls.is_cached(fname):
            with open(cls._real(fname), "rb") as data:
                data.seek(offset)
                return data.read(length)
        remote, blob = where[0].blob(where[1])
        return remote.read_range(blob, offset, length)

    @classmethod
    def set_access_tier(cls, fname: str | os.PathLike, tier: str) -> None:
        """The blob's access tier (`hot`, `cool`, `cold`, `archive`)."""
        where = cls._where(fname)
        if where is not None:
            remote, blob = where[0].blob(where[1])
            remote.set_tier(blob, tier.capitalize())

    # -- the cache ----------------------------------------------------------------------

    @classmethod
    def prepare(cls, file_or_fnames: str | os.PathLike | Iterable[Any]) -> None:
        """Download every file named that is not cached, in one prefetch: one AzCopy
        job per entry (a handful of small files: SDK GETs side by side). A file that
        cannot be fetched is named in the log; opening it then fails."""
        for failed in cls._prepare(file_or_fnames):
            log.warning("prepare: %s: %s", failed["path"], failed["error"])

    @classmethod
    def _prepare(cls, file_or_fnames: str | os.PathLike | Iterable[Any],
                 ) -> list[dict[str, str]]:
        """`prepare`, returning the paths that failed and why."""
        served, relative = cls._by_mount(_flat(file_or_fnames))
        if served is None:
            return []
        return served.client.prefetch(relative, check=False)["failed"]

    @classmethod
    def clear_cache(cls, folder: str | os.PathLike | Iterable[Any]) -> None:
        """Drop the cached copies at or under each path; a copy not uploaded yet is
        uploaded first, one open for writing stays."""
        served, relative = cls._by_mount(_flat(folder))
        if served is None:
            return
        result = served.client.evict(relative, force=True)
        for refused in result["refused"]:
            log.warning("clear_cache: %s stays: %s", refused["path"], refused["reason"])

    @classmethod
    def is_cached(cls, fname: str | os.PathLike) -> bool:
        where = cls._where(fname)
        if where is None:
            return os.path.exists(fname)
        served, relative = where
        return any(row["path"] == relative for row in served.client.cache_ls(relative))

    # -- listing --------------------------------------------------------------------------

    @classmethod
    def list(cls, folder: str | os.PathLike, recursive: bool = False,
             return_info: bool = False) -> list[Any]:
        """The folder's children (recursive: every file under it), sorted, named as
        `folder/...`; with `return_info`, dicts with `name`, and for files
        `size_in_bytes` and `last_modified`. Listed through the mount."""
        return _listing(cls._real(folder), os.fspath(folder), recursive, return_info)

    # builtins.list: inside the class, `list` is the method above.
    @classmethod
    def walk(cls, folder: str | os.PathLike, return_info: bool = False) -> builtins.list[Any]:
        """Every file under the folder: `list(folder, recursive=True)`."""
        return cls.list(folder, recursive=True, return_info=return_info)

    # -- uploads --------------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def async_upload(cls, enabled: bool = False, shm_as_tmp: bool = False) -> Iterator[None]:
        """With `enabled`: inside, closes return without waiting for the upload; at the
        end, wait until everything is in the container (SyncFailed if an upload
        failed). `shm_as_tmp`: files are staged in /dev/shm and their cached copies
        dropped once uploaded."""
        cls.ensure_initialized()
        if not (enabled and cls.use_fuser):
            yield
            return
        if cls._served is None:
            cls._served = serve()
        batch = _Batch(shm_as_tmp)
        cls._batches.append(batch)
        try:
            with cls._served.client.async_uploads(wait=True):
                yield
        finally:
            cls._batches.remove(batch)
        if batch.drop:
            cls._served.client.evict(batch.drop)

    @classmethod
    def send_to_async_upload(cls, fname_or_fnames: str | os.PathLike | Iterable[Any],
                             clear_cache_after_upload: bool = False) -> None:
        """Files written through the mount are already on their way up; this only asks
        for their cached copies to go once the current async_upload block has them
        in the container."""
        cls.ensure_initialized()
        if not cls.use_fuser:
            return
        if not cls._batches:
            raise BlobmountError("send_to_async_upload: only inside"
                                 " File.async_upload(enabled=True)")
        if clear_cache_after_upload:
            _served, relative = cls._by_mount(_flat(fname_or_fnames))
            cls._batches[-1].drop.extend(relative)
