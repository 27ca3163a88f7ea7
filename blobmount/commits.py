"""Group commit of the upload journal: closes that arrive together share one sqlite
commit and one fsync of each folder.

Each close of a larger file fsyncs it first, in a worker thread, side by side with the
other closes' files, then joins the group that waits; a small file's bytes go into its
row instead (decide.JOURNAL_BYTES_MAX), durable with the commit, and its folder needs
no fsync. One caller at a time commits: it takes
every request waiting, fsyncs their folders (each once) and commits all their rows in
one transaction (synchronous=FULL); closes that arrive meanwhile form the next group,
led by one of them.
A close returns once its own group is committed: the journal then holds its file
durably, as when each close committed alone. A chmod, chown or utimens of a file still
to go up changes only its row's metadata: committed at once, with no fsync.
"""

from __future__ import annotations

import dataclasses
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from .cache import fsync_file, fsync_folder
from .decide import JOURNAL_BYTES_MAX
from .journal import Journaled
from .store import Store
from .threads import Threads


@dataclass
class _Request:
    row: Journaled
    done: trio.Event = field(default_factory=trio.Event)
    version: int = 0
    error: Exception | None = None


def _fsync_folders(folders: Iterable[Path]) -> None:
    for folder in folders:
        fsync_folder(folder)


def small_file_bytes(path: Path) -> bytes | None:
    """The file's bytes if it is small enough for its journal row, else None. Read in
    the trio thread: at most 64 KiB just written, so from the page cache, which costs
    less than a trip to a worker thread. A larger file is not read at all."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if os.fstat(fd).st_size > JOURNAL_BYTES_MAX:
            return None
        data = os.pread(fd, JOURNAL_BYTES_MAX + 1, 0)  # + 1: it may grow meanwhile
    finally:
        os.close(fd)
    return data if len(data) <= JOURNAL_BYTES_MAX else None


class GroupCommit:
    """Journals written files durably, many closes to a commit."""

    def __init__(self, store: Store, threads: Threads) -> None:
        self._store = store
        self._threads = threads
        self._waiting: list[_Request] = []
        self._committing = False
        self._committed = trio.Event()  # set at the end of each commit
        self._in_flight: Counter[str] = Counter()  # paths of closes not yet committed
        #: groups committed, and the rows they held (since the mount)
        self.groups = 0
        self.rows = 0

    @property
    def waiting(self) -> int:
        """Closes waiting for the next group."""
        return len(self._waiting)

    async def journal(self, row: Journaled, *, bytes_durable: bool = False,
                      durable: bool = True) -> int:
        """Make the file durable and its row committed; the row's version.

        `bytes_durable`: nothing of the file changed since its last journaling (a
        chmod, chown or utimens of a pending upload, as `tar x` makes three of after
        each close): only the row's metadata is new, committed at once without an
        fsync, as a local file system keeps a chmod. A killed daemon keeps it; the next
        durable commit covers it. Behind a close of the same file not yet committed,
        it waits for that close, so that the row ends with the newer metadata.

        `durable` False: the new marker blob of a folder made here (an empty file).
        Its row holds its bytes and is committed at once, without an fsync: a local
        file system keeps an mkdir only once the parent is fsynced, a killed daemon
        keeps it all the same, and the next durable commit (any close) covers it."""
        if not durable:
            data = small_file_bytes(Path(row.path))
            return self._store.queue_uploads([dataclasses.replace(row, data=data)],
                                             durable=False)[0]
        if bytes_durable:
            while self._in_flight[row.path]:
                await self._committed.wait()
            row = dataclasses.replace(row, same_bytes=True)
            return self._store.queue_uploads([row], durable=False)[0]
        self._in_flight[row.path] += 1
        try:
            return await self._journal_in_group(row)
        finally:
            self._in_flight[row.path] -= 1
            if not self._in_flight[row.path]:
                del self._in_flight[row.path]

    async def _journal_in_group(self, row: Journaled) -> int:
        if (data := small_file_bytes(Path(row.path))) is not None:
            row = dataclasses.replace(row, data=data)
        else:
            await self._threads.run_sync(fsync_file, Path(row.path))
        request = _Request(row)
        self._waiting.append(request)
        while not request.done.is_set():
            if self._committing:
                await self._committed.wait()
            else:
                await self._commit_waiting()
        if request.error is not None:
            raise request.error
        return request.version

    async def _commit_waiting(self) -> None:
        """Commit every request waiting now, as one group. Each caller leads one group
        at most (none waits behind a stream of others' closes); shielded, since the
        other closes of the group wait on it whatever happens to the one that leads."""
        self._committing = True
        group, self._waiting = self._waiting, []
        try:
            with trio.CancelScope(shield=True):
                await self._commit(group)
        finally:
            self._committing = False
            self._committed.set()
            self._committed = trio.Event()

    async def _commit(self, group: list[_Request]) -> None:
        try:
            # A row that holds its bytes needs no copy's name.
            folders = {Path(request.row.path).parent for request in group
                       if request.row.data is None}
            if folders:
                await self._threads.run_sync(_fsync_folders, folders)
            versions = self._store.queue_uploads([request.row for request in group])
        except Exception as exc:  # a full disk, say: every close of the group fails
            for request in group:
                request.error = exc
                request.done.set()
            return
        self.groups += 1
        self.rows += len(group)
        for request, version in zip(group, versions, strict=True):
            request.version = version
            request.done.set()
