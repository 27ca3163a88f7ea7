"""Uploads of written files, through a durable journal.

A written file is journaled (its cache file fsynced, its row committed) before close()
returns, in both modes; `sync` mode then uploads it at once and reports the outcome
to close(), `async` mode leaves it to the worker, which uploads files closed close
together in one go. A failed upload stays in the journal and is retried with
exponential backoff in a random window; nothing is dropped until the container has
the bytes. A blob that changed in the container since the local copy was taken is
never overwritten: the local bytes go up beside it under a conflict name.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import posixpath
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path

import trio

from .azcopy import AzCopy
from .azure import FOLDER_MARKER_KEY, AsyncContainer, BlobItem, backoff, format_mtime
from .burst import Burst
from .cache import Cache, make_empty
from .cachetables import CopyState
from .commits import GroupCommit
from .config import MountEntry, Settings
from .decide import upload_jobs
from .errors import BlobmountError, RemoteConflict, RemoteError
from .journal import Journaled
from .patch import Edit, Patches
from .posix import ATIME_KEY, to_metadata
from .puts import Puts, Target
from .singleflight import SingleFlight
from .store import Node, Store, Upload
from .supervise import fault
from .threads import Threads

log = logging.getLogger(__name__)

def conflict_name(blob: str, when: dt.datetime | None = None) -> str:
    """Where the local version of a conflicting file goes: beside it, clearly marked."""
    stamp = (when or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    folder, name = posixpath.split(blob)
    stem, dot, extension = name.partition(".") if not name.startswith(".") else (name, "", "")
    marked = f"{stem}.conflict-{stamp}{dot}{extension}"
    return posixpath.join(folder, marked) if folder else marked


def journaled_metadata(row: Upload) -> dict[str, str]:
    """The metadata a journal row puts with its bytes (beside `mtime`)."""
    if not row.metadata:
        return {}
    try:
        kept = json.loads(row.metadata)
    except ValueError:
        return {}
    return {str(key): str(value) for key, value in kept.items()} if isinstance(kept, dict) else {}


def node_metadata(node: Node) -> dict[str, str]:
    """The mode, owner and atime a file's upload puts with its bytes."""
    metadata = to_metadata(is_dir=False, mode=node.mode, uid=node.uid, gid=node.gid)
    if node.atime_ns is not None:
        metadata[ATIME_KEY] = format_mtime(node.atime_ns)
    return metadata


async def _nothing() -> None:
    pass


def _put_etag(item: BlobItem) -> str:
    """The ETag of a version just put: every put's answer carries one."""
    if item.etag is None:
        raise RemoteError(f"{item.name}: the answer to its put carried no ETag")
    return item.etag


