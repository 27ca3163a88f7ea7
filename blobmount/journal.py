"""The upload journal's table (`uploads`, see schema.sql), for `Store` (store.py).

A row is a written file whose upload is due: journaled durably (synchronous=FULL
around its commit) before close() returns, and dropped only once the container holds
the version it names.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass


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


_UPLOAD_COLUMNS = ("path, account, container, blob, base_etag, version, queued, attempts,"
                   " next_try, last_error, mtime_ns, metadata")


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

    def queue_uploads(self, rows: Sequence[Journaled]) -> list[int]:
        """Journal uploads durably, in one commit (fsynced before this returns); each
        one's version. A path already journaled gets its next version (a path twice
        in `rows`: two versions)."""
        self._db.execute("PRAGMA synchronous=FULL")
        try:
            with self._db:
                versions = [self._db.execute(
                    "INSERT INTO uploads (path, account, container, blob, base_etag, version,"
                    " queued, mtime_ns, metadata) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?)"
                    " ON CONFLICT (path) DO UPDATE SET version = version + 1, blob ="
                    " excluded.blob, next_try = 0, mtime_ns = excluded.mtime_ns,"
                    " metadata = excluded.metadata RETURNING version",
                    (row.path, row.account, row.container, row.blob, row.base_etag,
                     time.time(), row.mtime_ns, row.metadata),
                ).fetchone()[0] for row in rows]
        finally:
            self._db.execute("PRAGMA synchronous=NORMAL")
        return versions

    def upload(self, path: str) -> Upload | None:
        row = self._db.execute(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE path = ?", (path,)
        ).fetchone()
        return Upload(*row) if row else None

    def uploads(self, *, due_by: float | None = None) -> list[Upload]:
        """Journaled uploads, oldest first; only those due by `due_by` if given."""
        if due_by is None:
            rows = self._db.execute(f"SELECT {_UPLOAD_COLUMNS} FROM uploads ORDER BY queued")
        else:
            rows = self._db.execute(
                f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE next_try <= ? ORDER BY queued",
                (due_by,),
            )
        return [Upload(*row) for row in rows]

    def uploads_under(self, account: str, container: str, prefix: str) -> list[Upload]:
        """Journaled uploads of blobs whose names start with `prefix` in one container."""
        rows = self._db.execute(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE account = ? AND container = ?"
            " AND substr(blob, 1, ?) = ? ORDER BY blob",
            (account, container, len(prefix), prefix),
        )
        return [Upload(*row) for row in rows]

    def upload_done(self, path: str, version: int) -> bool:
        """Drop the row if no close came after the uploaded version; True if dropped."""
        with self._db:
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
        with self._db:
            self._db.execute("DELETE FROM uploads WHERE path = ?", (path,))
