"""The store's schema: a database of an earlier blobmount brought to this one's, step
by step (schema.sql makes what is missing), and one of a later blobmount refused."""

from __future__ import annotations

import sqlite3
from importlib import resources
from pathlib import Path

from .decide import BLOCK
from .errors import StoreError
from .transaction import statements, transaction

SCHEMA_VERSION = 8
#: The block size (decide.BLOCK) of stores that do not record theirs.
EARLIER_BLOCK = 512 * 1024


def migrate(db: sqlite3.Connection, path: Path) -> None:
    """Bring the database to SCHEMA_VERSION, step by step; refuse a newer one."""
    version = _schema_version(db)
    if version is not None and version > SCHEMA_VERSION:
        db.close()
        raise StoreError(f"{path} was written by a newer blobmount (schema {version});"
                         " upgrade blobmount or use another cache_dir")
    with transaction(db):
        if version == 1:
            # 1 -> 2: files written here and not uploaded yet (the write path).
            db.execute("ALTER TABLE nodes ADD COLUMN local INTEGER NOT NULL DEFAULT 0")
        if version == 2:
            # 2 -> 3: the file's mtime goes up with it as blob metadata. (Version 1
            # had no uploads table: schema.sql below makes it whole.)
            db.execute("ALTER TABLE uploads ADD COLUMN mtime_ns INTEGER")
        if version in (4, 5):
            # 5 -> 6 (and from 4, whose step to 5 adds no column): modes, owners,
            # symlinks and special nodes (kept as blob metadata); the upload journal
            # keeps the metadata to put with the bytes.
            db.execute("ALTER TABLE nodes ADD COLUMN mode INTEGER")
            db.execute("ALTER TABLE nodes ADD COLUMN uid INTEGER")
            db.execute("ALTER TABLE nodes ADD COLUMN gid INTEGER")
            db.execute("ALTER TABLE nodes ADD COLUMN atime_ns INTEGER")
            db.execute(
                "ALTER TABLE nodes ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0")
            db.execute(
                "ALTER TABLE nodes ADD COLUMN is_link INTEGER NOT NULL DEFAULT 0")
            db.execute("ALTER TABLE nodes ADD COLUMN link TEXT")
            db.execute(
                "ALTER TABLE nodes ADD COLUMN special INTEGER NOT NULL DEFAULT 0")
            db.execute("ALTER TABLE nodes ADD COLUMN rdev INTEGER NOT NULL DEFAULT 0")
        if version in (2, 3, 4, 5):
            db.execute("ALTER TABLE uploads ADD COLUMN metadata TEXT")
        if version is not None and 2 <= version <= 7:
            # 7 -> 8: a small file's row holds its bytes (journal.py).
            db.execute("ALTER TABLE uploads ADD COLUMN data BLOB")
        if version is not None and version < 4:
            # 3 -> 4: inode numbers are never reused (AUTOINCREMENT). The tree is
            # made anew at every mount, so the old table simply goes.
            db.execute("DROP TABLE IF EXISTS nodes")
        # 4 -> 5: cached_blocks, the blocks of partial copies; schema.sql below makes
        # the table (nothing older changes, so this step needs no statement).
        # 6 -> 7: patches and patch_blocks, edits of large copies uploaded by
        # blocks; made by schema.sql the same way.
        schema = resources.files("blobmount").joinpath("schema.sql").read_text()
        for statement in statements(schema):
            db.execute(statement)
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
            (SCHEMA_VERSION,),
        )
        _resize_blocks(db)

def _resize_blocks(db: sqlite3.Connection) -> None:
    """Blocks recorded at another BLOCK size (an earlier blobmount's; one with no
    record used 512 KiB) become blocks of this one. An edit's written blocks become
    every new block they overlap (so all their bytes are sent); a cached block
    larger than BLOCK becomes the blocks it holds, with no CRC-32 they could match
    (so each is fetched again before use); smaller ones go (fetched again)."""
    row = db.execute("SELECT value FROM meta WHERE key = 'block_size'").fetchone()
    old = int(row[0]) if row else EARLIER_BLOCK
    if old != BLOCK:
        written = db.execute("SELECT path, start FROM patch_blocks").fetchall()
        db.execute("DELETE FROM patch_blocks")
        db.executemany(
            "INSERT OR IGNORE INTO patch_blocks (path, start) VALUES (?, ?)",
            [(path, new) for path, start in written
             for new in range(start - start % BLOCK, start + old, BLOCK)])
        cached = db.execute(
            "SELECT path, start, size, last_access FROM cached_blocks").fetchall()
        db.execute("DELETE FROM cached_blocks")
        if old > BLOCK:
            db.executemany(
                "INSERT INTO cached_blocks (path, start, size, crc32, last_access)"
                " VALUES (?, ?, ?, -1, ?)",
                [(path, new, min(BLOCK, start + size - new), used)
                 for path, start, size, used in cached
                 for new in range(start, start + size, BLOCK)])
        db.execute(
            "UPDATE cached_files SET size = (SELECT COALESCE(SUM(size), 0) FROM"
            " cached_blocks WHERE cached_blocks.path = cached_files.path)"
            " WHERE state = 'partial'")
        db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('block_size', ?)", (BLOCK,))

def _schema_version(db: sqlite3.Connection) -> int | None:
    has_meta = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if not has_meta:
        return None
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else None
