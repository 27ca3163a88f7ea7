"""The tables of edits by blocks (`patches`, `patch_blocks`, see schema.sql), for
`Store` (store.py): which large copies are being edited by blocks (patch.py), from
which snapshot, and which of their blocks were written here.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass

from .transaction import transaction


@dataclass(frozen=True, slots=True)
class Patch:
    """An edit of a large copy uploaded by blocks (see schema.sql)."""

    path: str
    account: str
    container: str
    blob: str
    etag: str
    size: int
    snapshot: str


class PatchTables:
    """The queries of edits by blocks (a mixin: the connection is Store's)."""

    _db: sqlite3.Connection
    #: the paths that have a row: almost no copy has one, and every write of a file
    #: asks whether its copy does (only these methods change the table)
    _patched: set[str]

    def _load_patched(self) -> None:
        self._patched = {row[0] for row in self._db.execute("SELECT path FROM patches")}

    def patch(self, path: str) -> Patch | None:
        if path not in self._patched:
            return None
        row = self._db.execute(
            "SELECT path, account, container, blob, etag, size, snapshot FROM patches"
            " WHERE path = ?", (path,)).fetchone()
        return Patch(*row) if row else None

    def patches(self) -> list[Patch]:
        return [Patch(*row) for row in self._db.execute(
            "SELECT path, account, container, blob, etag, size, snapshot FROM patches")]

    def put_patch(self, patch: Patch) -> None:
        """Record a patch (a new one, or its new base: its written blocks stay)."""
        self._db.execute(
            "INSERT OR REPLACE INTO patches (path, account, container, blob, etag, size,"
            " snapshot) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (patch.path, patch.account, patch.container, patch.blob, patch.etag,
             patch.size, patch.snapshot))
        self._patched.add(patch.path)

    def drop_patch(self, path: str) -> None:
        with transaction(self._db):
            self._db.execute("DELETE FROM patch_blocks WHERE path = ?", (path,))
            self._db.execute("DELETE FROM patches WHERE path = ?", (path,))
        self._patched.discard(path)

    def patch_blocks(self, path: str) -> set[int]:
        return {row[0] for row in self._db.execute(
            "SELECT start FROM patch_blocks WHERE path = ?", (path,))}

    def add_patch_blocks(self, path: str, starts: Iterable[int]) -> None:
        with transaction(self._db):
            self._db.executemany(
                "INSERT OR IGNORE INTO patch_blocks (path, start) VALUES (?, ?)",
                [(path, start) for start in starts])

    def drop_patch_blocks(self, path: str, starts: Iterable[int]) -> None:
        with transaction(self._db):
            self._db.executemany("DELETE FROM patch_blocks WHERE path = ? AND start = ?",
                                 [(path, start) for start in starts])

    def move_patch(self, old: str, new: str) -> None:
        """A patch's copy got another path (a conflict copy): its rows and blocks follow."""
        with transaction(self._db):
            self._db.execute("UPDATE patches SET path = ? WHERE path = ?", (new, old))
            self._db.execute("UPDATE patch_blocks SET path = ? WHERE path = ?", (new, old))
            self._db.execute("UPDATE cached_blocks SET path = ? WHERE path = ?", (new, old))
        if old in self._patched:
            self._patched.remove(old)
            self._patched.add(new)
