"""Edits of large files, uploaded by blocks: only what changed goes up.

A writer of a blob read by blocks (larger than block_read_min) gets its partial copy,
not a download, and a snapshot of the version it edits is taken (`Edit`). The copy
then holds three kinds of bytes: blocks written here (`patch_blocks`, BLOCK-aligned),
blocks of that version fetched so far (a write that covers a block only in part
fetches it first, and so does a read through the writer), and the rest, which is not
here. Bytes past where the version ends (an append), or past a truncate, are the
copy's own.

The upload (`put`) commits a block list (`plan`) with If-Match on the version edited:
a blob changed meanwhile is a conflict. A version written by blocks (AzCopy, the SDK,
an earlier edit) keeps every committed block that holds no written byte, named as it
is: nothing of it moves. A committed block that holds some is sent again whole (its
bytes not here are fetched first). The unchanged ranges of a blob put in one request
(no block list), and of a conflict copy (another blob, which cannot name our blob's
blocks), are copied from the snapshot instead, server-side (Put Block From URL, If-Match
on its ETag); nobody else changes a snapshot. It goes once no edit needs it.

Whatever must see the copy whole (a reader opening it, a rename, an O_TRUNC open)
first `complete`s it: the blocks not here are fetched, and it becomes a whole copy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from .azure import MTIME_KEY, AsyncContainer, BlobItem, file_md5, parse_mtime
from .blocklist import (
    COPY,
    ID_LENGTH,
    KEEP,
    SEND,
    Piece,
    block_name,
    fingerprint,
    id_length,
    new_ids,
    plan,
)
from .blocks import BLOCK, BlockFile, Blocks, block_start
from .cache import Cache
from .cachetables import CopyState
from .decide import STAGE_PARALLEL
from .errors import BlobmountError, RemoteError
from .store import Patch

log = logging.getLogger(__name__)


@dataclass
class Edit:
    """One copy being edited: what its patch row says, and this run's counts."""

    path: Path
    remote: AsyncContainer
    blob: str
    etag: str       # the version the bytes not written here are of
    size: int       # bytes from the start that are that version's where not written
    snapshot: str   # the snapshot of that version ('' = none could be taken)
    written: set[int] = field(default_factory=set)
    #: writes to each block in this run: an upload that read a block leaves it written
    #: if it was written again meanwhile
    writes: Counter[int] = field(default_factory=Counter)
    #: the blocks the last put read, and their counts of writes then
    sent: dict[int, int] = field(default_factory=dict)
    file: BlockFile | None = None  # fetches of the version's blocks into the copy

    def row(self, account: str, container: str) -> Patch:
        return Patch(str(self.path), account, container, self.blob, self.etag, self.size,
                     self.snapshot)


