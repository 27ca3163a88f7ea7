"""An in-memory stand-in for `blobmount.azure.Remote`: one container, no network.

Blobs are name -> `Blob` (bytes, ETag, metadata, Content-MD5), index tags beside them.
The methods the core calls answer with the same types (BlobItem, BlobProperties) and
raise the same errors (RemoteNotFound, RemoteConflict, RemoteUnsupported) as the real
one. The test's own side: `put_elsewhere` and `delete_elsewhere` change the container
behind the mount's back, and `hold` keeps the next download of a blob in flight until
the test lets it go.

Its methods are called from trio's worker threads, so one lock guards the blobs.
The core calls it through `AsyncContainer`, as it calls a Remote: `face` wraps it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import os
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from blobmount import posix
from blobmount.access import AZCOPY_SAS_LIFETIME
from blobmount.azure import (
    FOLDER_MARKER_KEY,
    AsyncContainer,
    BlobItem,
    BlobProperties,
    RemoteContainer,
    parse_mtime,
)
from blobmount.errors import RemoteConflict, RemoteNotFound, RemoteUnsupported
from blobmount.threads import Threads

#: Seconds a held download waits for its release: only a test that hangs reaches it.
HOLD_TIMEOUT = 60.0


def face(remote: RemoteContainer, threads: Threads | None = None) -> AsyncContainer:
    """`remote` behind the async face the core calls, as the daemon wraps a Remote
    (`threads`: shared with other parts of the test, else eight of its own)."""
    return AsyncContainer(remote, threads if threads is not None else Threads(8))


@dataclass(frozen=True)
class Blob:
    data: bytes
    etag: str
    metadata: Mapping[str, str]
    content_md5: str
    modified_ns: int
    origin: str  # "mount" (put through the mount, or copied from such) or "elsewhere"

    @property
    def is_folder_marker(self) -> bool:
        return self.metadata.get(FOLDER_MARKER_KEY, "").lower() == "true"

    @property
    def mtime_ns(self) -> int:
        return parse_mtime(self.metadata.get("mtime")) or self.modified_ns


@dataclass
class Hold:
    """A download kept in flight: `entered` is called (in the download's thread) once
    it has read the blob's bytes, which it writes only after `release`."""

    entered: Callable[[], None]
    released: threading.Event = field(default_factory=threading.Event)
    data: bytes | None = None  # what it read, for the test to know


class FakeRemote(RemoteContainer):
    """One container, in memory (the type checker holds it to RemoteContainer)."""

    azcopy_can_sign = False
    azcopy_usable = False
    #: False: an account without blob index tags (RemoteUnsupported, as some are)
    tags_supported = True

    def __init__(self, container: str = "cont", account: str = "acct") -> None:
        self.container = container
        self.label = f"{account}/{container}"
        self.blobs: dict[str, Blob] = {}
        #: blob -> its index tags (set apart from the blob: setting them keeps the ETag)
        self.blob_tags: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._etags = itertools.count(1)
        #: blob -> Hold for its next download; and those whose download waits now
        self._holds: dict[str, Hold] = {}
        self._waiting: list[Hold] = []
        #: every call made, as (method, blob): what the test may look at
        self.calls: list[tuple[str, str]] = []
        #: called (under no lock) with (blob, data) just before an upload by the mount
        #: lands (not a copy): the test can judge each write as it happens
        self.on_put: Callable[[str, bytes], None] = lambda blob, data: None

    # -- the test's side --------------------------------------------------------------

    def _store(self, name: str, data: bytes, metadata: Mapping[str, str], *,
               origin: str = "mount") -> Blob:
        blob = Blob(data, f"0x8D{next(self._etags):012X}", dict(metadata),
                    hashlib.md5(data, usedforsecurity=False).hexdigest(), time.time_ns(),
                    origin)
        self.blobs[name] = blob
        return blob

    def put_elsewhere(self, name: str, data: bytes) -> Blob:
        """Another host writes the blob: new bytes, new ETag."""
        with self._lock:
            return self._store(name, data, {}, origin="elsewhere")

    def delete_elsewhere(self, name: str) -> None:
        with self._lock:
            self.blobs.pop(name, None)

    def hold(self, blob: str, entered: Callable[[], None]) -> Hold:
        """Keep the next download of `blob` in flight until the Hold is released."""
        with self._lock:
            hold = self._holds[blob] = Hold(entered)
        return hold

    def release_all(self) -> None:
        """Every held download goes on, and no hold waits for one to come."""
        with self._lock:
            holds = [*self._holds.values(), *self._waiting]
            self._holds.clear()
            self._waiting.clear()
        for hold in holds:
            hold.released.set()

    def unhold(self, blob: str) -> None:
        """The hold was not needed (no download came): the next download runs freely."""
        with self._lock:
            self._holds.pop(blob, None)

    def files(self) -> dict[str, Blob]:
        """Every blob that is not a folder marker, by name."""
        with self._lock:
            return {name: blob for name, blob in self.blobs.items()
                    if not blob.is_folder_marker}

    # -- what Remote offers -----------------------------------------------------------

    def offline(self) -> bool:
        return False

    def _get(self, name: str, what: str) -> Blob:
        blob = self.blobs.get(name)
        if blob is None:
            raise RemoteNotFound(f"{what} of {self.label}/{name}: not found (BlobNotFound)")
        return blob

    @staticmethod
    def _item(name: str, blob: Blob) -> BlobItem:
        """As a listing shows it: with the mode, owner and link flag its metadata keeps."""
        kept = posix.from_metadata(blob.metadata)
        atime_ns = parse_mtime(blob.metadata.get(posix.ATIME_KEY))
        if blob.is_folder_marker:
            return BlobItem(name + "/", True, 0, blob.mtime_ns, None, kept.mode, kept.uid,
                            kept.gid, atime_ns, blob.modified_ns)
        return BlobItem(name, False, len(blob.data), blob.mtime_ns, blob.etag, kept.mode,
                        kept.uid, kept.gid, atime_ns, blob.modified_ns, kept.is_link)

    def list_tree(self, prefix: str, most: int) -> tuple[list[BlobItem], bool]:
        """Every blob under `prefix`, in name order, up to `most`; and whether all."""
        with self._lock:
            self.calls.append(("list_tree", prefix))
            names = sorted(name for name in self.blobs if name.startswith(prefix))
            return [self._item(name, self.blobs[name]) for name in names[:most]], \
                len(names) <= most

    def list_pages(self, prefix: str, page_size: int = 5000) -> Iterator[list[BlobItem]]:
        """The direct children of `prefix` (delimiter '/'), in name order, one page."""
        with self._lock:
            self.calls.append(("list_pages", prefix))
            items: dict[str, BlobItem] = {}
            for name, blob in self.blobs.items():
                if not name.startswith(prefix):
                    continue
                rest = name[len(prefix):]
                if "/" in rest:
                    folder = prefix + rest.split("/", 1)[0] + "/"
                    items.setdefault(folder, BlobItem(folder, True))
                else:
                    items[name] = self._item(name, blob)
            page = [items[key] for key in sorted(items)]
        return iter([page])

    def properties(self, blob: str, *, retries: int | None = None) -> BlobItem:
        with self._lock:
            self.calls.append(("properties", blob))
            found = self._get(blob, "blob")
            return BlobItem(blob, found.is_folder_marker, len(found.data), found.mtime_ns,
                            found.etag)

    def head(self, blob: str, *, retries: int | None = None) -> BlobProperties:
        with self._lock:
            self.calls.append(("head", blob))
            found = self._get(blob, "blob")
            return BlobProperties(
                name=blob, size=len(found.data), etag=found.etag, mtime_ns=found.modified_ns,
                last_modified=None, content_type="application/octet-stream",
                content_md5=found.content_md5, access_tier="Hot",
                metadata=dict(found.metadata))

    def download(self, blob: str, destination: Path, *, size: int | None = None,
                 concurrency: int = 4, on_progress: Callable[[int], None] | None = None,
                 ) -> BlobItem:
        with self._lock:
            self.calls.append(("download", blob))
            found = self._get(blob, "download")
            hold = self._holds.pop(blob, None)
            if hold is not None:
                self._waiting.append(hold)
        if hold is not None:
            hold.data = found.data
            hold.entered()
            if not hold.released.wait(HOLD_TIMEOUT):
                raise AssertionError(f"the test never released the download of {blob}")
        destination.write_bytes(found.data)
        if on_progress is not None:
            on_progress(len(found.data))
        return BlobItem(blob, False, len(found.data), found.mtime_ns, found.etag)

    def read_blocks(self, blob: str, fd: int, start: int, end: int, etag: str,
                    block: int) -> list[int]:
        """Remote.read_blocks: bytes [start, end) of version `etag` into `fd` (held like
        a download, if asked); `calls` gets ("read_blocks", blob, start, end)."""
        with self._lock:
            self.calls.append(("read_blocks", blob, start, end))  # type: ignore[arg-type]
            found = self._get(blob, "read")
            hold = self._holds.pop(blob, None)
            if hold is not None:
                self._waiting.append(hold)
        if found.etag != etag:
            raise RemoteConflict(f"read of {self.label}/{blob}: changed in the container")
        if hold is not None:
            hold.data = found.data
            hold.entered()
            if not hold.released.wait(HOLD_TIMEOUT):
                raise AssertionError(f"the test never released the read of {blob}")
        data = found.data[start:end]
        os.pwrite(fd, data, start)
        return [zlib.crc32(data[at:at + block]) for at in range(0, len(data), block)]

    def upload(self, blob: str, source: Path, *, base_etag: str, md5: str,
               metadata: dict[str, str] | None = None, concurrency: int = 4,
               retries: int | None = None) -> BlobItem:
        """Conditional, as the real one: base '' = only if no blob; else If-Match."""
        data = source.read_bytes()
        with self._lock:
            self.calls.append(("upload", blob))
            current = self.blobs.get(blob)
            if not base_etag and current is not None:
                raise RemoteConflict(f"upload of {self.label}/{blob}: changed in the"
                                     " container (BlobAlreadyExists)")
            if base_etag and (current is None or current.etag != base_etag):
                raise RemoteConflict(f"upload of {self.label}/{blob}: changed in the"
                                     " container (ConditionNotMet)")
        self.on_put(blob, data)
        with self._lock:
            stored = self._store(blob, data, metadata or {})
            return BlobItem(blob, False, len(data), stored.mtime_ns, stored.etag)

    def delete(self, blob: str) -> None:
        with self._lock:
            self.calls.append(("delete", blob))
            self.blobs.pop(blob, None)
            self.blob_tags.pop(blob, None)

    def make_folder(self, prefix: str, *, exclusive: bool = False,
                    metadata: Mapping[str, str] | None = None) -> BlobItem:
        name = prefix.rstrip("/")
        with self._lock:
            self.calls.append(("make_folder", name))
            if exclusive and name in self.blobs:
                raise RemoteConflict(f"mkdir {self.label}/{name}: changed in the container"
                                     " (BlobAlreadyExists)")
            stored = self._store(name, b"", {**(metadata or {}), FOLDER_MARKER_KEY: "true"})
        return BlobItem(name + "/", True, 0, stored.modified_ns)

    def put_small(self, blob: str, data: bytes, metadata: Mapping[str, str]) -> BlobItem:
        """A symlink's blob; RemoteConflict if one of that name exists."""
        with self._lock:
            self.calls.append(("put_small", blob))
            if blob in self.blobs:
                raise RemoteConflict(f"upload of {self.label}/{blob}: changed in the"
                                     " container (BlobAlreadyExists)")
            stored = self._store(blob, data, metadata)
        return BlobItem(blob, False, len(data), stored.mtime_ns, stored.etag)

    def read_small(self, blob: str) -> bytes:
        with self._lock:
            self.calls.append(("read_small", blob))
            return self._get(blob, "blob").data

    def list_files(self, prefix: str) -> Iterator[BlobItem]:
        """Every blob under `prefix` at any depth, in name order; markers as folders."""
        with self._lock:
            self.calls.append(("list_files", prefix))
            found = [(name, blob) for name, blob in sorted(self.blobs.items())
                     if name.startswith(prefix)]
        for name, blob in found:
            if blob.is_folder_marker:
                yield BlobItem(name + "/", True, mtime_ns=blob.mtime_ns)
            else:
                yield BlobItem(name, False, len(blob.data), blob.mtime_ns, blob.etag)

    def tags(self, blob: str) -> dict[str, str]:
        with self._lock:
            self.calls.append(("tags", blob))
            self._tagged(blob)
            return dict(self.blob_tags.get(blob, {}))

    def update_tags(self, blob: str, changes: Mapping[str, str | None]) -> dict[str, str]:
        with self._lock:
            self.calls.append(("update_tags", blob))
            self._tagged(blob)
            tags = self.blob_tags.setdefault(blob, {})
            for key, value in changes.items():
                if value is None:
                    tags.pop(key, None)
                else:
                    tags[key] = value
            return dict(tags)

    def _tagged(self, blob: str) -> None:
        if not self.tags_supported:
            raise RemoteUnsupported(f"tags of {self.label}/{blob}: the account has no blob"
                                    " index tags (FeatureNotSupported)")
        self._get(blob, "tags")

    def list_all(self, prefix: str) -> list[str]:
        with self._lock:
            self.calls.append(("list_all", prefix))
            return sorted(name for name in self.blobs if name.startswith(prefix))

    def copy(self, source: str, destination: str, *, poll: float = 0.2) -> str | None:
        """Server-side copy (bytes and metadata); the copy's ETag."""
        with self._lock:
            self.calls.append(("copy", source))
            found = self._get(source, "copy")
            return self._store(destination, found.data, found.metadata,
                               origin=found.origin).etag

    def update_metadata(self, blob: str, changes: Mapping[str, str | None]) -> tuple[str, str]:
        with self._lock:
            self.calls.append(("update_metadata", blob))
            found = self._get(blob, "metadata")
            metadata = {key: value for key, value in found.metadata.items()
                        if key.lower() not in {change.lower() for change in changes}}
            metadata.update({key: value for key, value in changes.items()
                             if value is not None})
            return found.etag, self._store(blob, found.data, metadata,
                                           origin=found.origin).etag

    def blob_url(self, blob: str = "") -> str:
        base = f"https://acct.blob.core.windows.net/{self.container}"
        return f"{base}/{blob}" if blob else base

    def sas_for_azcopy(self, *, blob: str | None = None, write: bool = False,
                       lifetime: dt.timedelta = AZCOPY_SAS_LIFETIME) -> str:
        raise AssertionError("AzCopy is not used with the fake remote")
