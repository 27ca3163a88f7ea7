"""The tables of cached copies (`cached_files`, `cached_blocks`, see schema.sql), for
`Store` (store.py): each copy's version, size, state and last use, and the blocks of
partial copies (blocks.py) with their CRC-32s.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .patchtables import Patch
from .transaction import transaction


class CopyState(StrEnum):
    """What a cached copy holds (`cached_files.state`)."""

    CLEAN = "clean"      # the whole bytes of the version `etag`
    PARTIAL = "partial"  # some blocks of that version (blocks.py; an edit's, patch.py)
    DIRTY = "dirty"      # written here: a change the container does not have yet


@dataclass(frozen=True, slots=True)
class CachedFile:
    path: str
    blob: str
    etag: str
    size: int
    state: CopyState
    last_access: float

    @classmethod
    def of_row(cls, row: tuple[Any, ...]) -> CachedFile:
        path, blob, etag, size, state, last_access = row
        return cls(path, blob, etag, size, CopyState(state), last_access)


@dataclass(frozen=True, slots=True)
class CachedBlock:
    """One block of a partial copy (see schema.sql)."""

    path: str
    start: int
    size: int
    crc32: int
    last_access: float


class CacheTables:
    """The queries of cached copies (a mixin: the connection is Store's)."""

    _db: sqlite3.Connection
    #: PatchTables': the edit by blocks of a copy, if one is under way
    patch: Callable[[str], Patch | None]

    def cached_file(self, path: str) -> CachedFile | None:
        row = self._db.execute(
            "SELECT path, blob, etag, size, state, last_access FROM cached_files"
            " WHERE path = ?", (path,)
        ).fetchone()
        return CachedFile.of_row(row) if row else None

    def put_cached_file(self, path: str, *, blob: str, etag: str, size: int,
                        state: CopyState = CopyState.CLEAN, synced: bool = True) -> None:
        """Record a copy. Blocks of an earlier record go unless it stays partial (its
        ETag changed with the same bytes: utimens), or it is a patch's (patch.py).
        `synced` False: its bytes were never fsynced (`unsynced_copies`)."""
        with transaction(self._db):
            if not synced:
                self._db.execute("INSERT OR REPLACE INTO unsynced_copies (path) VALUES (?)",
                                 (path,))
            if state != CopyState.PARTIAL and not (state == CopyState.DIRTY and self.patch(path)):
                self._db.execute("DELETE FROM cached_blocks WHERE path = ?", (path,))
            self._db.execute(
                "INSERT OR REPLACE INTO cached_files (path, blob, etag, size, state,"
                " last_access) VALUES (?, ?, ?, ?, ?, ?)",
                (path, blob, etag, size, state, time.time()),
            )
            if state == CopyState.PARTIAL:  # its size is what its blocks hold
                self._db.execute(
                    "UPDATE cached_files SET size = (SELECT COALESCE(SUM(size), 0)"
                    " FROM cached_blocks WHERE path = ?) WHERE path = ?", (path, path))

    def touch_cached_file(self, path: str) -> None:
        self._db.execute(
            "UPDATE cached_files SET last_access = ? WHERE path = ?", (time.time(), path)
        )

    def uncommitted_files(self) -> list[str]:
        """Cached copies changed here whose change was never journaled (by a close or an
        fsync) before the daemon stopped."""
        return [row[0] for row in self._db.execute(
            "SELECT path FROM cached_files WHERE state = 'dirty'"
            " AND path NOT IN (SELECT path FROM uploads)")]

    def drop_cached_file(self, path: str) -> None:
        with transaction(self._db):
            self._db.execute("DELETE FROM cached_blocks WHERE path = ?", (path,))
            self._db.execute("DELETE FROM cached_files WHERE path = ?", (path,))
            self._db.execute("DELETE FROM unsynced_copies WHERE path = ?", (path,))

    # -- copies never fsynced (see schema.sql) ------------------------------------

    def unsynced_copies(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT path FROM unsynced_copies")]

    def unsynced_mark(self) -> int:
        """Where the table ends now: rows up to it are synced by a sync begun after."""
        return int(self._db.execute(
            "SELECT COALESCE(MAX(rowid), 0) FROM unsynced_copies").fetchone()[0])

    def synced_to(self, mark: int) -> None:
        """A sync of the file system that began after `unsynced_mark()` gave `mark` has
        ended: those copies are durable (one recorded again since has a later row)."""
        self._db.execute("DELETE FROM unsynced_copies WHERE rowid <= ?", (mark,))

    def link_unsynced(self, path: str, new_path: str) -> None:
        """`new_path` names the same bytes as `path` now: unsynced if those are."""
        self._db.execute(
            "INSERT OR REPLACE INTO unsynced_copies (path) SELECT ? WHERE EXISTS"
            " (SELECT 1 FROM unsynced_copies WHERE path = ?)", (new_path, path))

    def cached_blocks_in(self, path: str, first: int, last: int) -> dict[int, int]:
        """The blocks of a partial copy starting in [first, last]: start -> CRC-32."""
        return dict(self._db.execute(
            "SELECT start, crc32 FROM cached_blocks WHERE path = ? AND start BETWEEN ? AND ?",
            (path, first, last)).fetchall())

    def add_cached_blocks(self, path: str, blocks: Iterable[tuple[int, int, int]]) -> None:
        """Record blocks (start, size, crc32) of the partial copy at `path`; its record's
        size grows by the bytes they add."""
        blocks = list(blocks)
        now = time.time()
        with transaction(self._db):
            replaced = self._block_bytes(path, [start for start, _, _ in blocks])
            self._db.executemany(
                "INSERT OR REPLACE INTO cached_blocks (path, start, size, crc32, last_access)"
                " VALUES (?, ?, ?, ?, ?)",
                [(path, start, size, crc32, now) for start, size, crc32 in blocks])
            self._grow(path, sum(size for _, size, _ in blocks) - replaced)

    def drop_cached_blocks(self, path: str, starts: Collection[int]) -> None:
        """Forget blocks of the partial copy at `path`, in one commit (eviction drops
        hundreds at a time); its record's size shrinks by their bytes."""
        with transaction(self._db):
            dropped = self._block_bytes(path, starts)
            self._db.executemany("DELETE FROM cached_blocks WHERE path = ? AND start = ?",
                                 [(path, start) for start in starts])
            self._grow(path, -dropped)

    def _block_bytes(self, path: str, starts: Collection[int]) -> int:
        """The bytes the copy's blocks at these starts hold now (0 for those it lacks):
        one range scan, not a sum over the whole file (a partial copy of 100 GiB has
        800,000 blocks)."""
        if not starts:
            return 0
        wanted = set(starts)
        rows = self._db.execute(
            "SELECT start, size FROM cached_blocks WHERE path = ? AND start BETWEEN ? AND ?",
            (path, min(wanted), max(wanted)))
        return sum(size for start, size in rows if start in wanted)

    def _grow(self, path: str, delta: int) -> None:
        self._db.execute("UPDATE cached_files SET size = size + ?, last_access = ?"
                         " WHERE path = ?", (delta, time.time(), path))

    def touch_cached_blocks(self, path: str, first: int, last: int) -> None:
        self._db.execute(
            "UPDATE cached_blocks SET last_access = ? WHERE path = ? AND start BETWEEN ? AND ?",
            (time.time(), path, first, last))

    def cached_blocks(self, under: str) -> list[CachedBlock]:
        """The blocks of partial copies whose path starts with `under`, oldest use first."""
        rows = self._db.execute(
            "SELECT path, start, size, crc32, last_access FROM cached_blocks"
            " WHERE substr(path, 1, ?) = ? ORDER BY last_access", (len(under), under))
        return [CachedBlock(*row) for row in rows]

    def set_cache_state(self, path: str, state: str) -> None:
        if state == CopyState.CLEAN and self.patch(path) is not None:
            state = CopyState.PARTIAL  # an edit's copy (patch.py) holds only some blocks
        self._db.execute("UPDATE cached_files SET state = ? WHERE path = ?", (state, path))

    def cached_bytes(self, under: str | None = None) -> int:
        """Bytes of cached files, all of them or those whose path starts with `under`."""
        if under is None:
            row = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM cached_files").fetchone()
        else:
            row = self._db.execute(
                "SELECT COALESCE(SUM(size), 0) FROM cached_files WHERE substr(path, 1, ?) = ?",
                (len(under), under),
            ).fetchone()
        return int(row[0])

    def cached_files(self, under: str | None = None, *,
                     state: CopyState | None = None) -> list[CachedFile]:
        """Every cached file, or those whose path starts with `under` (and in `state`),
        oldest use first."""
        if under is None:
            rows = self._db.execute(
                "SELECT path, blob, etag, size, state, last_access FROM cached_files"
                " ORDER BY last_access")
        else:
            rows = self._db.execute(
                "SELECT path, blob, etag, size, state, last_access FROM cached_files"
                " WHERE substr(path, 1, ?) = ? AND (? IS NULL OR state = ?)"
                " ORDER BY last_access", (len(under), under, state, state))
        return [CachedFile.of_row(row) for row in rows]