class Patches:
    """Every copy being edited by blocks, and their uploads."""

    def __init__(self, cache: Cache, blocks: Blocks) -> None:
        self.cache = cache
        self.store = cache.store
        self.blocks = blocks
        self._edits: dict[Path, Edit] = {}
        #: (account, container) -> its container: for edits journaled by an earlier daemon
        self.remotes: dict[tuple[str, str], AsyncContainer] = {}
        # A count of tasks, not of threads (decide.STAGE_PARALLEL says why).
        self._staging = trio.Semaphore(STAGE_PARALLEL)
        self._background: trio.Nursery | None = None
        self._doomed: list[tuple[AsyncContainer, str, str]] = []  # snapshots to delete
        #: bytes staged since the mount: sent from here, and copied server-side
        self.staged = {"sent": 0, "copied": 0}
        self.on_changed: Callable[[], None] = lambda: None

    # -- finding and starting edits ---------------------------------------------------

    def get(self, path: Path) -> Edit | None:
        """The edit of the copy at `path`, while it holds a change (dirty)."""
        edit = self._edits.get(path)
        row = self.store.patch(str(path)) if edit is None else None
        if edit is None and row is None:
            return None  # most copies: not an edit, and nothing to retire
        record = self.store.cached_file(str(path))
        if record is None or record.state != CopyState.DIRTY:
            self._retire(path)
            return None
        if edit is not None:
            return edit
        remote = self.remotes.get((row.account, row.container)) if row else None
        if row is None or remote is None:
            return None
        edit = Edit(path, remote, row.blob, row.etag, row.size, row.snapshot,
                    self.store.patch_blocks(row.path))
        self._edits[path] = edit
        return edit

    async def start(self, remote: AsyncContainer, blob: str, path: Path, *, size: int,
                    etag: str) -> bool:
        """Make the copy at `path` an edit of version `etag` (keeping the blocks of it
        already here); False if the blob is another version now (a snapshot of it
        could not be taken): the caller downloads it whole, as before."""
        self._retire(path)
        try:
            snapshot = await remote.snapshot(blob, etag)
        except BlobmountError as exc:
            log.info("%s/%s is edited as a whole file: %s", remote.label, blob, exc)
            return False
        record = self.store.cached_file(str(path))
        fd = None
        if record is not None and record.state == CopyState.PARTIAL and record.etag == etag:
            with contextlib.suppress(FileNotFoundError):
                fd = os.open(path, os.O_RDWR)
            if fd is not None and os.fstat(fd).st_size != size:
                os.close(fd)
                fd = None
        if fd is None:
            temp = self.cache.temp_path(path)
            fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            os.ftruncate(fd, size)
            os.replace(temp, path)
            self.store.drop_cached_file(str(path))
            self.cache.record(path, blob=blob, etag=etag, size=0, state=CopyState.PARTIAL)
        edit = Edit(path, remote, blob, etag, size, snapshot)
        self._file(edit, fd)
        self.remotes[(remote.account.account_name, remote.container)] = remote
        self.store.put_patch(edit.row(remote.account.account_name, remote.container))
        self._edits[path] = edit
        log.info("editing %s/%s by blocks (%d bytes, snapshot %s)", remote.label, blob, size,
                 snapshot)
        return True

    def _file(self, edit: Edit, fd: int | None = None) -> BlockFile:
        """The edit's BlockFile, on `fd` (else the copy opened now: at the first fetch
        after a remount)."""
        if edit.file is None or edit.file.fd < 0:
            fd = os.open(edit.path, os.O_RDWR) if fd is None else fd
            edit.file = BlockFile(edit.path, edit.blob, edit.etag, edit.size, edit.remote, fd)
            edit.file.detached = True  # its fetches are this edit's: nothing records them
            edit.file.users = 1
            edit.file.local.update(edit.written)
        return edit.file

    # -- reads and writes through the writer --------------------------------------------

    async def before_read(self, path: Path, offset: int, size: int) -> None:
        """The bytes [offset, offset + size) are in the copy once this returns."""
        edit = self.get(path)
        if edit is None:
            return
        end = min(offset + size, edit.size)
        if offset < end:
            await self._ensure(edit, block_start(offset), block_start(end - 1))

    async def before_write(self, path: Path, offset: int, size: int) -> None:
        """Ready the copy for a write of [offset, offset + size): a block the write
        covers only in part is fetched first; every block it touches is written."""
        edit = self.get(path)
        if edit is None or size <= 0:
            return
        end = offset + size
        touched = range(block_start(offset), block_start(end - 1) + 1, BLOCK)
        partial = [start for start in (touched[0], touched[-1])
                   if start < edit.size and start not in edit.written
                   and not (offset <= start and end >= min(start + BLOCK, edit.size))]
        for start in sorted(set(partial)):
            await self._ensure(edit, start, start)
        self._mark(edit, touched)
        await self._quiet(edit)

    async def before_truncate(self, path: Path, size: int) -> None:
        """A truncate to `size`: the bytes past it are the copy's own from now on."""
        edit = self.get(path)
        if edit is None or size >= edit.size:
            return
        start = block_start(size)
        if size % BLOCK and start not in edit.written:
            await self._ensure(edit, start, start)
            self._mark(edit, [start])
        edit.size = size
        await self._quiet(edit)
        self._save(edit)

    def _mark(self, edit: Edit, starts: Iterable[int]) -> None:
        starts = list(starts)
        new = [start for start in starts if start not in edit.written]
        if new:
            self.store.add_patch_blocks(str(edit.path), new)
            edit.written.update(new)
        edit.writes.update(starts)
        if edit.file is not None:
            edit.file.local.update(starts)

    async def _ensure(self, edit: Edit, first: int, last: int) -> None:
        """Fetch the blocks of the edited version starting in [first, last] that are
        not here yet (the written ones are)."""
        file = self._file(edit)
        starts = range(first, last + 1, BLOCK)
        for start in starts:
            file.pins[start] += 1
        try:
            await self.blocks.ensure(file, first, last)
        finally:
            for start in starts:
                file.pins[start] -= 1
                if not file.pins[start]:
                    del file.pins[start]

    async def _quiet(self, edit: Edit) -> None:
        """Return once no fetch still writes into the copy (it would undo a write)."""
        file = edit.file
        while file is not None and file.flights:
            await next(iter(file.flights.values())).done.wait()

    # -- making the copy whole, or dropping the edit ----------------------------------

    async def complete(self, path: Path) -> None:
        """Fetch every block of the edited version not here: the copy is whole, a
        plain local change from now on (its next upload sends all of it)."""
        edit = self.get(path)
        if edit is None:
            return
        log.info("%s/%s: fetching the rest of the edited file", edit.remote.label, edit.blob)
        if edit.size:
            await self._ensure(edit, 0, block_start(edit.size - 1))
        await self._quiet(edit)
        await self.drop(path)

    async def drop(self, path: Path) -> None:
        """The edit ends (its copy is whole, or gone): its rows and its snapshot go."""
        edit = self._edits.pop(path, None)
        row = self.store.patch(str(path))
        self.store.drop_patch(str(path))
        if edit is not None:
            self._close(edit)
        remote = edit.remote if edit is not None else (
            self.remotes.get((row.account, row.container)) if row else None)
        snapshot = edit.snapshot if edit is not None else (row.snapshot if row else "")
        blob = edit.blob if edit is not None else (row.blob if row else "")
        if remote is not None and snapshot:
            await self._delete_snapshot(remote, blob, snapshot)

    def _retire(self, path: Path) -> None:
        """An edit whose copy holds no change any more (closed unwritten, or uploaded
        and closed): it goes, in the background."""
        edit = self._edits.pop(path, None)
        row = self.store.patch(str(path))
        if edit is None:
            if row is None:
                return
            remote = self.remotes.get((row.account, row.container))
            snapshot, blob = row.snapshot, row.blob
        else:
            self._close(edit)
            remote, snapshot, blob = edit.remote, edit.snapshot, edit.blob
        self.store.drop_patch(str(path))
        if remote is not None and snapshot:
            self._doomed.append((remote, blob, snapshot))
            self._delete_doomed()

    def run_in(self, nursery: trio.Nursery) -> None:
        """Where snapshots of edits that ended are deleted: the daemon's nursery."""
        self._background = nursery
        self._delete_doomed()

    def _delete_doomed(self) -> None:
        """Delete, in the background, the snapshots no edit needs any more (kept until
        there is a background: uploads at start-up may end before it)."""
        while self._background is not None and self._doomed:
            self._background.start_soon(self._delete_snapshot, *self._doomed.pop())

    async def sweep(self) -> None:
        """At mount: edits left by an earlier daemon whose change was dropped (never
        committed) lose their rows and snapshot."""
        for row in self.store.patches():
            record = self.store.cached_file(row.path)
            if record is None or record.state != CopyState.DIRTY:
                await self.drop(Path(row.path))

    @staticmethod
    def _close(edit: Edit) -> None:
        file = edit.file
        if file is not None and file.fd >= 0:
            file.users = 0  # a fetch under way closes it when it ends (blocks.py)
            if not file.flights:
                os.close(file.fd)
                file.fd = -1

    async def _delete_snapshot(self, remote: AsyncContainer, blob: str, snapshot: str) -> None:
        try:
            await remote.delete_snapshot(blob, snapshot)
            log.debug("deleted snapshot %s of %s/%s", snapshot, remote.label, blob)
        except BlobmountError as exc:
            log.warning("snapshot %s of %s/%s could not be deleted: %s", snapshot,
                        remote.label, blob, exc)

    # -- uploads ----------------------------------------------------------------------

    def pending_bytes(self, path: Path) -> int | None:
        """Bytes an upload of the edit would send (None: not an edit)."""
        edit = self.get(path)
        if edit is None:
            return None
        size = os.stat(path).st_size
        return sum(piece.length for piece in plan(size, edit.size, edit.written)
                   if piece.kind == SEND)

    async def put(self, edit: Edit, blob: str, *, base_etag: str, content_type: str | None,
                  metadata: dict[str, str], tried: set[str]) -> BlobItem:
        """Commit the copy as `blob` over version `base_etag` ('' = a new blob): the
        blocks of that version holding no written byte kept, the rest sent (or copied
        from the snapshot). RemoteConflict if the blob is another version. `tried` gets
        the fingerprint of the list this try commits."""
        remote = edit.remote
        sent = {start: edit.writes[start] for start in edit.written}
        size = os.stat(edit.path).st_size
        committed = await self._committed(edit, blob, base_etag)
        pieces = plan(size, edit.size, edit.written, committed)
        new = [piece for piece in pieces if piece.kind != KEEP]
        ids = dict(zip(new, new_ids(len(new), id_length(committed) or ID_LENGTH,
                                    (name for name, _ in committed)), strict=True))
        names = [piece.name if piece.kind == KEEP else block_name(ids[piece])
                 for piece in pieces]
        await self._fetch_sent(edit, pieces)
        source = ""
        if any(piece.kind == COPY for piece in pieces):
            if not edit.snapshot:
                raise RemoteError(f"{remote.label}/{edit.blob}: the edited version has no"
                                  " snapshot to copy the unchanged blocks from")
            source = await remote.snapshot_source(edit.blob, edit.snapshot)
        md5 = (await remote.run_sync(file_md5, edit.path)
               if all(piece.kind == SEND for piece in pieces) else None)
        fd = os.open(edit.path, os.O_RDONLY)
        failures: list[BlobmountError] = []
        try:
            async with trio.open_nursery() as nursery:
                for piece, block_id in ids.items():
                    nursery.start_soon(self._stage, remote, blob, block_id, piece, source,
                                       edit.etag, fd, failures)
        finally:
            os.close(fd)
        if failures:
            raise failures[0]
        tried.add(fingerprint(names))
        edit.sent = sent  # before the commit: its answer may be lost, the commit not
        etag = await remote.commit_block_names(
            blob, names, base_etag=base_etag, content_type=content_type, md5=md5,
            metadata=metadata, retries=1)
        moved: Counter[str] = Counter()
        for piece in pieces:
            moved[piece.kind] += piece.length
        log.info("committed %s/%s by %d blocks: %d bytes sent, %d copied, %d kept (%d"
                 " blocks)", remote.label, blob, len(pieces), moved[SEND], moved[COPY],
                 moved[KEEP], len(pieces) - len(new))
        mtime = parse_mtime(metadata.get(MTIME_KEY)) or time.time_ns()
        return BlobItem(blob, False, size, mtime, etag)

    async def _committed(self, edit: Edit, blob: str, base_etag: str,
                         ) -> list[tuple[str, int]]:
        """The block list of the version edited, when the commit can keep its blocks:
        it goes over that version of that blob, and its IDs are ones ours can match.
        Read from the snapshot (the version's own), after a restart too."""
        if blob != edit.blob or not base_etag or base_etag != edit.etag:
            return []  # a conflict copy, another blob: it cannot name these blocks
        committed = await edit.remote.block_list(edit.blob, edit.snapshot)
        if committed and id_length(committed) is None:
            log.info("%s/%s: its block IDs differ in length or are too short; the"
                     " unchanged bytes are copied", edit.remote.label, blob)
            return []
        return committed

    async def _fetch_sent(self, edit: Edit, pieces: list[Piece]) -> None:
        """Fetch the bytes of the version that pieces to send hold and the copy lacks
        (those of committed blocks that are sent again whole)."""
        wanted: set[int] = set()
        for piece in pieces:
            stop = min(piece.end, edit.size)  # the version's bytes end there
            if piece.kind == SEND and piece.offset < stop:
                wanted.update(range(block_start(piece.offset), stop, BLOCK))
        runs: list[list[int]] = []
        for start in sorted(wanted - edit.written):
            if runs and start == runs[-1][-1] + BLOCK:
                runs[-1].append(start)
            else:
                runs.append([start])
        async with trio.open_nursery() as nursery:
            for run in runs:
                nursery.start_soon(self._ensure, edit, run[0], run[-1])

    async def _stage(self, remote: AsyncContainer, blob: str, block_id: str, piece: Piece,
                     source: str, source_etag: str, fd: int,
                     failures: list[BlobmountError]) -> None:
        """Stage one block: copied from the snapshot, or sent from the copy."""
        try:
            async with self._staging:
                if piece.kind == COPY:
                    await remote.stage_block_from_url(blob, block_id, source, piece.offset,
                                                      piece.length, source_etag, retries=1)
                    self.staged["copied"] += piece.length
                    return
                data = await remote.run_sync(os.pread, fd, piece.length, piece.offset)
                if len(data) < piece.length:  # truncated meanwhile: the next upload sends it
                    data += bytes(piece.length - len(data))
                await remote.stage_block(blob, block_id, data, retries=1)
                self.staged["sent"] += piece.length
        except BlobmountError as exc:
            failures.append(exc)  # the first says why the upload failed

    @staticmethod
    async def landed(remote: AsyncContainer, blob: str, tried: set[str]) -> bool:
        """Whether the blob is a commit of ours whose answer was lost."""
        try:
            names = [name for name, _ in await remote.block_list(blob)]
        except BlobmountError:
            return False
        return bool(names) and fingerprint(names) in tried

    async def rebase(self, path: Path, item: BlobItem) -> None:
        """An upload of the edit made version `item`, and the file may change again:
        what it sent unchanged since is that version's now, and so is everything else."""
        edit = self._edits.get(path)
        if edit is None:
            return
        await self._quiet(edit)
        old = edit.snapshot
        try:
            edit.snapshot = await edit.remote.snapshot(item.name, item.etag or "")
        except BlobmountError as exc:
            log.warning("%s/%s: no snapshot of the version just uploaded: %s",
                        edit.remote.label, item.name, exc)
            edit.snapshot = ""
        if old:
            await self._delete_snapshot(edit.remote, edit.blob, old)
        done = [start for start, writes in edit.sent.items() if edit.writes[start] == writes]
        edit.written.difference_update(done)
        self.store.drop_patch_blocks(str(path), done)
        edit.blob, edit.etag, edit.size, edit.sent = item.name, item.etag or "", item.size, {}
        if edit.file is not None:
            edit.file.blob, edit.file.etag, edit.file.size = edit.blob, edit.etag, edit.size
        self._save(edit)

    def moved(self, old: Path, new: Path) -> None:
        """The copy got another path (the conflict copy it became)."""
        edit = self._edits.pop(old, None)
        self.store.move_patch(str(old), str(new))
        if edit is not None:
            edit.path = new
            if edit.file is not None:
                edit.file.path, edit.file.key = new, str(new)
            self._edits[new] = edit

    def finished(self, path: Path, blob: str, etag: str) -> bool:
        """An upload made version `etag` of the copy and no writer is left: it becomes
        a partial copy of that version, holding the blocks it held that were not
        written (those are fetched again when read). False if the copy is no edit."""
        if self.store.patch(str(path)) is None:
            return False
        edit = self._edits.get(path)
        written = edit.written if edit is not None else self.store.patch_blocks(str(path))
        self.cache.record(path, blob=blob, etag=etag, size=0, state=CopyState.PARTIAL)
        self.store.drop_cached_blocks(str(path), written)
        self._retire(path)
        self.on_changed()
        return True

    def _save(self, edit: Edit) -> None:
        row = self.store.patch(str(edit.path))
        if row is not None:
            self.store.put_patch(edit.row(row.account, row.container))