class Uploads(Puts):
    """The upload journal's worker, and the calls that wait for it."""

    def __init__(self, store: Store, cache: Cache, entries: Sequence[MountEntry],
                 remotes: Sequence[AsyncContainer],
                 azcopy_for: Callable[[MountEntry], AzCopy] | None,
                 *, settings: Settings, threads: Threads,
                 on_uploaded: Callable[[Target, str, int, int, str], None],
                 on_conflict: Callable[[Target, str], None]) -> None:
        self.store = store
        self.cache = cache
        self._targets = [Target(index, entry, remote) for index, (entry, remote)
                         in enumerate(zip(entries, remotes, strict=True))]
        self._azcopy_for = azcopy_for
        self._settings = settings
        self._on_uploaded = on_uploaded
        self._on_conflict = on_conflict
        self._threads = threads
        self._flights = SingleFlight()
        #: closes that arrive together share one commit (and one fsync of each folder)
        self._commits = GroupCommit(store, threads)
        #: how many uploads run side by side, each possibly an AzCopy job
        self.workers = settings.max_parallel_transfers
        #: cache paths handed to a worker and not finished yet
        self._queued: set[str] = set()
        self._wake = trio.Event()
        #: journal() calls: the scheduler waits for a burst of them to end
        self._burst = Burst()
        #: cache path -> MD5s of the bytes tries of its journaled upload have put
        self._tried: dict[str, set[str]] = {}
        #: cache paths whose journal() is under way
        self._journaling: Counter[str] = Counter()
        #: cache paths the worker leaves alone for now (a rename is moving them)
        self._held: Counter[str] = Counter()
        self._writing: Callable[[str], bool] = lambda path: False
        self._kept_open: Callable[[Path, int, str, BlobItem], None] = (
            lambda path, index, blob, item: self.cache.forget(path))
        #: edits of large files, uploaded by blocks (patch.py)
        self.patches: Patches | None = None

    def use_patches(self, patches: Patches) -> None:
        """Upload the files edited by blocks by blocks (the journal's rows of them
        name the container: their remotes are these entries')."""
        self.patches = patches
        for target in self._targets:
            patches.remotes[(target.entry.account.account_name, target.entry.container)] = (
                target.remote)

    def _edit(self, path: Path) -> Edit | None:
        return self.patches.get(path) if self.patches is not None else None

    @property
    def _patching(self) -> Patches:
        """`patches`, where `_edit` found an edit (it finds none without them)."""
        if self.patches is None:
            raise BlobmountError("an edit by blocks, with no patches to upload it")
        return self.patches

    def watch_writers(self, writing: Callable[[str], bool],
                      kept_open: Callable[[Path, int, str, BlobItem], None]) -> None:
        """`writing(path)`: whether a handle has the file open for writing. An upload
        that ends then leaves the copy dirty: the writer may change it again.
        `kept_open(path, entry, blob, item)`: a conflict found meanwhile put the bytes
        beside the file as `blob` (`item`); the writer's file becomes that copy."""
        self._writing = writing
        self._kept_open = kept_open

    def writer_closed(self, path: Path, index: int, blob: str, etag: str,
                      mtime_ns: int) -> None:
        """The last writer of `path` closed with nothing more to upload, after an upload
        of its bytes (as version `etag`) ended while it was open: clean now."""
        size = path.stat().st_size
        if self.patches is None or not self.patches.finished(path, blob, etag):
            self.cache.record(path, blob=blob, etag=etag, size=size)
        self._on_uploaded(self._targets[index], blob, size, mtime_ns, etag)

    @contextlib.asynccontextmanager
    async def holding(self, path: Path) -> AsyncIterator[None]:
        """Keep the worker from starting an upload of `path` meanwhile, once any under
        way has ended: a rename moves the file's journal row while this is held."""
        self._held[str(path)] += 1
        try:
            await self.settle(path)
            yield
        finally:
            self._held[str(path)] -= 1
            if not self._held[str(path)]:
                del self._held[str(path)]
            self._wake.set()

    # -- journaling ---------------------------------------------------------------

    async def journal(self, path: Path, entry: MountEntry, blob: str, base_etag: str,
                      mtime_ns: int | None = None,
                      metadata: Mapping[str, str] | None = None, *,
                      bytes_durable: bool = False, durable: bool = True) -> int:
        """Make the written file durable and journal its upload; the journal version.
        `metadata` (mode, owner: see posix.py) goes up with the bytes. Closes that
        arrive together share the commit (commits.py). `bytes_durable`: only the
        metadata changed since the file was last journaled, so no fsync is needed;
        `durable` False: a new folder's marker, committed at once without one.

        `base_etag` counts only if the file has no journaled upload yet; an upload of
        it that ends meanwhile keeps its row (rebased), so the base cannot go stale.
        """
        self._journaling[str(path)] += 1
        try:
            version = await self._commits.journal(Journaled(
                str(path), entry.account.account_name, entry.container, blob, base_etag,
                mtime_ns, json.dumps(dict(metadata)) if metadata else None),
                bytes_durable=bytes_durable, durable=durable)
        finally:
            self._journaling[str(path)] -= 1
            if not self._journaling[str(path)]:
                del self._journaling[str(path)]
        self._burst.close_seen()
        self._wake.set()
        return version

    def marker_path(self, entry: MountEntry, prefix: str) -> Path:
        """The cache path of a folder's marker blob (an empty copy while journaled)."""
        return self.cache.path_for(entry, prefix.rstrip("/"))

    def marker_row(self, entry: MountEntry, prefix: str) -> Upload | None:
        """The journal row of a folder's marker blob, while it has not gone up."""
        return self.store.upload(str(self.marker_path(entry, prefix)))

    async def journal_folder(self, entry: MountEntry, prefix: str,
                             metadata: Mapping[str, str]) -> int:
        """Journal the marker blob of a folder made here (a mkdir with `upload:
        async`): it goes up exclusively, as the folder's files do, with `metadata`
        (mode, owner, times); the journal version. Journaled again (a chmod before it
        went up), the row keeps its base and takes the new metadata."""
        path, blob = self.marker_path(entry, prefix), prefix.rstrip("/")
        journaled = self.marker_row(entry, prefix) is not None
        if not journaled:
            make_empty(path)
            self.cache.record(path, blob=blob, etag="", size=0, state=CopyState.DIRTY)
        return await self.journal(path, entry, blob, "", None,
                                  {**metadata, FOLDER_MARKER_KEY: "true"},
                                  bytes_durable=journaled, durable=journaled)

    async def upload_now(self, path: Path, version: int) -> None:
        """Upload the journaled file now and return once the container has `version`.

        Raises what the upload raised; the row stays in the journal for a retry.
        """
        while (row := self.store.upload(str(path))) is not None and row.version <= version:
            await self._flights.run(str(path), lambda: self._attempt(str(path)))

    async def forget(self, path: Path) -> None:
        """The file is deleted or replaced here: its pending upload must not bring it
        back. Returns once no upload of it is under way."""
        self.store.drop_upload(str(path))
        self._tried.pop(str(path), None)
        await self.settle(path)
        if self.patches is not None:
            await self.patches.drop(path)  # its snapshot too: the blob may go now

    async def settle(self, path: Path) -> None:
        """Return once no upload of `path` is under way (whatever its outcome)."""
        with contextlib.suppress(BlobmountError):
            await self._flights.run(str(path), _nothing)

    def pending(self, account: str, container: str, prefix: str) -> list[Upload]:
        """Journaled uploads of blobs under `prefix` of one container."""
        return [row for row in self.store.uploads() if row.account == account
                and row.container == container and row.blob.startswith(prefix)]

    # -- the worker ---------------------------------------------------------------

    async def run(self) -> None:
        """Upload what the journal holds, batching files closed close together, on
        `workers` workers (`max_parallel_transfers`) fed by one unbuffered channel: the
        scheduler's send waits while every worker is busy (s3ql's BlockCache shape)."""
        if self.patches is not None:
            await self.patches.sweep()
        send, receive = trio.open_memory_channel[list[str]](0)
        async with trio.open_nursery() as nursery:
            async with receive:
                for _ in range(self.workers):
                    nursery.start_soon(self._worker, receive.clone())
            async with send:
                await self._schedule(send)

    async def _schedule(self, send: trio.MemorySendChannel[list[str]]) -> None:
        """Hand each due upload to a worker, once: none is queued twice."""
        while True:
            if not self._waiting(time.time()):
                await self._sleep_until_due()
                continue
            await self._gather_batch()
            fault("upload_worker")
            for job in upload_jobs([row.path for row in self._waiting(time.time())]):
                self._queued.update(job)
                try:
                    await send.send(job)
                except BaseException as exc:
                    self._queued.difference_update(job)  # no worker took it
                    if isinstance(exc, trio.BrokenResourceError):
                        raise BlobmountError("every upload worker has stopped") from None
                    raise

    async def _worker(self, receive: trio.MemoryReceiveChannel[list[str]]) -> None:
        async with receive:
            async for job in receive:
                try:
                    for path in job:
                        await self._attempt_quietly(path)
                finally:
                    self._queued.difference_update(job)
                    self._wake.set()  # the scheduler looks again: a retry may be due

    def _waiting(self, due_by: float | None = None) -> list[Upload]:
        """The rows a worker may take (due by `due_by`): not queued already, and not
        held by a rename (its end wakes the scheduler)."""
        return [row for row in self._uploadable(self.store.uploads(due_by=due_by))
                if row.path not in self._queued and row.path not in self._held]

    def _uploadable(self, rows: list[Upload]) -> list[Upload]:
        """The rows a mount entry of this config is for. The others (their entry left
        the config) stay in the journal, untried, and `status` and `sync` name them."""
        return [row for row in rows if self._target(row) is not None]

    def orphaned(self) -> list[Upload]:
        """Journaled uploads that no mount entry of this config is for."""
        return [row for row in self.store.uploads() if self._target(row) is None]

    def why(self, row: Upload) -> str:
        """Why a journaled upload is still there, for `sync` and `status`."""
        if self._target(row) is None:
            return (f"no mount entry of this config is for {row.account}/{row.container}"
                    f"/{row.blob}: it stays in the journal until a config that mounts it"
                    " uses this cache folder")
        return row.last_error or "not uploaded yet"

    async def _gather_batch(self) -> None:
        """Wait for a burst of closes to end, unless uploads are under way already.
        Uploads started in the middle of one take the CPU and the GIL its own
        requests need: tar x of 239 files took 3.2 s with uploads beside it and
        1.3 s without."""
        await self._burst.pause(self._settings.upload_batch_window,
                                busy=lambda: bool(self._queued))

    async def _sleep_until_due(self) -> None:
        pending = self._waiting()
        delay = (min(row.next_try for row in pending) - time.time()) if pending else 3600
        with trio.move_on_after(max(0.0, delay)):
            await self._wake.wait()
        self._wake = trio.Event()

    async def _attempt_quietly(self, path: str) -> None:
        if path in self._held:
            return  # tried again once the rename that holds it is done
        with contextlib.suppress(BlobmountError):
            await self._flights.run(path, lambda: self._attempt(path))

    async def sync(self) -> list[Upload]:
        """Try every journaled upload now, as many at once as there are workers; the
        ones that still failed."""
        # A count of tasks, not of threads: each attempt may be an AzCopy job.
        bound = trio.Semaphore(self.workers)

        async def attempt(path: str) -> None:
            async with bound:
                await self._attempt_fresh(path)

        async with trio.open_nursery() as nursery:
            for row in self._uploadable(self.store.uploads()):
                nursery.start_soon(attempt, row.path)
        return self.store.uploads()

    async def _attempt_fresh(self, path: str) -> None:
        """One attempt that starts now: an attempt already under way (begun, say, while
        the account was unreachable) is waited for, and tried again if it failed."""
        joined = self._flights.running(path)
        try:
            await self._flights.run(path, lambda: self._attempt(path))
        except BlobmountError:
            if joined:
                await self._attempt_quietly(path)

    # -- one upload ---------------------------------------------------------------

    async def _attempt(self, path: str) -> None:
        row = self.store.upload(path)
        if row is None:
            return
        try:
            fault("upload")
            await self._upload(row)
        except BlobmountError as exc:
            self.store.upload_failed(path, str(exc), time.time() + backoff(row.attempts + 1))
            log.warning("upload of %s failed (attempt %d): %s", row.blob, row.attempts + 1, exc)
            raise
        except Exception as exc:
            # Not expected (a full disk, say): this upload alone fails, and is retried
            # on the journal's schedule like any other.
            reason = f"{type(exc).__name__}: {exc}"
            self.store.upload_failed(path, reason, time.time() + backoff(row.attempts + 1))
            log.exception("upload of %s failed (attempt %d)", row.blob, row.attempts + 1)
            raise BlobmountError(f"upload of {row.blob} failed: {reason}") from exc

    async def _upload(self, row: Upload) -> None:
        target = self._target(row)
        if target is None:
            raise BlobmountError(f"no mount entry is for {row.account}/{row.container}")
        path = Path(row.path)
        if not path.exists():
            # Deleted by hand before it went up: there is nothing left to upload.
            log.error("cache file of %s/%s is gone; its upload is dropped", target.remote.label,
                      row.blob)
            self.store.drop_upload(row.path)
            return
        edit = self._edit(path)
        try:
            if edit is not None:
                item = await self._put_edit(target, row.blob, edit, row.base_etag,
                                            row.mtime_ns, self._tried.setdefault(row.path, set()),
                                            journaled_metadata(row))
            else:
                item = await self._put(target, row.blob, path, row.base_etag, row.mtime_ns,
                                       self._tried.setdefault(row.path, set()),
                                       journaled_metadata(row))
        except RemoteConflict:
            self._tried.pop(row.path, None)
            if row.is_folder_marker:
                # A blob of that name came meanwhile: the folder's files still go up.
                log.warning("%s/%s: a blob of the folder's name was made meanwhile; the"
                            " folder keeps no marker of its own", target.remote.label, row.blob)
                self.store.drop_upload(row.path)
                self.cache.forget(path)
                self._on_uploaded(target, row.blob + "/", 0, 0, "")  # the folder's prefix
                return
            await self._keep_both(target, row, path)
            return
        self._tried.pop(row.path, None)
        etag = _put_etag(item)
        if row.path not in self._journaling and self.store.upload_done(row.path, row.version):
            if self._writing(row.path):
                # Still open for writing: the copy stays dirty, now based on this version,
                # and the writer's last close says whether it is clean.
                if edit is not None:
                    await self._patching.rebase(path, item)
                self.cache.record(path, blob=row.blob, etag=etag, size=item.size,
                                  state=CopyState.DIRTY, synced=not row.holds_bytes)
            elif row.is_folder_marker:
                self.cache.forget(path)  # the folder is in the container
                self._on_uploaded(target, row.blob + "/", 0, 0, etag)  # the folder's prefix
            else:
                if edit is None or not self._patching.finished(path, row.blob, etag):
                    # A copy never fsynced (its row held the bytes) is a downloaded one
                    # now: the next sync makes it durable, and a mount after a crash
                    # drops it, to download it again (copysync.py).
                    self.cache.record(path, blob=row.blob, etag=etag, size=item.size,
                                      synced=not row.holds_bytes)
                self._on_uploaded(target, row.blob, item.size, item.mtime_ns, etag)
            log.info("uploaded %s/%s (%d bytes)", target.remote.label, row.blob, item.size)
        else:
            # Written again meanwhile (or being journaled again now): the next upload
            # replaces the one just made.
            if edit is not None:
                await self._patching.rebase(path, item)
            self.store.rebase_upload(row.path, etag)

    def _target(self, row: Upload) -> Target | None:
        """The entry a journaled blob belongs to: entries may share a container, so
        the one with the longest prefix of the blob name wins."""
        matches = [target for target in self._targets
                   if target.entry.account.account_name == row.account
                   and target.entry.container == row.container
                   and row.blob.startswith(target.entry.prefix)]
        return max(matches, key=lambda target: len(target.entry.prefix), default=None)

    async def _keep_both(self, target: Target, row: Upload, path: Path) -> None:
        """The blob changed in the container: put the local bytes beside it."""
        conflict = conflict_name(row.blob)
        edit = self._edit(path)
        if edit is not None:
            # The unchanged blocks come from the snapshot of the version it edited.
            item = await self._put_edit(target, conflict, edit, "", row.mtime_ns, set(),
                                        journaled_metadata(row))
        else:
            item = await self._put(target, conflict, path, "", row.mtime_ns, set(),
                                   journaled_metadata(row))
        log.warning("conflict: %s/%s changed in the container since it was cached; the local"
                    " version is kept as %s", target.remote.label, row.blob, conflict)
        self.store.drop_upload(row.path)
        if self._writing(row.path):
            # Still open for writing: what the writer writes later goes to the copy too.
            if edit is not None:
                await self._patching.rebase(path, item)
                self._patching.moved(path, self.cache.path_for(target.entry, conflict))
            self._kept_open(path, target.index, conflict, item)
        else:
            if edit is not None:
                await self._patching.drop(path)
            self.cache.forget(path)
        self._on_conflict(target, row.blob)

    # -- status -------------------------------------------------------------------

    def status(self) -> dict:
        rows = self.store.uploads()
        sizes = []
        for row in rows:
            try:
                edited = self.patches.pending_bytes(Path(row.path)) if self.patches else None
                sizes.append(os.stat(row.path).st_size if edited is None else edited)
            except FileNotFoundError:
                sizes.append(0)
        return {
            "count": len(rows),
            "bytes": sum(sizes),
            "oldest": min((row.queued for row in rows), default=None),
            "failed": [
                {"blob": f"{row.account}/{row.container}/{row.blob}", "attempts": row.attempts,
                 "error": row.last_error}
                for row in rows if row.attempts and self._target(row) is not None
            ],
            "orphaned": [{"blob": f"{row.account}/{row.container}/{row.blob}",
                          "error": self.why(row)} for row in rows
                         if self._target(row) is None],
        }
