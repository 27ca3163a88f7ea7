"""The upload journal's table (`uploads`, see schema.sql), for `Store` (store.py).

A row is a written file whose upload is due: journaled durably (synchronous=FULL
around its commit) before close() returns, and dropped only once the container holds
the version it names. A small file's row holds its bytes too (`data`): the commit
that makes the row durable makes them durable with it, where a larger file's copy is
fsynced first. The bytes stay until a sync of the cache's file system covers the copy
(copysync.py) or the upload is done: the copy then waits for that sync as a downloaded
one does, and a mount after a crash drops it. A mount after a crash makes the copy of
a row that still holds its bytes again from them (`Files.recover`).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .azure import FOLDER_MARKER_KEY
from .transaction import transaction


@dataclass(frozen=True, slots=True)
class Upload:
    """A row of the upload journal (see schema.sql)."""

    path: str
    account: str
    container: str
    blob: str
    base_etag: str
    version: int
    queued: float
    attempts: int
    next_try: float
    last_error: str | None
    mtime_ns: int | None = None
    metadata: str | None = None  # JSON: the mode and owner to keep with the bytes
    #: the row holds the file's bytes (a small file): its copy was not fsynced
    holds_bytes: bool = False

    @property
    def is_folder_marker(self) -> bool:
        """The row puts a folder's marker blob (a mkdir with `upload: async`): its
        empty copy stands for the folder, whose blob prefix is `blob` + '/'."""
        return self.metadata is not None and FOLDER_MARKER_KEY in json.loads(self.metadata)


@dataclass(frozen=True, slots=True)
class Journaled:
    """What a close journals: a written cache file and where its bytes go."""

    path: str
    account: str
    container: str
    blob: str
    base_etag: str
    mtime_ns: int | None = None
    metadata: str | None = None  # JSON: the mode and owner to keep with the bytes
    #: a small file's bytes, durable with the row in place of an fsync of its copy
    data: bytes | None = None
    #: only the metadata changed since the file was last journaled: the row keeps the
    #: bytes it holds (or none, if its copy was fsynced)
    same_bytes: bool = False


_UPLOAD_COLUMNS = ("path, account, container, blob, base_etag, version, queued, attempts,"
                   " next_try, last_error, mtime_ns, metadata, data IS NOT NULL")


def _upload(row: tuple[Any, ...]) -> Upload:
    """A row of _UPLOAD_COLUMNS; its last, `data IS NOT NULL`, is sqlite's 0 or 1."""
    (path, account, container, blob, base_etag, version, queued, attempts, next_try,
     last_error, mtime_ns, metadata, holds_bytes) = row
    return Upload(path, account, container, blob, base_etag, version, queued, attempts,
                  next_try, last_error, mtime_ns, metadata, bool(holds_bytes))


class UploadJournal:
    """The journal's queries (a mixin: the connection is Store's)."""

    _db: sqlite3.Connection

    def upload_paths(self) -> set[str]:
        """The cache files that have an upload in the journal."""
        return {row[0] for row in self._db.execute("SELECT path FROM uploads")}

    def queue_upload(self, path: str, *, account: str, container: str, blob: str,
                     base_etag: str, mtime_ns: int | None = None,
                     metadata: str | None = None) -> int:
        """Journal an upload durably (fsynced before this returns); its version."""
        return self.queue_uploads([Journaled(path, account, container, blob, base_etag,
                                             mtime_ns, metadata)])[0]

    def queue_uploads(self, rows: Sequence[Journaled], *, durable: bool = True) -> list[int]:
        """Journal uploads in one commit, fsynced before this returns (`durable`
        False: not fsynced; a process killed keeps it all the same, and the next
        durable commit makes it durable too, being later in the same write-ahead log);
        each one's version. A path already journaled gets its next version (a path
        twice in `rows`: two versions)."""
        if durable:
            self._db.execute("PRAGMA synchronous=FULL")
        try:
            with transaction(self._db):
                versions = [self._db.execute(
                    "INSERT INTO uploads (path, account, container, blob, base_etag, version,"
                    " queued, mtime_ns, metadata, data) VALUES (:path, :account, :container,"
                    " :blob, :base_etag, 1, :queued, :mtime_ns, :metadata, :data)"
                    " ON CONFLICT (path) DO UPDATE SET version = version + 1, blob ="
                    " excluded.blob, next_try = 0, mtime_ns = excluded.mtime_ns,"
                    " metadata = excluded.metadata,"
                    " data = CASE WHEN :same_bytes THEN data ELSE excluded.data END"
                    " RETURNING version",
                    {"path": row.path, "account": row.account, "container": row.container,
                     "blob": row.blob, "base_etag": row.base_etag, "queued": time.time(),
                     "mtime_ns": row.mtime_ns, "metadata": row.metadata, "data": row.data,
                     "same_bytes": row.same_bytes},
                ).fetchone()[0] for row in rows]
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")
        return versions

    def upload(self, path: str) -> Upload | None:
        row = self._db.execute(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE path = ?", (path,)
        ).fetchone()
        return _upload(row) if row else None

    def uploads(self, *, due_by: float | None = None) -> list[Upload]:
        """Journaled uploads, oldest first; only those due by `due_by` if given."""
        if due_by is None:
            rows = self._db.execute(f"SELECT {_UPLOAD_COLUMNS} FROM uploads ORDER BY queued")
        else:
            rows = self._db.execute(
                f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE next_try <= ? ORDER BY queued",
                (due_by,),
            )
        return [_upload(row) for row in rows]

    def uploads_under(self, account: str, container: str, prefix: str) -> list[Upload]:
        """Journaled uploads of blobs whose names start with `prefix` in one container."""
        rows = self._db.execute(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE account = ? AND container = ?"
            " AND substr(blob, 1, ?) = ? ORDER BY blob",
            (account, container, len(prefix), prefix),
        )
        return [_upload(row) for row in rows]

    def small_copies(self) -> list[tuple[str, bytes]]:
        """The rows that hold their file's bytes: (the copy's path, its bytes)."""
        return [(path, data) for path, data in self._db.execute(
            "SELECT path, data FROM uploads WHERE data IS NOT NULL")]

    def rows_holding_bytes(self) -> list[tuple[str, int]]:
        """(path, version) of the rows that hold their file's bytes."""
        return [(path, version) for path, version in self._db.execute(
            "SELECT path, version FROM uploads WHERE data IS NOT NULL")]

    def copies_synced(self, rows: Sequence[tuple[str, int]]) -> None:
        """These rows' copies are durable now (a sync of their file system began after
        they were journaled): the rows need not hold the bytes any more, unless a
        later close journaled them again."""
        with transaction(self._db):
            self._db.executemany(
                "UPDATE uploads SET data = NULL WHERE path = ? AND version = ?", rows)

    def upload_done(self, path: str, version: int) -> bool:
        """Drop the row if no close came after the uploaded version; True if dropped."""
        cursor = self._db.execute(
            "DELETE FROM uploads WHERE path = ? AND version = ?", (path, version)
        )
        return cursor.rowcount == 1

    def upload_failed(self, path: str, error: str, next_try: float) -> None:
        self._db.execute(
            "UPDATE uploads SET attempts = attempts + 1, last_error = ?, next_try = ?"
            " WHERE path = ?", (error, next_try, path),
        )

    def rebase_upload(self, path: str, base_etag: str) -> None:
        self._db.execute("UPDATE uploads SET base_etag = ? WHERE path = ?", (base_etag, path))

    def drop_upload(self, path: str) -> None:
        self._db.execute("DELETE FROM uploads WHERE path = ?", (path,))
